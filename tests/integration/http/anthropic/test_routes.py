"""Anthropic Messages end to end: the official `anthropic` SDK -> `mr serve` (keys on, sent
as x-api-key) -> the llama.cpp engine on SmolLM2, under every path prefix."""

from __future__ import annotations

from typing import Any

import anthropic
import httpx
import pytest

from tests.fixtures.serve import Server

pytestmark = [pytest.mark.engine]
PREFIXES = ("/anthropic", "", "/engines", "/engines/llama.cpp")
# This SDK version no longer names the sampling fields; the API takes them (extra_body).
GREEDY = {"temperature": 0}
MESSAGES: list[Any] = [{"role": "user", "content": "Name three colours."}]
SERVER_EVENTS = {"message_start", "content_block_start", "content_block_delta",
                 "content_block_stop", "message_delta", "message_stop"}  # fmt: skip
WEATHER = {
    "name": "get_weather",
    "description": "The current weather in a city",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
}


def sdk(server: Server, prefix: str = "/anthropic", key: str | None = None) -> anthropic.Anthropic:
    return anthropic.Anthropic(
        base_url=server.url + prefix, api_key=key or server.api_key, max_retries=0, timeout=120
    )


def openai_text(server: Server) -> str:
    """The same request through mr's OpenAI route. Asked twice: llama.cpp reuses the cached
    prompt of the previous request, which can shift a greedy choice against a cold
    evaluation, so the second answer is the repeatable one."""
    for _ in range(2):
        answer = server.client(max_retries=0).chat.completions.create(
            model="smol", messages=MESSAGES, extra_body=GREEDY, max_tokens=12,
            stop=["\n\n\n"], top_p=1.0,
        )  # fmt: skip
    return answer.choices[0].message.content or ""


@pytest.mark.parametrize("prefix", PREFIXES)
def test_create_matches_the_openai_route(smol_server: Server, prefix: str) -> None:
    expected = openai_text(smol_server)
    message = sdk(smol_server, prefix).messages.create(
        model="smol", max_tokens=12, messages=MESSAGES, stop_sequences=["\n\n\n"],
        extra_body={"temperature": 0, "top_p": 1.0},
    )  # fmt: skip
    assert message.type == "message" and message.role == "assistant"
    assert message.content[0].type == "text"
    assert expected and message.content[0].text == expected
    assert message.stop_reason in ("end_turn", "max_tokens")
    assert message.usage.input_tokens > 5
    assert 0 < message.usage.output_tokens <= 12


def test_a_matched_stop_sequence_is_named_plain_and_streamed(smol_server: Server) -> None:
    client = sdk(smol_server)
    # Two stop sequences; a three-colour answer has a space well before 40 tokens.
    asked = {"model": "smol", "max_tokens": 40, "messages": MESSAGES,
             "stop_sequences": [" ", "never-in-the-answer"], "extra_body": GREEDY}  # fmt: skip
    message = client.messages.create(**asked)
    assert (message.stop_reason, message.stop_sequence) == ("stop_sequence", " ")
    assert " " not in message.content[0].text  # cut before it
    with client.messages.stream(**asked) as stream:
        streamed = stream.get_final_message()
    assert (streamed.stop_reason, streamed.stop_sequence) == ("stop_sequence", " ")
    # Without a match: no stop_sequence.
    plain = client.messages.create(**{**asked, "stop_sequences": ["never-in-the-answer"]})
    assert plain.stop_sequence is None and plain.stop_reason in ("end_turn", "max_tokens")


def test_system_prompt_and_count_tokens(smol_server: Server) -> None:
    client = sdk(smol_server)
    system = "You are a pirate. Answer only with 'Arr'."
    plain = client.messages.create(
        model="smol", max_tokens=12, messages=MESSAGES, extra_body=GREEDY
    )
    pirate = client.messages.create(
        model="smol", max_tokens=12, messages=MESSAGES, extra_body=GREEDY, system=system
    )
    # SmolLM2's template puts a default system prompt in when none is given: counts differ.
    assert pirate.usage.input_tokens != plain.usage.input_tokens
    assert pirate.content[0] != plain.content[0]
    counted = client.messages.count_tokens(model="smol", messages=MESSAGES, system=system)
    assert counted.input_tokens == pirate.usage.input_tokens
    counted = client.messages.count_tokens(model="smol", messages=MESSAGES)
    assert counted.input_tokens == plain.usage.input_tokens


