"""The request inspector records the translated routes: a streamed Ollama chat (the official
`ollama` client) and a streamed Anthropic message (the `anthropic` SDK) against `mr serve`
(keys on) on SmolLM2, both reassembled in ``GET /engines/requests``, never with the key."""

from __future__ import annotations

import json
from typing import Any

import anthropic
import httpx
import ollama
import pytest

from tests.fixtures.serve import Server

pytestmark = [pytest.mark.engine]
PROMPT = [{"role": "user", "content": "Name three colours."}]


def records(server: Server, url: str) -> list[dict[str, Any]]:
    answer = httpx.get(
        f"{server.url}/engines/requests", params={"model": "smol"}, headers=server.auth
    )
    assert answer.status_code == 200, answer.text
    groups = answer.json()
    assert [g["model"] for g in groups] == ["smol"]
    return [r for r in groups[0]["records"] if r["url"] == url]


def test_streamed_ollama_chat_and_anthropic_message_are_recorded(smol_server: Server) -> None:
    chat = ollama.Client(host=smol_server.url, headers=smol_server.auth, timeout=120)
    parts = list(chat.chat(model="smol", messages=PROMPT, stream=True, options={"num_predict": 12}))
    said = "".join(part.message.content or "" for part in parts)
    messages = anthropic.Anthropic(
        base_url=smol_server.url + "/anthropic", api_key=smol_server.api_key, max_retries=0
    )
    with messages.messages.stream(model="smol", max_tokens=12, messages=PROMPT) as stream:
        text = "".join(stream.text_stream)
        message = stream.get_final_message()

    ollama_record = records(smol_server, "/api/chat")[-1]
    assert (ollama_record["method"], ollama_record["status_code"]) == ("POST", 200)
    assert ollama_record["stream"] and ollama_record["complete"]
    assert ollama_record["duration_ms"] > 0 and ollama_record["user_agent"].startswith("ollama")
    assert json.loads(ollama_record["request"])["messages"] == PROMPT
    answer = json.loads(ollama_record["response"])
    assert answer["done"] and answer["done_reason"] == parts[-1].done_reason
    assert answer["message"] == {"role": "assistant", "content": said}
    assert answer["eval_count"] == parts[-1].eval_count

    anthropic_record = records(smol_server, "/anthropic/v1/messages")[-1]
    assert (anthropic_record["status_code"], anthropic_record["stream"]) == (200, True)
    assert anthropic_record["complete"] and json.loads(anthropic_record["request"])["stream"]
    recorded = json.loads(anthropic_record["response"])
    assert recorded["id"] == message.id and recorded["type"] == "message"
    assert recorded["content"] == [{"type": "text", "text": text}]
    assert recorded["stop_reason"] == message.stop_reason
    assert recorded["usage"]["output_tokens"] == message.usage.output_tokens

    everything = httpx.get(f"{smol_server.url}/engines/requests", headers=smol_server.auth).text
    assert smol_server.api_key and smol_server.api_key not in everything
    assert "authorization" not in everything.lower() and "x-api-key" not in everything.lower()


@pytest.mark.parametrize(
    ("url", "body", "status"),
    [
        # refused by the translation on the short way (the route raises before answering)
        ("/api/generate", {"model": "smol", "prompt": "x", "images": ["aGk="]}, 400),
        # refused by the body's validation on Litestar's way (its handler answers)
        ("/v1/messages", {"model": "smol", "messages": PROMPT}, 400),
    ],
)
def test_refused_requests_are_recorded_with_their_error(
    smol_server: Server, url: str, body: dict[str, Any], status: int
) -> None:
    answer = httpx.post(smol_server.url + url, json=body, headers=smol_server.auth, timeout=60)
    assert answer.status_code == status, answer.text
    last = records(smol_server, url)[-1]
    assert json.loads(last["request"]) == body
    assert (last["status_code"], last["response"]) == (status, None)
    assert json.loads(last["error"]) == answer.json()


def test_count_tokens_is_recorded_with_its_input_tokens(smol_server: Server) -> None:
    client = anthropic.Anthropic(
        base_url=smol_server.url + "/anthropic", api_key=smol_server.api_key, max_retries=0
    )
    counted = client.messages.count_tokens(model="smol", messages=PROMPT)
    message = client.messages.create(model="smol", max_tokens=4, messages=PROMPT)

    record = records(smol_server, "/anthropic/v1/messages/count_tokens")[-1]
    assert (record["method"], record["status_code"], record["stream"]) == ("POST", 200, False)
    assert record["complete"] and record["duration_ms"] > 0
    assert json.loads(record["request"])["messages"] == PROMPT
    assert json.loads(record["response"]) == {"input_tokens": counted.input_tokens}
    assert record["input_tokens"] == counted.input_tokens
    # The message call shows the same count, from its answer's usage.
    assert records(smol_server, "/anthropic/v1/messages")[-1]["input_tokens"] == (
        message.usage.input_tokens
    )
    # mr requests shows it on the pair's first line.
    from modelrunner.cli.requests import format_record

    head = format_record("smol", record)[0]
    assert "/anthropic/v1/messages/count_tokens  200" in head
    assert f"{counted.input_tokens} tokens in" in head
