"""Generated text -> message or stream deltas: a stream, however the text is cut into pieces,
adds up (as the OpenAI client accumulates it) to the same answer as the whole message."""

from __future__ import annotations

import json
from typing import Any

import pytest

from modelrunner.engines.llamacpp.structured.formats import ToolFormat
from modelrunner.engines.llamacpp.structured.output import TextShaper
from modelrunner.engines.llamacpp.structured.tools import NO_TOOLS, ToolRequest, read_tools

TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}},
    {"type": "function", "function": {"name": "get_time"}},
]


def request(**fields: Any) -> ToolRequest:
    return read_tools({"tools": TOOLS, **fields})


def numbered(fmt: ToolFormat) -> str:
    return "id0"


def accumulate(deltas: list[dict[str, Any]]) -> dict[str, Any]:
    """What the OpenAI SDK's stream helpers build from the deltas."""
    content, calls, legacy = "", {}, {"name": "", "arguments": ""}
    for delta in deltas:
        content += delta.get("content") or ""
        for call in delta.get("tool_calls", []):
            slot = calls.setdefault(call["index"], {"id": None, "name": "", "arguments": ""})
            slot["id"] = call.get("id") or slot["id"]
            slot["name"] += call.get("function", {}).get("name", "")
            slot["arguments"] += call.get("function", {}).get("arguments", "")
        if "function_call" in delta:
            legacy["name"] += delta["function_call"].get("name", "")
            legacy["arguments"] += delta["function_call"].get("arguments", "")
    return {"content": content, "calls": [calls[i] for i in sorted(calls)], "legacy": legacy}


def streamed(
    output: TextShaper, text: str, size: int, finish: str = "stop"
) -> tuple[dict[str, Any], str, list[dict[str, Any]]]:
    stream = output.stream()
    deltas: list[dict[str, Any]] = []
    for at in range(0, len(text), size):
        deltas += stream.feed(text[at : at + size])
    last, reason = stream.finish(finish)
    deltas += last
    return accumulate(deltas), reason, deltas


TEXTS: list[tuple[ToolFormat, str]] = [
    ("hermes", "Hello there, no tools."),
    (
        "hermes",
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>',
    ),
    (
        "hermes",
        'Checking <tool_call>{"name": "get_weather", "arguments": {"city": "Oslo"}}</tool_call>'
        ' and <tool_call>{"name": "get_time", "arguments": {}}</tool_call> done',
    ),
    ("hermes", '<tool_call>{"name": "unknown_fn", "arguments": {}}</tool_call>'),
    ("hermes", "a < b, and <tool_ca is not a call"),
    ("hermes", '<tool_call>{"name": "get_weather", "arguments": {"city"'),
    ("llama3", '{"name": "get_weather", "parameters": {"city": "Paris"}}'),
    ("llama3", '  <|python_tag|>{"name": "get_time", "parameters": {}}'),
    ("llama3", "Sunny, {with braces} later."),
    ("mistral", 'Ok [TOOL_CALLS][{"name": "get_weather", "arguments": {"city": "Rome"}}]'),
    ("mistral", "[TOOL_CALLS]get_time[ARGS]{}"),
    ("mistral", "[TOOL_CALLS broken"),
]


@pytest.mark.parametrize(("fmt", "text"), TEXTS)
@pytest.mark.parametrize("size", [1, 3, 1000])
def test_stream_adds_up_to_the_message(fmt: ToolFormat, text: str, size: int) -> None:
    output = TextShaper(request(), fmt, numbered)
    message, reason = output.message(text, "stop")
    got, stream_reason, _ = streamed(output, text, size)
    assert stream_reason == reason
    calls = [
        {"id": c["id"], "name": c["function"]["name"], "arguments": c["function"]["arguments"]}
        for c in message.get("tool_calls", [])
    ]
    assert got["calls"] == calls
    if calls:
        assert got["content"].strip() == (message["content"] or "")
    else:
        assert got["content"] == text == message["content"]


def test_call_message_shape() -> None:
    text = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
    message, reason = TextShaper(request(), "hermes").message(text, "stop")
    assert reason == "tool_calls"
    (call,) = message["tool_calls"]
    assert call["type"] == "function" and call["id"].startswith("call_") and len(call["id"]) == 29
    assert call["function"] == {"name": "get_weather", "arguments": '{"city": "Paris"}'}
    assert message["content"] is None and message["refusal"] is None


def test_stream_sends_name_first_then_arguments() -> None:
    text = '<tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}</tool_call>'
    _, reason, deltas = streamed(TextShaper(request(), "hermes", numbered), text, 4)
    assert reason == "tool_calls"
    assert deltas == [
        {
            "tool_calls": [
                {
                    "index": 0,
                    "id": "id0",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": ""},
                }
            ]
        },
        {"tool_calls": [{"index": 0, "function": {"arguments": '{"city": "Paris"}'}}]},
    ]


def test_content_streams_before_the_call_completes() -> None:
    stream = TextShaper(request(), "hermes").stream()
    assert stream.feed("Hello ") == [{"content": "Hello "}]
    assert stream.feed("<tool") == []  # may be a call: held back
    assert stream.feed("box>") == [{"content": "<toolbox>"}]


