"""Template probing and the messages a template is given: native tools where the template has
them, the preamble and written-out history where it has not (SmolLM2's template)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from modelrunner.engines.llamacpp.structured.history import template_input
from modelrunner.engines.llamacpp.structured.template import (
    NO_TOOL_SUPPORT,
    TemplateInfo,
    inspect_template,
    jinja_render,
    tool_format,
)
from modelrunner.engines.llamacpp.structured.tools import read_tools

# SmolLM2-135M-Instruct's template, as its GGUF carries it: no notion of tools.
SMOLLM2 = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face"
    "<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + "
    "'<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}"
    "{% endif %}"
)
# The shape of Qwen 2.5's template (Hermes tool calls), shortened.
HERMES = """{%- if tools %}<|im_start|>system
# Tools
<tools>
{%- for tool in tools %}
{{ tool | tojson }}
{%- endfor %}
</tools>
Return each call as a JSON object within <tool_call></tool_call> tags.<|im_end|>
{% endif %}
{%- for message in messages %}
{%- if message.role == 'assistant' and message.tool_calls %}<|im_start|>assistant
{%- for tc in message.tool_calls %}
<tool_call>
{"name": "{{ tc.function.name }}", "arguments": {{ tc.function.arguments | tojson }}}
</tool_call>
{%- endfor %}<|im_end|>
{% elif message.role == 'tool' %}<|im_start|>user
<tool_response>
{{ message.content }}
</tool_response><|im_end|>
{% else %}<|im_start|>{{ message.role }}
{{ message.content }}<|im_end|>
{% endif %}
{%- endfor %}
{%- if add_generation_prompt %}<|im_start|>assistant
{% endif %}"""
# Lists tools but knows nothing of calls in the history (and fails on a None content).
TOOLS_ONLY = (
    "{% if tools %}[AVAILABLE]{{ tools | tojson }}[/AVAILABLE]{% endif %}"
    "{% for m in messages %}{% if m.role in ['user', 'assistant', 'system'] %}"
    "[{{ m.role }}]{{ m.content + '' }}{% endif %}{% endfor %}"
)

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}
HISTORY: list[dict[str, Any]] = [
    {"role": "user", "content": "Weather in Paris?"},
    {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "call_1",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
            }
        ],
    },
    {"role": "tool", "tool_call_id": "call_1", "content": '{"temperature": 21}'},
    {"role": "tool", "tool_call_id": "call_2", "content": "second result"},
]


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        (SMOLLM2, NO_TOOL_SUPPORT),
        (HERMES, TemplateInfo("hermes", tools=True, tool_calls=True, tool_role=True)),
        (TOOLS_ONLY, TemplateInfo("hermes", tools=True, tool_calls=False, tool_role=False)),
    ],
)
def test_inspect(source: str, expected: TemplateInfo) -> None:
    assert inspect_template(source, jinja_render(source)) == expected


@pytest.mark.parametrize(
    ("source", "fmt"),
    [
        ("{{ '[TOOL_CALLS]' + tool_calls | tojson }}", "mistral"),
        ("{{- '<|python_tag|>' + tool_call.name }}", "llama3"),
        ("<|start_header_id|>ipython<|end_header_id|>", "llama3"),
        (HERMES, "hermes"),
        (SMOLLM2, "hermes"),
    ],
)
def test_tool_format(source: str, fmt: str) -> None:
    assert tool_format(source) == fmt


def test_template_without_tools_gets_preamble_and_written_history() -> None:
    tools = read_tools({"tools": [WEATHER]})
    messages, template_tools = template_input(HISTORY, tools, NO_TOOL_SUPPORT)
    assert template_tools is None
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user"]
    assert "<tools>" in messages[0]["content"]
    assert json.dumps(WEATHER["function"]) in messages[0]["content"]
    assert messages[2]["content"] == (
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
    )
    # Consecutive results share one user turn.
    assert messages[3]["content"] == (
        '<tool_response>\n{"temperature": 21}\n</tool_response>\n'
        "<tool_response>\nsecond result\n</tool_response>"
    )
    prompt = jinja_render(SMOLLM2)(messages, template_tools)
    assert "named SmolLM" not in prompt  # our system turn replaced the default one
    assert prompt.endswith("<|im_start|>assistant\n")


def test_preamble_joins_an_existing_system_message_and_says_what_is_forced() -> None:
    tools = read_tools(
        {
            "tools": [WEATHER],
            "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
        }
    )
    messages, _ = template_input(
        [{"role": "system", "content": "Be brief."}, HISTORY[0]], tools, NO_TOOL_SUPPORT
    )
    assert messages[0]["content"].startswith("Be brief.\n\nYou can call these functions:")
    assert messages[0]["content"].endswith("Call the function get_weather now.")
    assert len(messages) == 2


def test_tool_choice_none_offers_no_tools() -> None:
    tools = read_tools({"tools": [WEATHER], "tool_choice": "none"})
    messages, template_tools = template_input(HISTORY[:1], tools, NO_TOOL_SUPPORT)
    assert template_tools is None and messages == HISTORY[:1]


def test_native_template_gets_tools_and_object_arguments() -> None:
    info = inspect_template(HERMES, jinja_render(HERMES))
    messages, template_tools = template_input(HISTORY, read_tools({"tools": [WEATHER]}), info)
    assert template_tools == [WEATHER]
    assert messages[1]["tool_calls"][0]["function"]["arguments"] == {"city": "Paris"}
    prompt = jinja_render(HERMES)(messages, template_tools)
    assert '{"name": "get_weather", "arguments": {"city": "Paris"}}' in prompt
    assert "<tool_response>\nsecond result\n</tool_response>" in prompt


def test_template_with_tools_but_no_calls_gets_calls_written_out() -> None:
    info = inspect_template(TOOLS_ONLY, jinja_render(TOOLS_ONLY))
    legacy_history = [
        HISTORY[0],
        {
            "role": "assistant",
            "content": None,
            "function_call": {"name": "get_weather", "arguments": "{}"},
        },
        {"role": "function", "name": "get_weather", "content": "sunny"},
    ]
    messages, template_tools = template_input(
        legacy_history, read_tools({"tools": [WEATHER]}), info
    )
    assert template_tools == [WEATHER]
    prompt = jinja_render(TOOLS_ONLY)(messages, template_tools)
    assert (
        '[assistant]<tool_call>\n{"name": "get_weather", "arguments": {}}\n</tool_call>' in prompt
    )
    assert "[user]<tool_response>\nsunny\n</tool_response>" in prompt


@pytest.mark.parametrize(
    ("calls", "param"),
    [
        ("call it", "messages[1].tool_calls"),
        (
            [{"id": "x", "type": "function", "function": "get_weather"}],
            "messages[1].tool_calls[0].function",
        ),
        (
            [{"id": "x", "type": "function", "function": {"arguments": "{}"}}],
            "messages[1].tool_calls[0].function",
        ),
        ([7], "messages[1].tool_calls[0].function"),
    ],
)
def test_malformed_history_calls_are_400s(calls: Any, param: str) -> None:
    from modelrunner.engines.llamacpp.structured.errors import InvalidRequest

    messages = [HISTORY[0], {"role": "assistant", "content": None, "tool_calls": calls}]
    with pytest.raises(InvalidRequest) as caught:
        template_input(messages, read_tools({"tools": [WEATHER]}), NO_TOOL_SUPPORT)
    assert caught.value.param == param
