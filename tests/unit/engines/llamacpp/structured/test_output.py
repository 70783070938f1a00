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
    (
        "hermes",
        '<tool_call>{"name": "get_time", "arguments": {}}<tool_call>{"name": "get_weather", '
        '"arguments": {}}</tool_call>',
    ),
    ("hermes", "<tool_call>"),
    ("hermes", "Hi <tool_c"),
    ("llama3", '{"name": "get_weather", "parameters": {"city": "Paris"}}'),
    ("llama3", '  <|python_tag|>{"name": "get_time", "parameters": {}}'),
    ("llama3", "Sunny, {with braces} later."),
    ("llama3", 'Checking. <|python_tag|>{"name": "get_time", "parameters": {}}'),
    ("llama3", '{"name": "get_weather", "parameters": {"ci'),
    ("llama3", '{"city": "Paris"}'),
    ("mistral", 'Ok [TOOL_CALLS][{"name": "get_weather", "arguments": {"city": "Rome"}}]'),
    ("mistral", "[TOOL_CALLS]get_time[ARGS]{}"),
    ("mistral", "[TOOL_CALLS broken"),
    ("mistral", '[TOOL_CALLS][{"name": "get_time", "arguments": {}}, {"name": "get_weather", "a'),
]
MARKUP = ("<tool_call>", "</tool_call>", "[TOOL_CALLS]", "<|python_tag|>")


@pytest.mark.parametrize(("fmt", "text"), TEXTS)
@pytest.mark.parametrize("size", [1, 3, 1000])
@pytest.mark.parametrize("finish", ["stop", "length"])
def test_stream_adds_up_to_the_message(fmt: ToolFormat, text: str, size: int, finish: str) -> None:
    output = TextShaper(request(), fmt, numbered)
    message, reason = output.message(text, finish)
    got, stream_reason, _ = streamed(output, text, size, finish)
    assert stream_reason == reason
    calls = [
        {"id": c["id"], "name": c["function"]["name"], "arguments": c["function"]["arguments"]}
        for c in message.get("tool_calls", [])
    ]
    assert got["calls"] == calls
    assert got["content"].strip() == (message["content"] or "").strip()
    if not any(marker[:3] in text for marker in MARKUP) and not text.startswith("{"):
        assert got["content"] == text == message["content"]  # a plain answer, byte for byte
    for shown in (got["content"], message["content"] or ""):
        assert not any(marker in shown for marker in MARKUP), shown


FIRST = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
SECOND = '<tool_call>\n{"name": "get_time", "arguments": {"zone": "UTC"}}\n</tool_call>'
CUT = '<tool_call>\n{"name": "get_time", "arguments": {"zo'
REQUIRED: dict[str, Any] = {"tool_choice": "required"}
SINGLE: dict[str, Any] = {"parallel_tool_calls": False}

# (what, request fields, format, text, engine's finish_reason, calls, finish_reason, content)
ANSWERS: list[tuple[str, dict[str, Any], ToolFormat, str, str, list[str], str, str]] = [
    ("complete then cut (the issue)", REQUIRED, "hermes", f"{FIRST}\n{CUT}", "length",
     ["get_weather"], "length", ""),
    ("complete then cut, auto", {}, "hermes", f"{FIRST}\n{CUT}", "length",
     ["get_weather"], "length", ""),
    ("complete then a marker cut", REQUIRED, "hermes", f"{FIRST}\n<tool_", "length",
     ["get_weather"], "tool_calls", ""),
    ("complete, complete", REQUIRED, "hermes", f"{FIRST}\n{SECOND}", "stop",
     ["get_weather", "get_time"], "tool_calls", ""),
    ("markup only", {}, "hermes", "<tool_call>", "length", [], "length", ""),
    ("a garbled block", {}, "hermes", "<tool_call>get_time()</tool_call>", "stop",
     [], "stop", ""),
    ("text then call", {}, "hermes", f"Let me look.\n{FIRST}", "stop",
     ["get_weather"], "tool_calls", "Let me look."),
    ("parallel false: complete, cut", {**REQUIRED, **SINGLE}, "hermes", f"{FIRST}\n{CUT}",
     "length", ["get_weather"], "tool_calls", ""),
    ("parallel false: two complete", {**REQUIRED, **SINGLE}, "hermes", f"{FIRST}\n{SECOND}",
     "stop", ["get_weather"], "tool_calls", ""),
    ("parallel false, auto: two complete", SINGLE, "hermes", f"{FIRST}{SECOND}", "stop",
     ["get_weather"], "tool_calls", ""),
    ("none: markup dropped, no call", {"tool_choice": "none"}, "hermes", f"Sure. {FIRST}",
     "stop", [], "stop", "Sure."),
    ("mistral complete then cut", REQUIRED, "mistral",
     '[TOOL_CALLS][{"name": "get_weather", "arguments": {"city": "Paris"}}, {"name": "ge',
     "length", ["get_weather"], "length", ""),
    ("llama3 cut", {}, "llama3", '{"name": "get_weather", "parameters": {"ci', "length",
     [], "length", ""),
]  # fmt: skip


