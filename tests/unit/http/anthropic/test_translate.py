"""Anthropic Messages <-> OpenAI chat translation, table by table (pure, no server)."""

from __future__ import annotations

import itertools
from typing import Any

import msgspec
import pytest

from modelrunner.http.anthropic.shapes import CountTokensRequest, MessagesRequest
from modelrunner.http.anthropic.translate import (
    AnthropicStream,
    InvalidMessages,
    chat_request,
    count_request,
    error_type,
    input_tokens,
    message_answer,
    stop_reason,
)


def _request(**fields: Any) -> MessagesRequest:
    document = {"model": "m", "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]}
    return msgspec.convert({**document, **fields}, MessagesRequest)


def _ids() -> Any:
    counter = itertools.count()
    return lambda prefix: f"{prefix}_{next(counter)}"


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({}, {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 16}),
        ({"system": "be brief", "stop_sequences": ["END"], "temperature": 0.5, "top_p": 0.9,
          "top_k": 20},
         {"messages": [{"role": "system", "content": "be brief"},
                       {"role": "user", "content": "hi"}],
          "max_tokens": 16, "stop": ["END"], "temperature": 0.5, "top_p": 0.9, "top_k": 20}),
        ({"system": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
         {"messages": [{"role": "system", "content": "a\nb"}, {"role": "user", "content": "hi"}],
          "max_tokens": 16}),
        ({"messages": [{"role": "user", "content": [{"type": "text", "text": "x"},
                                                    {"type": "text", "text": "y"}]}]},
         {"messages": [{"role": "user", "content": "x\ny"}], "max_tokens": 16}),
    ],
)  # fmt: skip
def test_chat_request(fields: dict[str, Any], expected: dict[str, Any]) -> None:
    assert chat_request(_request(**fields)) == expected


