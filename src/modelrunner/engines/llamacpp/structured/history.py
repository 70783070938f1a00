"""The messages and ``tools`` a chat template is given, shaped to what the template knows.

A template that renders tools gets them as OpenAI tool objects, and the history's calls with
their arguments as objects (the Hugging Face convention templates are written against). A
template without tools gets a neutral system preamble that lists the tools and shows the
call syntax, and the history's calls and tool results written out as text in that syntax.
"""

from __future__ import annotations

import json
from typing import Any

from modelrunner.engines.llamacpp.structured.errors import InvalidRequest
from modelrunner.engines.llamacpp.structured.formats import ToolFormat
from modelrunner.engines.llamacpp.structured.template import TemplateInfo
from modelrunner.engines.llamacpp.structured.tools import ToolRequest

Message = dict[str, Any]


def template_input(
    messages: list[Message], tools: ToolRequest, info: TemplateInfo
) -> tuple[list[Message], list[dict[str, Any]] | None]:
    """(messages, tools) to render the prompt with."""
    shaped: list[Message] = []
    results: set[int] = set()  # indices of the user turns that carry tool results
    for i, message in enumerate(messages):
        message = _legacy_call(message)
        role = message.get("role")
        if role == "assistant" and message.get("tool_calls"):
            _check_calls(message["tool_calls"], f"messages[{i}].tool_calls")
            shaped.append(_calls(message, info))
        elif role in ("tool", "function") and not info.tool_role:
            _append_result(shaped, results, message)
        elif role == "function":  # the legacy spelling of a tool result
            shaped.append({"role": "tool", "content": text(message), "name": message.get("name")})
        else:
            shaped.append(message)
    offered = [f.as_tool() for f in tools.offered]
    if not offered:
        return shaped, None
    if info.tools:
        return shaped, offered
    return _with_preamble(shaped, preamble(offered, tools)), None


def text(message: Message) -> str:
    """A message's content as text: None is empty, content parts are joined."""
    content = message.get("content")
    if content is None:
        return ""
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return str(content)


def preamble(offered: list[dict[str, Any]], tools: ToolRequest) -> str:
    listed = "\n".join(json.dumps(tool["function"], ensure_ascii=False) for tool in offered)
    lines = [
        "You can call these functions:",
        "<tools>",
        listed,
        "</tools>",
        "To call a function, answer with nothing but one block per call:",
        "<tool_call>",
        '{"name": "<function name>", "arguments": {<the arguments as a JSON object>}}',
        "</tool_call>",
        "The function's result then comes back inside <tool_response></tool_response>.",
    ]
    if tools.mode == "named":
        lines.append(f"Call the function {tools.named} now.")
    elif tools.mode == "required":
        lines.append("Call one of the functions now.")
    else:
        lines.append("If no function helps, answer the user directly.")
    return "\n".join(lines)


def _with_preamble(messages: list[Message], text_: str) -> list[Message]:
    if messages and messages[0].get("role") == "system":
        first = messages[0]
        return [{**first, "content": f"{text(first)}\n\n{text_}".strip()}, *messages[1:]]
    return [{"role": "system", "content": text_}, *messages]


def _legacy_call(message: Message) -> Message:
    """An assistant message with the legacy function_call, as one with tool_calls."""
    call = message.get("function_call")
    if (
        message.get("role") != "assistant"
        or not isinstance(call, dict)
        or message.get("tool_calls")
    ):
        return message
    rest = {k: v for k, v in message.items() if k != "function_call"}
    return {**rest, "tool_calls": [{"id": "call_legacy", "type": "function", "function": call}]}


def _check_calls(calls: Any, param: str) -> None:
    """The history's calls as OpenAI defines them, so a template never meets garbage."""
    if not isinstance(calls, list):
        raise InvalidRequest(f"{param} must be a list", param)
    for j, call in enumerate(calls):
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            where = f"{param}[{j}].function"
            raise InvalidRequest(f"{where} must be an object with a name", where)


def _calls(message: Message, info: TemplateInfo) -> Message:
    calls = [c["function"] for c in message["tool_calls"]]
    if info.tool_calls:
        shaped = [
            {**c, "function": {**c["function"], "arguments": _arguments(c)}}
            for c in message["tool_calls"]
        ]
        return {**message, "tool_calls": shaped}
    rest = {k: v for k, v in message.items() if k != "tool_calls"}
    written = written_calls(
        info.format, [(c.get("name", ""), _parsed(c.get("arguments"))) for c in calls]
    )
    return {**rest, "content": f"{text(message)}\n{written}".strip()}


def written_calls(fmt: ToolFormat, calls: list[tuple[str, Any]]) -> str:
    """Calls as the model writes them, for histories of templates that cannot render them."""
    objects = [{"name": name, "arguments": arguments} for name, arguments in calls]
    if fmt == "mistral":
        return "[TOOL_CALLS]" + json.dumps(objects, ensure_ascii=False)
    if fmt == "llama3":
        return "; ".join(
            json.dumps({"name": n, "parameters": a}, ensure_ascii=False) for n, a in calls
        )
    return "\n".join(
        f"<tool_call>\n{json.dumps(o, ensure_ascii=False)}\n</tool_call>" for o in objects
    )


def _arguments(call: dict[str, Any]) -> Any:
    return _parsed(call.get("function", {}).get("arguments"))


def _parsed(arguments: Any) -> Any:
    """Arguments as an object when they are a JSON string of one; as they are otherwise."""
    if isinstance(arguments, str):
        try:
            return json.loads(arguments)
        except ValueError:
            return arguments
    return arguments


def _append_result(shaped: list[Message], results: set[int], message: Message) -> None:
    """A tool result as a user turn; results in a row share one turn (many templates insist
    on alternating roles)."""
    block = f"<tool_response>\n{text(message)}\n</tool_response>"
    if shaped and len(shaped) - 1 in results:
        shaped[-1] = {**shaped[-1], "content": f"{shaped[-1]['content']}\n{block}"}
    else:
        results.add(len(shaped))
        shaped.append({"role": "user", "content": block})
