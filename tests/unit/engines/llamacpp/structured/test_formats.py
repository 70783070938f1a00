"""Tool-call parsers on outputs in the shapes Hermes/Qwen, Llama 3.x and Mistral models write,
malformed and cut ones included: never an exception, and never markup left in the content."""

from __future__ import annotations

import json

import pytest

from modelrunner.engines.llamacpp.structured.formats import Call, Parsed, ToolFormat, parse
from modelrunner.engines.llamacpp.structured.output import START

WEATHER = Call("get_weather", '{"city": "Paris"}')
TIME = Call("get_time", '{"zone": "UTC", "precise": true}')

CASES: list[tuple[str, ToolFormat, str, Parsed]] = [
    # Hermes / Qwen 2.5
    (
        "qwen single call",
        "hermes",
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>',
        Parsed(None, (WEATHER,)),
    ),
    (
        "hermes 2 pro, arguments first",
        "hermes",
        '<tool_call>\n{"arguments": {"city": "Paris"}, "name": "get_weather"}\n</tool_call>',
        Parsed(None, (WEATHER,)),
    ),
    (
        "qwen parallel calls with text before",
        "hermes",
        "Let me check.\n<tool_call>\n"
        '{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>\n'
        '<tool_call>\n{"name": "get_time", "arguments": {"zone": "UTC", "precise": true}}\n'
        "</tool_call>",
        Parsed("Let me check.", (WEATHER, TIME)),
    ),
    (
        "closing tag missing at the end (stopped at EOS)",
        "hermes",
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}',
        Parsed(None, (WEATHER,)),
    ),
    (
        "arguments sent as a JSON string",
        "hermes",
        '<tool_call>{"name": "get_weather", "arguments": "{\\"city\\": \\"Paris\\"}"}</tool_call>',
        Parsed(None, (WEATHER,)),
    ),
    ("plain answer", "hermes", "Paris is sunny today.", Parsed("Paris is sunny today.", ())),
    (
        "truncated call (max_tokens) is dropped, unfinished",
        "hermes",
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Par',
        Parsed(None, (), unfinished=True),
    ),
    (
        "complete call, then one cut: the complete one kept",
        "hermes",
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>\n'
        '<tool_call>\n{"name": "get_time", "arg',
        Parsed(None, (WEATHER,), unfinished=True),
    ),
    ("markup only", "hermes", "<tool_call>", Parsed(None, (), unfinished=True)),
    (
        "text, a call, text: the text is content",
        "hermes",
        'Sure.\n<tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}</tool_call>'
        "\nDone.",
        Parsed("Sure.\n\nDone.", (WEATHER,)),
    ),
    (
        "closing tag left out before the next call",
        "hermes",
        '<tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}'
        '<tool_call>{"name": "get_time", "arguments": {"zone": "UTC", "precise": true}}',
        Parsed(None, (WEATHER, TIME)),
    ),
    (
        "not JSON inside the tags is dropped",
        "hermes",
        "<tool_call>get_weather(city='Paris')</tool_call>",
        Parsed(None, ()),
    ),
    (
        "a name that is not a string is dropped",
        "hermes",
        'Hm. <tool_call>{"name": 3, "arguments": {}}</tool_call>',
        Parsed("Hm.", ()),
    ),
    (
        "arguments that are not an object are dropped",
        "hermes",
        '<tool_call>{"name": "get_weather", "arguments": ["Paris"]}</tool_call>',
        Parsed(None, ()),
    ),
    ("empty output", "hermes", "", Parsed(None, ())),
    # Llama 3.1 - 3.3
    (
        "llama 3.1 JSON call",
        "llama3",
        '{"name": "get_weather", "parameters": {"city": "Paris"}}',
        Parsed(None, (WEATHER,)),
    ),
    (
        "llama 3.1 with python_tag",
        "llama3",
        '<|python_tag|>{"name": "get_weather", "parameters": {"city": "Paris"}}',
        Parsed(None, (WEATHER,)),
    ),
    (
        "llama 3.2 with the type key and two calls",
        "llama3",
        '{"type": "function", "name": "get_weather", "parameters": {"city": "Paris"}}; '
        '{"name": "get_time", "parameters": {"zone": "UTC", "precise": true}}',
        Parsed(None, (WEATHER, TIME)),
    ),
    ("llama prose", "llama3", "The weather is fine.", Parsed("The weather is fine.", ())),
    (
        "llama call then prose: the prose is content",
        "llama3",
        '{"name": "get_weather", "parameters": {"city": "Paris"}} I called it.',
        Parsed("I called it.", (WEATHER,)),
    ),
    (
        "llama prose, then a tagged call",
        "llama3",
        'Let me check. <|python_tag|>{"name": "get_weather", "parameters": {"city": "Paris"}}',
        Parsed("Let me check.", (WEATHER,)),
    ),
    (
        "llama call cut short",
        "llama3",
        '{"name": "get_weather", "parameters": {"city": "Pa',
        Parsed(None, (), unfinished=True),
    ),
    (
        "llama call, then one cut",
        "llama3",
        '<|python_tag|>{"name": "get_weather", "parameters": {"city": "Paris"}}; {"name": "get_',
        Parsed(None, (WEATHER,), unfinished=True),
    ),
    (
        "llama JSON that is not a call is content",
        "llama3",
        '{"city": "Paris"}',
        Parsed('{"city": "Paris"}', ()),
    ),
    # Mistral (Nemo: JSON list; Small 3.2 and later: name[ARGS]{...})
    (
        "mistral nemo list",
        "mistral",
        '[TOOL_CALLS][{"name": "get_weather", "arguments": {"city": "Paris"}, "id": "a1b2c3d4e"}]',
        Parsed(None, (WEATHER,)),
    ),
    (
        "mistral list of two with content before",
        "mistral",
        'Sure. [TOOL_CALLS][{"name": "get_weather", "arguments": {"city": "Paris"}}, '
        '{"name": "get_time", "arguments": {"zone": "UTC", "precise": true}}]',
        Parsed("Sure.", (WEATHER, TIME)),
    ),
    (
        "mistral small 3.2 name[ARGS]",
        "mistral",
        '[TOOL_CALLS]get_weather[ARGS]{"city": "Paris"}'
        '[TOOL_CALLS]get_time[ARGS]{"zone": "UTC", "precise": true}',
        Parsed(None, (WEATHER, TIME)),
    ),
    (
        "mistral with call id",
        "mistral",
        '[TOOL_CALLS]get_weather[CALL_ID]a1b2c3d4e[ARGS]{"city": "Paris"}',
        Parsed(None, (WEATHER,)),
    ),
    ("mistral prose", "mistral", "No tools needed.", Parsed("No tools needed.", ())),
    (
        "mistral list cut short is dropped",
        "mistral",
        '[TOOL_CALLS][{"name": "get_weather", "arguments": {"city": ',
        Parsed(None, (), unfinished=True),
    ),
    (
        "mistral list: a complete call, then one cut",
        "mistral",
        '[TOOL_CALLS][{"name": "get_weather", "arguments": {"city": "Paris"}}, {"name": "get_t',
        Parsed(None, (WEATHER,), unfinished=True),
    ),
    (
        "mistral named: a complete call, then one cut",
        "mistral",
        '[TOOL_CALLS]get_weather[ARGS]{"city": "Paris"}[TOOL_CALLS]get_time[ARGS]{"zo',
        Parsed(None, (WEATHER,), unfinished=True),
    ),
    (
        "mistral name without [ARGS] is dropped",
        "mistral",
        "Well [TOOL_CALLS]get_weather Paris",
        Parsed("Well", (), unfinished=True),
    ),
]


@pytest.mark.parametrize(
    ("fmt", "text", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_parse(fmt: ToolFormat, text: str, expected: Parsed) -> None:
    assert parse(fmt, text) == expected


@pytest.mark.parametrize("fmt", ["hermes", "llama3", "mistral"])
@pytest.mark.parametrize(
    "garbage",
    [
        "<tool_call>",
        "<tool_call>{</tool_call>",
        "[TOOL_CALLS]",
        "[TOOL_CALLS][[[",
        "{" * 5000,
        '{"name": "x", "parameters": {"a": ' + "[" * 5000,
        "\x00\udcff",
        "<|python_tag|>",
    ],
)
def test_garbage_never_raises_nor_shows_markup(fmt: ToolFormat, garbage: str) -> None:
    parsed = parse(fmt, garbage)
    assert parsed.calls == ()
    # The format's own call marker is never content (another format's is just text).
    assert START[fmt] not in (parsed.content or "")


def test_arguments_are_compact_json_objects() -> None:
    (call,) = parse(
        "hermes", '<tool_call>{"name": "f", "arguments": {"a": [1, 2], "b": "é"}}</tool_call>'
    ).calls
    assert json.loads(call.arguments) == {"a": [1, 2], "b": "é"}