def test_tool_use_round_trip_request() -> None:
    req = _request(
        messages=[
            {"role": "user", "content": "Weather in Rome?"},
            {"role": "assistant", "content": [
                {"type": "text", "text": "Let me look."},
                {"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {"city": "Rome"}},
            ]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1",
                 "content": [{"type": "text", "text": "sunny"}]},
                {"type": "tool_result", "tool_use_id": "toolu_2", "content": "boom",
                 "is_error": True},
                {"type": "text", "text": "Thanks"},
            ]},
        ],
        tools=[{"name": "weather", "description": "Weather now",
                "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}],
        tool_choice={"type": "tool", "name": "weather", "disable_parallel_tool_use": True},
    )  # fmt: skip
    body = chat_request(req)
    assert body["messages"] == [
        {"role": "user", "content": "Weather in Rome?"},
        {"role": "assistant", "content": "Let me look.", "tool_calls": [
            {"id": "toolu_1", "type": "function",
             "function": {"name": "weather", "arguments": '{"city":"Rome"}'}}]},
        {"role": "tool", "tool_call_id": "toolu_1", "content": "sunny"},
        {"role": "tool", "tool_call_id": "toolu_2", "content": "Error: boom"},
        {"role": "user", "content": "Thanks"},
    ]  # fmt: skip
    assert body["tools"] == [
        {"type": "function", "function": {
            "name": "weather", "description": "Weather now",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}
    ]  # fmt: skip
    assert body["tool_choice"] == {"type": "function", "function": {"name": "weather"}}
    assert body["parallel_tool_calls"] is False


TOOLS = [{"name": "f", "input_schema": {"type": "object"}}]


@pytest.mark.parametrize(
    ("choice", "expected"),
    [({"type": "auto"}, "auto"), ({"type": "any"}, "required"), ({"type": "none"}, "none")],
)
def test_tool_choice(choice: dict[str, Any], expected: str) -> None:
    assert chat_request(_request(tools=TOOLS, tool_choice=choice))["tool_choice"] == expected


@pytest.mark.parametrize(("disable", "parallel"), [(True, False), (False, True), (None, None)])
def test_disable_parallel_tool_use(disable: bool | None, parallel: bool | None) -> None:
    choice: dict[str, Any] = {"type": "any"}
    if disable is not None:
        choice["disable_parallel_tool_use"] = disable
    body = chat_request(_request(tools=TOOLS, tool_choice=choice))
    assert body["tool_choice"] == "required"
    assert body.get("parallel_tool_calls") == parallel


@pytest.mark.parametrize(
    ("fields", "where"),
    [
        ({"messages": [{"role": "user", "content": [{"type": "image", "source": {}}]}]},
         "messages[0].content[0]: image"),
        ({"messages": [{"role": "user", "content": [{"type": "document", "source": {}}]}]},
         "messages[0].content[0]: document"),
        ({"messages": [{"role": "user", "content": [{"type": "video"}]}]},
         "messages[0].content[0]: unsupported content block type 'video'"),
        ({"messages": [{"role": "user", "content": [{"type": "tool_result"}]}]},
         "messages[0].content[0].tool_use_id"),
        ({"messages": [{"role": "assistant", "content": [{"type": "tool_use", "input": {}}]}]},
         "messages[0].content[0]: a tool_use block needs id and name"),
        ({"system": [{"type": "image"}]}, "system[0]"),
        ({"tools": TOOLS, "tool_choice": {"type": "tool"}}, "tool_choice.name"),
        ({"tool_choice": {"type": "any"}}, "tool_choice: requires tools"),
        ({"tools": TOOLS, "tool_choice": {"type": "tool", "name": "g"}},
         "tool_choice.name: 'g' is not among the tools (f)"),
        ({"tools": [{"name": "web", "type": "web_search_20250305", "input_schema": {}}]},
         "tools[0].type"),
    ],
)  # fmt: skip
def test_refused(fields: dict[str, Any], where: str) -> None:
    with pytest.raises(InvalidMessages, match=r"^" + where.replace("[", r"\[").replace("]", r"\]")
                       .replace("(", r"\(").replace(")", r"\)")):  # fmt: skip
        chat_request(_request(**fields))


def test_thinking_blocks_are_skipped() -> None:
    req = _request(messages=[{"role": "assistant", "content": [
        {"type": "thinking", "thinking": "hmm", "signature": "s"},
        {"type": "text", "text": "ok"}]}])  # fmt: skip
    assert chat_request(req)["messages"] == [{"role": "assistant", "content": "ok"}]


def test_count_request_is_a_chat_tokenize() -> None:
    req = msgspec.convert(
        {"model": "m", "system": "s", "messages": [{"role": "user", "content": "hi"}]},
        CountTokensRequest,
    )
    assert count_request(req) == {
        "messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "hi"}],
        "add_generation_prompt": True,
    }
    assert input_tokens({"count": 12, "max_model_len": 1024, "tokens": [1] * 12}) == 12
    assert input_tokens({}) == 0


@pytest.mark.parametrize(
    ("finish", "tools", "reason"),
    [("stop", False, "end_turn"), ("length", False, "max_tokens"),
     ("tool_calls", False, "tool_use"), ("stop", True, "tool_use"), (None, False, "end_turn"),
     ("length", True, "max_tokens")],
)  # fmt: skip
def test_stop_reason(finish: Any, tools: bool, reason: str) -> None:
    assert stop_reason(finish, tools) == reason


def test_message_answer_text_and_tool_use() -> None:
    answer = {
        "choices": [{"finish_reason": "tool_calls", "message": {
            "role": "assistant", "content": "Calling.",
            "tool_calls": [{"id": "call_9", "type": "function",
                            "function": {"name": "f", "arguments": '{"a": [1]}'}}]}}],
        "usage": {"prompt_tokens": 20, "completion_tokens": 7},
    }  # fmt: skip
    assert message_answer(answer, "m", _ids()) == {
        "id": "msg_0",
        "type": "message",
        "role": "assistant",
        "model": "m",
        "content": [
            {"type": "text", "text": "Calling."},
            {"type": "tool_use", "id": "call_9", "name": "f", "input": {"a": [1]}},
        ],
        "stop_reason": "tool_use",
        "stop_sequence": None,
        "usage": {"input_tokens": 20, "output_tokens": 7},
    }


@pytest.mark.parametrize(
    ("finish", "matched", "reason", "sequence"),
    [
        ("stop", "END", "stop_sequence", "END"),  # the engine says which stop string
        ("stop", None, "end_turn", None),  # the model ended on its own
        ("stop", 2, "end_turn", None),  # vLLM's stop token id: not a stop sequence
        ("length", "END", "max_tokens", None),
    ],
)
def test_the_engines_stop_reason_becomes_stop_sequence(
    finish: str, matched: Any, reason: str, sequence: str | None
) -> None:
    choice = {"message": {"content": "x"}, "finish_reason": finish, "stop_reason": matched}
    answer = message_answer({"choices": [choice]}, "m", _ids())
    assert (answer["stop_reason"], answer["stop_sequence"]) == (reason, sequence)


def _chunk(finish: Any = None, usage: Any = None, **delta: Any) -> dict[str, Any]:
    chunk: dict[str, Any] = {"choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
    if usage:
        chunk = {"choices": [], "usage": usage}
    return chunk


def _events(chunks: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    translate = AnthropicStream("m", _ids())
    events = translate.start()
    for chunk in chunks:
        events += translate.feed(chunk)
    return events + translate.finish()


def test_stream_text() -> None:
    events = _events([
        _chunk(role="assistant", content=""), _chunk(content="Hel"), _chunk(content="lo"),
        _chunk(finish="stop"), _chunk(usage={"prompt_tokens": 4, "completion_tokens": 2}),
    ])  # fmt: skip
    assert [name for name, _ in events] == [
        "message_start", "content_block_start", "content_block_delta", "content_block_delta",
        "content_block_stop", "message_delta", "message_stop",
    ]  # fmt: skip
    assert events[0][1]["message"]["id"] == "msg_0"
    assert events[1][1] == {"type": "content_block_start", "index": 0,
                            "content_block": {"type": "text", "text": ""}}  # fmt: skip
    assert events[3][1]["delta"] == {"type": "text_delta", "text": "lo"}
    assert events[5][1] == {"type": "message_delta",
                            "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                            "usage": {"input_tokens": 4, "output_tokens": 2}}  # fmt: skip


def test_stream_text_then_two_tool_calls() -> None:
    events = _events([
        _chunk(content="Sure."),
        _chunk(tool_calls=[{"index": 0, "id": "c0", "function": {"name": "f", "arguments": ""}}]),
        _chunk(tool_calls=[{"index": 0, "function": {"arguments": '{"a":'}}]),
        _chunk(tool_calls=[{"index": 0, "function": {"arguments": "1}"}}]),
        _chunk(tool_calls=[{"index": 1, "id": "c1", "function": {"name": "g", "arguments": "{}"}}]),
        _chunk(finish="tool_calls"),
    ])  # fmt: skip
    shapes = [(name, data.get("index")) for name, data in events]
    assert shapes == [
        ("message_start", None),
        ("content_block_start", 0), ("content_block_delta", 0), ("content_block_stop", 0),
        ("content_block_start", 1), ("content_block_delta", 1), ("content_block_delta", 1),
        ("content_block_stop", 1),
        ("content_block_start", 2), ("content_block_delta", 2), ("content_block_stop", 2),
        ("message_delta", None), ("message_stop", None),
    ]  # fmt: skip
    assert events[4][1]["content_block"] == {
        "type": "tool_use",
        "id": "c0",
        "name": "f",
        "input": {},
    }
    partial = "".join(
        d["delta"]["partial_json"]
        for n, d in events
        if d.get("index") == 1 and n == "content_block_delta"
    )
    assert partial == '{"a":1}'
    assert events[-2][1]["delta"]["stop_reason"] == "tool_use"
    assert events[-2][1]["usage"] == {"input_tokens": 0, "output_tokens": 4}  # counted


@pytest.mark.parametrize(
    ("status", "kind"),
    [(400, "invalid_request_error"), (401, "authentication_error"), (404, "not_found_error"),
     (413, "request_too_large"), (502, "api_error"), (503, "overloaded_error"),
     (409, "invalid_request_error")],
)  # fmt: skip
def test_error_type(status: int, kind: str) -> None:
    assert error_type(status) == kind