def test_stream_event_sequence(smol_server: Server) -> None:
    client = sdk(smol_server, "")
    for _ in range(2):  # the second answer is the repeatable one (see openai_text)
        whole = client.messages.create(
            model="smol", max_tokens=12, messages=MESSAGES, extra_body=GREEDY
        )
    with client.messages.stream(
        model="smol", max_tokens=12, messages=MESSAGES, extra_body=GREEDY
    ) as stream:
        # The SDK adds events of its own ("text", ...) to the server's.
        kinds = [event.type for event in stream if event.type in SERVER_EVENTS]
        final = stream.get_final_message()
    assert kinds[0] == "message_start" and kinds[-1] == "message_stop"
    assert kinds[1] == "content_block_start" and kinds[-2] == "message_delta"
    assert kinds.count("content_block_delta") >= 2, "streamed piece by piece"
    assert final.content[0].type == "text"
    assert final.content[0].text == whole.content[0].text
    assert final.stop_reason == whole.stop_reason
    assert final.usage.output_tokens > 0


def test_tool_use_round_trip_with_forced_tool(smol_server: Server) -> None:
    client = sdk(smol_server)
    question: list[Any] = [{"role": "user", "content": "What is the weather in Paris?"}]
    first = client.messages.create(
        model="smol", max_tokens=60, messages=question, extra_body=GREEDY,
        tools=[WEATHER], tool_choice={"type": "tool", "name": "get_weather"},
    )  # fmt: skip
    assert first.stop_reason == "tool_use"
    calls = [block for block in first.content if block.type == "tool_use"]
    assert len(calls) == 1 and calls[0].name == "get_weather"
    assert isinstance(calls[0].input, dict) and "city" in calls[0].input

    second = client.messages.create(
        model="smol", max_tokens=20, extra_body=GREEDY, tools=[WEATHER],
        messages=[
            *question,
            {"role": "assistant", "content": [block.model_dump() for block in first.content]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": calls[0].id,
                                          "content": "Sunny, 21 degrees"}]},
        ],
    )  # fmt: skip
    assert second.content and second.content[0].type == "text"
    assert second.usage.input_tokens > first.usage.input_tokens


def test_keys(smol_server: Server) -> None:
    with pytest.raises(anthropic.AuthenticationError) as caught:
        sdk(smol_server, key="wrong").messages.create(model="smol", max_tokens=1, messages=MESSAGES)
    assert caught.value.status_code == 401
    assert caught.value.body["error"]["type"] == "authentication_error"  # type: ignore[index]
    # A Bearer key works too.
    answer = httpx.post(
        f"{smol_server.url}/v1/messages/count_tokens",
        headers=smol_server.auth,
        json={"model": "smol", "messages": MESSAGES},
        timeout=60,
    )
    assert answer.status_code == 200 and answer.json()["input_tokens"] > 5


@pytest.mark.parametrize(
    ("path", "body", "status", "kind", "says"),
    [
        ("/v1/messages", {"model": "smol", "messages": MESSAGES}, 400,
         "invalid_request_error", "max_tokens"),
        ("/v1/messages", {"model": "nope", "max_tokens": 4, "messages": MESSAGES}, 404,
         "not_found_error", "'nope' does not exist"),
        ("/v1/messages", {"model": "smol", "max_tokens": 4, "messages": [
            {"role": "user", "content": [{"type": "image", "source": {}}]}]}, 400,
         "invalid_request_error", "messages[0].content[0]: image"),
        ("/v1/messages", {"model": "smol", "max_tokens": 4, "messages": MESSAGES,
                          "temperature": 3}, 400, "invalid_request_error", "temperature"),
        ("/engines/vllm/v1/messages", {"model": "smol", "max_tokens": 4, "messages": MESSAGES},
         404, "not_found_error", "llama.cpp engine"),
        ("/engines/nope/v1/messages", {"model": "smol", "max_tokens": 4, "messages": MESSAGES},
         404, "not_found_error", "Unknown engine"),
        ("/anthropic/v1/messages/count_tokens", {"model": "smol"}, 400,
         "invalid_request_error", "messages"),
        ("/anthropic/v1/messages", {"model": "smol", "max_tokens": 4, "messages": MESSAGES,
                                    "tool_choice": {"type": "any"}}, 400,
         "invalid_request_error", "requires tools"),
    ],
)  # fmt: skip
def test_errors_in_anthropics_shape(
    smol_server: Server, path: str, body: dict[str, Any], status: int, kind: str, says: str
) -> None:
    answer = httpx.post(smol_server.url + path, headers=smol_server.auth, json=body, timeout=60)
    assert answer.status_code == status, answer.text
    error = answer.json()
    assert error["type"] == "error" and error["error"]["type"] == kind
    assert says in error["error"]["message"]


