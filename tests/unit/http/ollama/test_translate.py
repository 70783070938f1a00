"""Ollama <-> OpenAI translation, table by table (pure functions, no server)."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from modelrunner.http.ollama.shapes import (
    OllamaChatRequest,
    OllamaGenerateRequest,
    OllamaMessage,
)
from modelrunner.http.ollama.translate import (
    BadRequest,
    OllamaStream,
    chat_answer,
    chat_messages,
    chat_request,
    embed_answer,
    generate_answer,
    generate_request,
    response_format,
    sampling,
    tool_calls,
)


@pytest.mark.parametrize(
    ("options", "fields", "warnings"),
    [
        (None, {}, []),
        ({"temperature": 0.2, "top_p": 0.9, "top_k": 40, "seed": 7},
         {"temperature": 0.2, "top_p": 0.9, "top_k": 40, "seed": 7}, []),
        ({"num_predict": 12}, {"max_tokens": 12}, []),
        ({"num_predict": -1}, {}, []),
        ({"num_predict": -2}, {}, []),
        ({"stop": "\n"}, {"stop": ["\n"]}, []),
        ({"stop": ["a", "b"]}, {"stop": ["a", "b"]}, []),
        ({"repeat_penalty": 1.1, "min_p": 0.05}, {"repeat_penalty": 1.1, "min_p": 0.05}, []),
        ({"num_ctx": 8192}, {}, ["option num_ctx is ignored: the context size is the manifest's"]),
        ({"mirostat": 2, "num_thread": 4, "temperature": 0},
         {"temperature": 0}, ["options ignored: mirostat, num_thread"]),
    ],
)  # fmt: skip
def test_sampling_options(
    options: dict[str, Any] | None, fields: dict[str, Any], warnings: list[str]
) -> None:
    assert sampling(options) == (fields, warnings)


@pytest.mark.parametrize(
    "options", [{"temperature": "hot"}, {"top_k": 1.5}, {"seed": "x"}, {"stop": 3}]
)
def test_sampling_refuses_wrong_types(options: dict[str, Any]) -> None:
    with pytest.raises(BadRequest) as caught:
        sampling(options)
    assert caught.value.field == "options"
    assert next(iter(options)) in str(caught.value)


@pytest.mark.parametrize(
    ("fmt", "expected"),
    [
        (None, None),
        ("", None),
        ("json", {"type": "json_object"}),
        ({"type": "object", "properties": {"a": {"type": "integer"}}},
         {"type": "json_schema", "json_schema": {"name": "answer", "schema": {
             "type": "object", "properties": {"a": {"type": "integer"}}}}}),
    ],
)  # fmt: skip
def test_response_format(fmt: Any, expected: Any) -> None:
    assert response_format(fmt) == expected


def test_response_format_refuses_other_strings() -> None:
    with pytest.raises(BadRequest, match="format"):
        response_format("yaml")


def test_tool_round_trip_messages_get_ids_in_order() -> None:
    messages = [
        OllamaMessage(role="user", content="weather in Paris and Rome?"),
        OllamaMessage(
            role="assistant",
            tool_calls=[
                {"function": {"name": "weather", "arguments": {"city": "Paris"}}},
                {"function": {"name": "weather", "arguments": {"city": "Rome"}}},
            ],
        ),
        OllamaMessage(role="tool", content="sunny", tool_name="weather"),
        OllamaMessage(role="tool", content="rain"),
    ]
    out = chat_messages(messages)
    assert out[1]["tool_calls"] == [
        {"id": "call_0", "type": "function",
         "function": {"name": "weather", "arguments": '{"city":"Paris"}'}},
        {"id": "call_1", "type": "function",
         "function": {"name": "weather", "arguments": '{"city":"Rome"}'}},
    ]  # fmt: skip
    assert out[2] == {
        "role": "tool",
        "content": "sunny",
        "tool_call_id": "call_0",
        "name": "weather",
    }
    assert out[3] == {"role": "tool", "content": "rain", "tool_call_id": "call_1"}


@pytest.mark.parametrize(
    ("message", "field"),
    [
        (OllamaMessage(role="user", content="x", images=["aGk="]), "messages[0].images"),
        (OllamaMessage(role="assistant", tool_calls=[{"function": {}}]), "messages[0].tool_calls"),
    ],
)
def test_messages_refused(message: OllamaMessage, field: str) -> None:
    with pytest.raises(BadRequest) as caught:
        chat_messages([message])
    assert caught.value.field == field


def test_chat_request_maps_everything() -> None:
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    req = OllamaChatRequest(
        model="m",
        messages=[OllamaMessage(role="user", content="hi")],
        tools=tools,
        format="json",
        options={"temperature": 0, "num_predict": 5},
    )
    body, warnings = chat_request(req)
    assert body == {
        "temperature": 0,
        "max_tokens": 5,
        "messages": [{"role": "user", "content": "hi"}],
        "tools": tools,
        "response_format": {"type": "json_object"},
    }
    assert warnings == []


@pytest.mark.parametrize(
    ("req", "op", "body"),
    [
        (OllamaGenerateRequest(model="m", prompt="hi"), "chat/completions",
         {"messages": [{"role": "user", "content": "hi"}]}),
        (OllamaGenerateRequest(model="m", prompt="hi", system="be brief"), "chat/completions",
         {"messages": [{"role": "system", "content": "be brief"},
                       {"role": "user", "content": "hi"}]}),
        (OllamaGenerateRequest(model="m", prompt="Once", raw=True, options={"num_predict": 3}),
         "completions", {"max_tokens": 3, "prompt": "Once"}),
        (OllamaGenerateRequest(model="m", prompt="hi", format={"type": "object"}),
         "chat/completions", {"messages": [{"role": "user", "content": "hi"}],
                              "response_format": {"type": "json_schema", "json_schema": {
                                  "name": "answer", "schema": {"type": "object"}}}}),
    ],
)  # fmt: skip
def test_generate_request(req: OllamaGenerateRequest, op: str, body: dict[str, Any]) -> None:
    assert generate_request(req)[:2] == (op, body)


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"images": ["aGk="]}, "images"),
        ({"suffix": "end"}, "suffix"),
        ({"template": "{{ .Prompt }}"}, "template"),
        ({"context": [1, 2, 3]}, "context"),
        ({"raw": True, "format": "json"}, "format"),
    ],
)
def test_generate_refused(fields: dict[str, Any], field: str) -> None:
    req = msgspec.convert({"model": "m", "prompt": "hi", **fields}, OllamaGenerateRequest)
    with pytest.raises(BadRequest) as caught:
        generate_request(req)
    assert caught.value.field == field


def test_tool_calls_arguments_become_objects() -> None:
    calls = [
        {"id": "c", "function": {"name": "f", "arguments": '{"a": 1}'}},
        {"id": "d", "function": {"name": "g", "arguments": "not json"}},
        {"id": "e", "function": {"name": "h", "arguments": "[1]"}},
    ]
    assert tool_calls(calls) == [
        {"function": {"name": "f", "arguments": {"a": 1}}},
        {"function": {"name": "g", "arguments": {"arguments": "not json"}}},
        {"function": {"name": "h", "arguments": {"value": [1]}}},
    ]


def _chat(content: str | None, finish: str, **message: Any) -> dict[str, Any]:
    return {
        "choices": [{"message": {"role": "assistant", "content": content, **message},
                     "finish_reason": finish}],
        "usage": {"prompt_tokens": 9, "completion_tokens": 4},
    }  # fmt: skip


def test_chat_answer() -> None:
    out = chat_answer(_chat("Hello", "length"), "m", started=10.0, now=10.5)
    assert out["message"] == {"role": "assistant", "content": "Hello"}
    assert (out["done"], out["done_reason"], out["model"]) == (True, "length", "m")
    assert (out["prompt_eval_count"], out["eval_count"]) == (9, 4)
    assert out["total_duration"] == 500_000_000
    assert out["created_at"].endswith("Z")


def test_chat_answer_with_tool_calls() -> None:
    call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": '{"x":2}'}}
    out = chat_answer(_chat(None, "tool_calls", tool_calls=[call]), "m", 0.0, 1.0)
    assert out["message"] == {
        "role": "assistant",
        "content": "",
        "tool_calls": [{"function": {"name": "f", "arguments": {"x": 2}}}],
    }
    assert out["done_reason"] == "stop"


def test_generate_answer_from_chat_and_completion() -> None:
    assert generate_answer(_chat("Hi", "stop"), "m", 0.0, 1.0)["response"] == "Hi"
    completion = {"choices": [{"text": " there", "finish_reason": "length"}]}
    out = generate_answer(completion, "m", 0.0, 1.0)
    assert (out["response"], out["done_reason"], out["eval_count"]) == (" there", "length", 0)


def _delta(**delta: Any) -> dict[str, Any]:
    return {"choices": [{"index": 0, "delta": delta, "finish_reason": None}]}


def test_stream_chat_text_then_done() -> None:
    translate = OllamaStream("chat", "m", started=0.0)
    lines = []
    lines += translate.feed(_delta(role="assistant", content=""), 0.1)
    lines += translate.feed(_delta(content="Hel"), 0.2)
    lines += translate.feed(_delta(content="lo"), 0.3)
    lines += translate.feed(
        {"choices": [{"index": 0, "delta": {}, "finish_reason": "length"}]}, 0.4
    )
    lines += translate.feed(
        {"choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 2}}, 0.4
    )
    lines += translate.finish(0.5)
    assert [line["message"]["content"] for line in lines] == ["Hel", "lo", ""]
    assert [line["done"] for line in lines] == [False, False, True]
    final = lines[-1]
    assert final["done_reason"] == "length"
    assert (final["prompt_eval_count"], final["eval_count"]) == (5, 2)
    assert final["prompt_eval_duration"] == 200_000_000  # until the first token
    assert final["eval_duration"] == 300_000_000


def test_stream_counts_tokens_when_the_engine_reports_no_usage() -> None:
    translate = OllamaStream("generate", "m", started=0.0)
    lines = translate.feed({"choices": [{"text": "a"}]}, 0.1)
    lines += translate.feed({"choices": [{"text": "b"}]}, 0.2)
    lines += translate.finish(0.3)
    assert [line["response"] for line in lines] == ["a", "b", ""]
    assert lines[-1]["eval_count"] == 2 and lines[-1]["prompt_eval_count"] == 0


def test_stream_tool_call_pieces_are_sent_whole_at_the_end() -> None:
    translate = OllamaStream("chat", "m", started=0.0)
    pieces = [
        {"index": 0, "id": "c", "type": "function", "function": {"name": "get", "arguments": ""}},
        {"index": 0, "function": {"arguments": '{"ci'}},
        {"index": 0, "function": {"arguments": 'ty": "Rome"}'}},
    ]
    lines = []
    for piece in pieces:
        lines += translate.feed(_delta(tool_calls=[piece]), 0.1)
    assert lines == []
    lines = translate.finish(0.2)
    assert lines[0]["message"]["tool_calls"] == [
        {"function": {"name": "get", "arguments": {"city": "Rome"}}}
    ]
    assert lines[1]["done"] is True


def test_embed_answer_keeps_input_order() -> None:
    answer = {
        "data": [{"index": 1, "embedding": [0.2]}, {"index": 0, "embedding": [0.1]}],
        "usage": {"prompt_tokens": 3},
    }
    out = embed_answer(answer, "m", 0.0, 0.25)
    assert out["embeddings"] == [[0.1], [0.2]]
    assert (out["prompt_eval_count"], out["total_duration"]) == (3, 250_000_000)