def test_unparsed_call_keeps_finish_reason_length() -> None:
    text = '<tool_call>{"name": "get_weather", "arguments": {"ci'
    output = TextShaper(request(), "hermes")
    assert output.message(text, "length") == (
        {"role": "assistant", "content": text, "refusal": None},
        "length",
    )
    got, reason, _ = streamed(output, text, 5, "length")
    assert reason == "length" and got["content"] == text and got["calls"] == []


def test_parallel_false_keeps_the_first_call() -> None:
    text = (
        '<tool_call>{"name": "get_weather", "arguments": {}}</tool_call>'
        '<tool_call>{"name": "get_time", "arguments": {}}</tool_call>'
    )
    output = TextShaper(request(parallel_tool_calls=False), "hermes", numbered)
    message, _ = output.message(text, "stop")
    assert [c["function"]["name"] for c in message["tool_calls"]] == ["get_weather"]
    got, _, _ = streamed(output, text, 7)
    assert [c["name"] for c in got["calls"]] == ["get_weather"]


def test_legacy_functions_answer_with_function_call() -> None:
    legacy = read_tools({"functions": [{"name": "get_weather", "parameters": {"type": "object"}}]})
    text = '<tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}</tool_call>'
    output = TextShaper(legacy, "hermes")
    message, reason = output.message(text, "stop")
    assert reason == "function_call" and "tool_calls" not in message
    assert message["function_call"] == {"name": "get_weather", "arguments": '{"city": "Paris"}'}
    got, reason, _ = streamed(output, text, 6)
    assert reason == "function_call"
    assert got["legacy"] == message["function_call"]


def test_without_tools_everything_is_content() -> None:
    text = '<tool_call>{"name": "get_weather", "arguments": {}}</tool_call>'
    output = TextShaper(NO_TOOLS, "hermes")
    assert output.message(text, "stop")[0]["content"] == text
    assert streamed(output, text, 2)[0]["content"] == text
    none = TextShaper(request(tool_choice="none"), "hermes")
    assert none.message(text, "stop")[1] == "stop"


def test_mistral_ids_are_nine_alphanumerics() -> None:
    message, _ = TextShaper(request(), "mistral").message("[TOOL_CALLS]get_time[ARGS]{}", "stop")
    call_id = message["tool_calls"][0]["id"]
    assert len(call_id) == 9 and call_id.isalnum()
    assert json.loads(message["tool_calls"][0]["function"]["arguments"]) == {}


FORCED_TEXTS: list[tuple[ToolFormat, str]] = [
    (
        "hermes",
        '<tool_call>\n{"name": "get_weather", "arguments": '
        '{"city": "Par}is \\" {", "n": [1, {"a": 2}]} }\n</tool_call>',
    ),
    (
        "hermes",
        '<tool_call>\n{"name": "get_time", "arguments": {}}\n</tool_call>\n'
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n</tool_call>',
    ),
    (
        "mistral",
        '[TOOL_CALLS][{"name": "get_weather", "arguments": {"city": "Rome"}}, '
        '{"name": "get_time", "arguments": {}}]',
    ),
    ("llama3", '{"name": "get_weather", "parameters": {"city": "Lima"}}'),
]


@pytest.mark.parametrize(("fmt", "text"), FORCED_TEXTS)
@pytest.mark.parametrize("size", [1, 4, 1000])
def test_forced_calls_stream_their_arguments_as_they_come(
    fmt: ToolFormat, text: str, size: int
) -> None:
    output = TextShaper(request(tool_choice="required"), fmt, numbered)
    message, reason = output.message(text, "stop")
    got, stream_reason, deltas = streamed(output, text, size)
    assert stream_reason == reason == "tool_calls"
    assert [c["name"] for c in got["calls"]] == [
        c["function"]["name"] for c in message["tool_calls"]
    ]
    for streamed_call, call in zip(got["calls"], message["tool_calls"], strict=True):
        assert json.loads(streamed_call["arguments"]) == json.loads(call["function"]["arguments"])
    fragments = [d for d in deltas if "id" not in d["tool_calls"][0]]
    if size == 1:
        assert len(fragments) > 2 * len(got["calls"])  # arguments arrived in many pieces
    assert got["content"] == ""


def test_forced_call_cut_short_keeps_length() -> None:
    output = TextShaper(request(tool_choice="required"), "hermes", numbered)
    got, reason, _ = streamed(
        output, '<tool_call>\n{"name": "get_weather", "arguments": {"ci', 3, "length"
    )
    assert reason == "length"
    assert got["calls"][0]["name"] == "get_weather"


def test_forced_legacy_function_call_streams() -> None:
    legacy = read_tools(
        {"functions": [{"name": "get_weather"}], "function_call": {"name": "get_weather"}}
    )
    text = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n</tool_call>'
    got, reason, _ = streamed(TextShaper(legacy, "hermes"), text, 2)
    assert reason == "function_call"
    assert got["legacy"]["name"] == "get_weather"
    assert json.loads(got["legacy"]["arguments"]) == {"city": "Oslo"}