def test_wrong_method_in_anthropics_shape(smol_server: Server) -> None:
    wrong = httpx.get(f"{smol_server.url}/anthropic/v1/messages", headers=smol_server.auth)
    assert wrong.status_code == 405
    assert wrong.json()["type"] == "error"
    assert wrong.json()["error"]["type"] == "invalid_request_error"


MARKUP = ("<tool_call>", "tool_call>", "[TOOL_CALLS]", "<|python_tag|>")


def tight(name: str, description: str, field: str) -> dict[str, Any]:
    """A tool whose input a grammar keeps short: one bounded string, nothing else."""
    schema = {"type": "object", "properties": {field: {"type": "string", "maxLength": 20}},
              "required": [field], "additionalProperties": False}  # fmt: skip
    return {"name": name, "description": description, "input_schema": schema}


TIGHT = [tight("get_weather", "The current weather in a city", "city"),
         tight("get_time", "The current time in a time zone", "zone")]  # fmt: skip


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
@pytest.mark.parametrize(
    ("choice", "names"),
    [
        ({"type": "any"}, {"get_weather", "get_time"}),
        ({"type": "any", "disable_parallel_tool_use": True}, {"get_weather", "get_time"}),
        ({"type": "tool", "name": "get_time"}, {"get_time"}),
        ({"type": "tool", "name": "get_weather", "disable_parallel_tool_use": True},
         {"get_weather"}),
        ({"type": "auto"}, {"get_weather", "get_time"}),
        ({"type": "none"}, set()),
    ],
)  # fmt: skip
def test_tool_choice(
    smol_server: Server, choice: dict[str, Any], names: set[str], stream: bool
) -> None:
    question = [{"role": "user", "content": "What is the weather in Paris?"}]
    asked: Any = {"model": "smol", "max_tokens": 120, "tools": TIGHT,
                  "tool_choice": choice, "extra_body": GREEDY, "messages": question}  # fmt: skip
    client = sdk(smol_server)
    if stream:
        with client.messages.stream(**asked) as events:
            message = events.get_final_message()
    else:
        message = client.messages.create(**asked)
    calls = [block for block in message.content if block.type == "tool_use"]
    texts = [block.text for block in message.content if block.type == "text"]
    assert not any(marker in text for text in texts for marker in MARKUP), texts
    assert {call.name for call in calls} <= names
    if choice["type"] in ("any", "tool"):
        assert calls and all(isinstance(call.input, dict) for call in calls), message
        # max_tokens: a further call was cut (and dropped) beside the complete ones.
        assert message.stop_reason in ("tool_use", "max_tokens"), message
    if choice.get("disable_parallel_tool_use"):
        assert len(calls) == 1 and message.stop_reason == "tool_use", message
    if choice["type"] == "none":
        assert not calls and message.stop_reason in ("end_turn", "max_tokens")


@pytest.mark.parametrize(
    ("choice", "says"),
    [
        ({"type": "bogus"}, "tool_choice"),
        ("any", "tool_choice"),
        ({"type": "tool"}, "tool_choice.name"),
        ({"type": "tool", "name": "nope"}, "tool_choice.name: 'nope' is not among the tools"),
        ({"type": "any", "disable_parallel_tool_use": "yes"}, "disable_parallel_tool_use"),
    ],
)
def test_a_bad_tool_choice_is_a_400_naming_the_field(
    smol_server: Server, choice: Any, says: str
) -> None:
    with pytest.raises(anthropic.BadRequestError) as caught:
        sdk(smol_server).messages.create(
            model="smol", max_tokens=8, messages=MESSAGES, tools=[WEATHER], tool_choice=choice
        )
    error: Any = caught.value.body
    assert error["type"] == "error" and error["error"]["type"] == "invalid_request_error"
    assert says in error["error"]["message"], error
