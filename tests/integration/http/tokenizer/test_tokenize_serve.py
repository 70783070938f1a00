"""POST /tokenize and /detokenize through a real `mr serve` on SmolLM2 (llama.cpp engine),
in vLLM's request and answer shapes: a round trip under every path prefix, the chat
template's tokens, and the errors (unknown model, bad bodies)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.fixtures.serve import Server

pytestmark = pytest.mark.engine
TEXT = "The quick brown fox jumps over the lazy dog."
PREFIXES = ("", "/v1", "/engines/v1", "/engines/llama.cpp", "/engines/llama.cpp/v1")


def post(server: Server, path: str, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(server.url + path, json=body, headers=server.auth, timeout=60)


def tokenize(server: Server, **body: Any) -> dict[str, Any]:
    answer = post(server, "/tokenize", {"model": "smol", **body})
    assert answer.status_code == 200, answer.text
    found: dict[str, Any] = answer.json()
    return found


def test_round_trip_under_every_prefix(smol_server: Server) -> None:
    for prefix in PREFIXES:
        answer = post(smol_server, f"{prefix}/tokenize", {"model": "smol", "prompt": TEXT})
        assert answer.status_code == 200, (prefix, answer.text)
        found = answer.json()
        assert set(found) == {"count", "max_model_len", "tokens", "token_strs"}
        assert found["count"] == len(found["tokens"]) > 5
        assert found["max_model_len"] == 1024  # the manifest's context_size
        assert found["token_strs"] is None
        back = post(
            smol_server, f"{prefix}/detokenize", {"model": "smol", "tokens": found["tokens"]}
        )
        assert back.status_code == 200, (prefix, back.text)
        assert back.json() == {"prompt": TEXT}
    strs = tokenize(smol_server, prompt=TEXT, return_token_strs=True)["token_strs"]
    assert "".join(strs) == TEXT


def test_the_chat_template_adds_tokens(smol_server: Server) -> None:
    plain = tokenize(smol_server, prompt=TEXT)
    messages = [{"role": "user", "content": TEXT}]
    chat = tokenize(smol_server, messages=messages)
    bare = tokenize(smol_server, messages=messages, add_generation_prompt=False)
    assert chat["count"] > bare["count"] > plain["count"]
    body = {"model": "smol", "tokens": chat["tokens"]}
    text = post(smol_server, "/detokenize", body).json()["prompt"]
    # SmolLM2's template: a default system turn, the user's turn, then the assistant's.
    assert f"<|im_start|>user\n{TEXT}<|im_end|>" in text
    assert text.endswith("<|im_start|>assistant\n")
    body = {"model": "smol", "tokens": bare["tokens"]}
    assert not post(smol_server, "/detokenize", body).json()["prompt"].endswith("assistant\n")


@pytest.mark.parametrize(
    ("path", "body", "status", "param"),
    [
        ("/tokenize", {"model": "nope", "prompt": "x"}, 404, "model"),
        ("/tokenize", {"model": "smol"}, 400, "prompt"),
        ("/tokenize", {"model": "smol", "prompt": "x", "messages": []}, 400, "messages"),
        ("/tokenize", {"model": "smol", "prompt": 3}, 400, "prompt"),
        ("/tokenize", {"prompt": "x"}, 400, "model"),
        ("/tokenize", {"model": "smol", "prompt": "x", "tools": []}, 400, "tools"),
        ("/detokenize", {"model": "smol", "tokens": [-1]}, 400, "tokens[0]"),
        ("/detokenize", {"model": "smol", "tokens": [5, 10**9]}, 400, "tokens[1]"),
        ("/detokenize", {"model": "smol"}, 400, "tokens"),
    ],
)
def test_errors_name_the_field(
    smol_server: Server, path: str, body: dict[str, Any], status: int, param: str
) -> None:
    answer = post(smol_server, path, body)
    assert answer.status_code == status, answer.text
    error = answer.json()["error"]
    assert error["param"] == param
    if status == 404:
        assert error["code"] == "model_not_found"
