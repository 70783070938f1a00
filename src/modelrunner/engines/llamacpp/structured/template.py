"""What a chat template knows about tools, found by rendering probe conversations with it.

Reading the source alone misleads (a template may mention ``tools`` in a comment, or render
any role name it is given); rendering shows what the model will really see.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from modelrunner.engines.llamacpp.structured.formats import ToolFormat

# render(messages, tools) -> prompt text; tools None when none are offered.
Render = Callable[[list[dict[str, Any]], "list[dict[str, Any]] | None"], str]

_PROBE_NAME: Final = "probe_fn_7f3a"
_PROBE_RESULT: Final = "probe_result_7f3a"
_PROBE_TOOL: Final = {
    "type": "function",
    "function": {
        "name": _PROBE_NAME,
        "description": "A probe.",
        "parameters": {"type": "object", "properties": {"a": {"type": "integer"}}},
    },
}
# Mistral templates insist on 9 alphanumeric characters.
_PROBE_CALL: Final = {
    "id": "call7f3a0",
    "type": "function",
    "function": {"name": _PROBE_NAME, "arguments": {"a": 1}},
}


@dataclass(frozen=True)
class TemplateInfo:
    format: ToolFormat
    tools: bool  # renders the `tools` it is given
    tool_calls: bool  # renders assistant messages' tool_calls
    tool_role: bool  # renders messages of role "tool"


NO_TOOL_SUPPORT: Final = TemplateInfo("hermes", tools=False, tool_calls=False, tool_role=False)


def inspect_template(source: str, render: Render) -> TemplateInfo:
    user = {"role": "user", "content": "Hi"}
    if _PROBE_NAME not in _safe(render, [user], [_PROBE_TOOL]):
        return NO_TOOL_SUPPORT
    calling = {"role": "assistant", "content": None, "tool_calls": [_PROBE_CALL]}
    result = {"role": "tool", "tool_call_id": _PROBE_CALL["id"], "content": _PROBE_RESULT}
    history = _safe(render, [user, calling, result], [_PROBE_TOOL])
    # The call in the history must show beyond the tool list, which names the function too.
    tool_calls = history.count(_PROBE_NAME) > _safe(render, [user], [_PROBE_TOOL]).count(
        _PROBE_NAME
    )
    tool_role = _PROBE_RESULT in history
    return TemplateInfo(tool_format(source), True, tool_calls, tool_role)


def tool_format(source: str) -> ToolFormat:
    """The call syntax a template's model was trained on, from the markers in the template;
    Hermes when none is recognised."""
    if "[TOOL_CALLS]" in source:
        return "mistral"
    if "<tool_call>" in source:
        return "hermes"
    if "<|python_tag|>" in source or ("<|start_header_id|>" in source and "ipython" in source):
        return "llama3"
    return "hermes"


def _safe(
    render: Render, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None
) -> str:
    try:
        return render(messages, tools)
    except Exception:  # a template that raises on the probe lacks the feature
        return ""


def jinja_render(source: str, bos_token: str = "", eos_token: str = "") -> Render:
    """A renderer as Hugging Face's and llama.cpp's servers render templates (sandboxed Jinja)."""
    import datetime

    from jinja2 import BaseLoader
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message: str) -> None:
        raise ValueError(message)

    def strftime_now(fmt: str) -> str:
        return datetime.datetime.now().strftime(fmt)

    env = ImmutableSandboxedEnvironment(loader=BaseLoader(), trim_blocks=True, lstrip_blocks=True)
    template = env.from_string(source)

    def render(messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None) -> str:
        return template.render(
            messages=messages,
            tools=tools,
            add_generation_prompt=True,
            bos_token=bos_token,
            eos_token=eos_token,
            raise_exception=raise_exception,
            strftime_now=strftime_now,
        )

    return render