@pytest.mark.parametrize(
    ("fields", "fmt", "text", "engine", "names", "reason", "content"),
    [a[1:] for a in ANSWERS],
    ids=[a[0] for a in ANSWERS],
)
@pytest.mark.parametrize("size", [1, 5, 1000])
def test_answers_plain_and_streamed(
    fields: dict[str, Any],
    fmt: ToolFormat,
    text: str,
    engine: str,
    names: list[str],
    reason: str,
    content: str,
    size: int,
) -> None:
    output = TextShaper(request(**fields), fmt, numbered)
    message, got_reason = output.message(text, engine)
    assert got_reason == reason
    assert [c["function"]["name"] for c in message.get("tool_calls", [])] == names
    for call in message.get("tool_calls", []):
        json.loads(call["function"]["arguments"])
    assert (message["content"] or "") == content
    got, stream_reason, _ = streamed(output, text, size, engine)
    assert stream_reason == reason
    assert [c["name"] for c in got["calls"]] == names
    assert [json.loads(c["arguments"]) for c in got["calls"]] == [
        json.loads(c["function"]["arguments"]) for c in message.get("tool_calls", [])
    ]
    assert got["content"].strip() == content


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
        {"role": "assistant", "content": "", "refusal": None},
        "length",
    )
    got, reason, _ = streamed(output, text, 5, "length")
    assert reason == "length" and got["content"] == "" and got["calls"] == []


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
    # tool_choice "none": tools declared, the model not told of them; a call it writes
    # anyway is neither returned nor shown.
    none = TextShaper(request(tool_choice="none"), "hermes")
    message, reason = none.message(f"Here: {text}", "stop")
    assert (message["content"], reason) == ("Here:", "stop") and "tool_calls" not in message
    got, reason, _ = streamed(none, f"Here: {text}", 3)
    assert (got["content"].strip(), got["calls"], reason) == ("Here:", [], "stop")


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
    if size == 1:  # the first call's arguments came as written, later calls whole
        first = [d for d in fragments if d["tool_calls"][0]["index"] == 0]
        assert len(first) == len(got["calls"][0]["arguments"])
        assert len(fragments) - len(first) == len(got["calls"]) - 1
    assert got["content"] == ""


def test_forced_call_cut_short_keeps_length() -> None:
    output = TextShaper(request(tool_choice="required"), "hermes", numbered)
    text = '<tool_call>\n{"name": "get_weather", "arguments": {"ci'
    assert output.message(text, "length") == (
        {"role": "assistant", "content": "", "refusal": None},
        "length",
    )
    # The first forced call streams as it comes: what was sent of it stays sent.
    got, reason, _ = streamed(output, text, 3, "length")
    assert reason == "length"
    assert got["calls"][0]["name"] == "get_weather"


@pytest.mark.parametrize("size", [1, 4, 1000])
def test_forced_later_calls_are_sent_whole_and_a_cut_one_dropped(size: int) -> None:
    output = TextShaper(request(tool_choice="required"), "hermes", numbered)
    text = f"{FIRST}\n{SECOND}\n{CUT}"
    _, reason, deltas = streamed(output, text, size, "length")
    assert reason == "length"
    later = [d for d in deltas if d["tool_calls"][0]["index"] == 1]
    assert later == [
        {
            "tool_calls": [
                {
                    "index": 1,
                    "id": "id0",
                    "type": "function",
                    "function": {"name": "get_time", "arguments": ""},
                }
            ]
        },
        {"tool_calls": [{"index": 1, "function": {"arguments": '{"zone": "UTC"}'}}]},
    ]
    assert {d["tool_calls"][0]["index"] for d in deltas} == {0, 1}


def test_forced_legacy_function_call_streams() -> None:
    legacy = read_tools(
        {"functions": [{"name": "get_weather"}], "function_call": {"name": "get_weather"}}
    )
    text = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n</tool_call>'
    got, reason, _ = streamed(TextShaper(legacy, "hermes"), text, 2)
    assert reason == "function_call"
    assert got["legacy"]["name"] == "get_weather"
    assert json.loads(got["legacy"]["arguments"]) == {"city": "Oslo"}
