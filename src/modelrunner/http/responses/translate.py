"""OpenAI Responses requests -> OpenAI chat completions bodies (pure, no I/O).

- ``input_items``: the request's ``input`` (a string or items) as Responses items with ids.
- ``chat_body``: instructions + earlier turns + the new items as a chat completions body,
  with function tools, ``tool_choice``, ``text.format`` and ``max_output_tokens`` mapped.

The answer's way back is in ``answers``; the request's shape in ``shapes``.
"""

from __future__ import annotations

from typing import Any, Final

import msgspec

from modelrunner.http.responses.shapes import BadInput, ResponsesRequest, TextConfig, new_id

_ROLES: Final = {
    "user": "user",
    "system": "system",
    "developer": "system",
    "assistant": "assistant",
}
_TEXT_PARTS: Final = frozenset({"input_text", "output_text", "text", "refusal"})


def refuse_unsupported(request: ResponsesRequest) -> None:
    if request.background:
        raise BadInput(
            "background responses are not supported: leave out 'background'", "background"
        )
    if request.conversation is not None:
        raise BadInput(
            "conversations are not supported: chain turns with previous_response_id",
            "conversation",
        )


def input_items(given: str | list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The request's input as items, each with an ``id`` (``GET .../input_items`` lists
    them), checked so that ``chat_messages`` can translate every one."""
    if isinstance(given, str):
        given = [{"role": "user", "content": given}]
    items = []
    for index, raw in enumerate(given):
        where = f"input[{index}]"
        kind = raw.get("type", "message" if "role" in raw else None)
        if kind == "message":
            role = raw.get("role")
            if role not in _ROLES:
                raise BadInput(
                    f"{where}.role must be one of {', '.join(_ROLES)}; got {role!r}",
                    "input",
                )
            content = raw.get("content")
            item = {
                "id": raw.get("id") or new_id("msg"),
                "type": "message",
                "role": role,
                "content": _parts(content, where, output=role == "assistant"),
            }
            if raw.get("status"):
                item["status"] = raw["status"]
        elif kind == "function_call":
            for key in ("call_id", "name", "arguments"):
                if not isinstance(raw.get(key), str):
                    raise BadInput(f"{where}.{key} must be a string", "input")
            item = {
                "id": raw.get("id") or new_id("fc"),
                "type": "function_call",
                "call_id": raw["call_id"],
                "name": raw["name"],
                "arguments": raw["arguments"],
                "status": "completed",
            }
        elif kind == "function_call_output":
            output = raw.get("output")
            if not isinstance(raw.get("call_id"), str):
                raise BadInput(f"{where}.call_id must be a string", "input")
            if not isinstance(output, str):
                output = msgspec.json.encode(output).decode()
            item = {
                "id": raw.get("id") or new_id("fco"),
                "type": "function_call_output",
                "call_id": raw["call_id"],
                "output": output,
                "status": "completed",
            }
        else:
            raise BadInput(
                f"{where}: items of type {kind!r} are not supported (message, "
                "function_call, function_call_output)",
                "input",
            )
        items.append(item)
    if not items:
        raise BadInput("input is empty: give a string or at least one item", "input")
    return items


def _parts(content: Any, where: str, output: bool) -> list[dict[str, Any]]:
    """Message content as Responses content parts (a string becomes one text part)."""
    text_type = "output_text" if output else "input_text"
    if isinstance(content, str):
        return [{"type": text_type, "text": content}]
    if not isinstance(content, list) or not content:
        raise BadInput(f"{where}.content must be a string or a list of parts", "input")
    parts = []
    for index, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in _TEXT_PARTS and isinstance(part.get("text", part.get("refusal")), str):
            text = part.get("text", part.get("refusal"))
            parts.append({"type": "output_text" if output else "input_text", "text": text})
        elif kind == "input_image" and isinstance(part.get("image_url"), str):
            parts.append({"type": "input_image", "image_url": part["image_url"]})
        else:
            raise BadInput(
                f"{where}.content[{index}]: parts of type {kind!r} are not supported "
                "(input_text, output_text, input_image with image_url)",
                "input",
            )
    return parts


def chat_messages(instructions: str | None, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Responses items (earlier turns' inputs and outputs, then this turn's) as chat
    messages; consecutive function calls become one assistant message with tool calls."""
    messages: list[dict[str, Any]] = []
    if instructions:
        messages.append({"role": "system", "content": instructions})
    for item in items:
        kind = item["type"]
        if kind == "message":
            messages.append({"role": _ROLES[item["role"]], "content": _chat_content(item)})
        elif kind == "function_call":
            call = {
                "id": item["call_id"],
                "type": "function",
                "function": {"name": item["name"], "arguments": item["arguments"]},
            }
            last = messages[-1] if messages else None
            if last and last["role"] == "assistant" and "tool_calls" in last:
                last["tool_calls"].append(call)
            else:
                # "" rather than null: chat templates concatenate the content.
                messages.append({"role": "assistant", "content": "", "tool_calls": [call]})
        elif kind == "function_call_output":
            messages.append(
                {"role": "tool", "tool_call_id": item["call_id"], "content": item["output"]}
            )
    return messages


def _chat_content(item: dict[str, Any]) -> str | list[dict[str, Any]]:
    parts = item["content"]
    if all(p["type"] != "input_image" for p in parts):
        return "".join(p["text"] for p in parts)
    return [
        {"type": "image_url", "image_url": {"url": p["image_url"]}}
        if p["type"] == "input_image"
        else {"type": "text", "text": p["text"]}
        for p in parts
    ]


def chat_tools(tools: list[dict[str, Any]] | None) -> list[dict[str, Any]] | None:
    if not tools:
        return None
    out = []
    for index, tool in enumerate(tools):
        if tool.get("type") != "function" or not isinstance(tool.get("name"), str):
            raise BadInput(
                f"tools[{index}]: only function tools with a name are supported; got type "
                f"{tool.get('type')!r}",
                "tools",
            )
        function = {"name": tool["name"]}
        for key in ("description", "parameters", "strict"):
            if tool.get(key) is not None:
                function[key] = tool[key]
        out.append({"type": "function", "function": function})
    return out


def chat_tool_choice(choice: str | dict[str, Any] | None) -> Any:
    if choice is None or choice in ("auto", "none", "required"):
        return choice
    if isinstance(choice, dict) and choice.get("type") == "function" and choice.get("name"):
        return {"type": "function", "function": {"name": choice["name"]}}
    raise BadInput(
        "tool_choice must be auto, none, required or {type: function, name}", "tool_choice"
    )


def chat_response_format(text: TextConfig | None) -> dict[str, Any] | None:
    fmt = text.format if text is not None else None
    if fmt is None or fmt.type == "text":
        return None
    if fmt.type == "json_object":
        return {"type": "json_object"}
    if fmt.schema is None or not fmt.name:
        raise BadInput("text.format json_schema needs a name and a schema", "text")
    schema: dict[str, Any] = {"name": fmt.name, "schema": fmt.schema}
    if fmt.strict is not None:
        schema["strict"] = fmt.strict
    if fmt.description:
        schema["description"] = fmt.description
    return {"type": "json_schema", "json_schema": schema}


def chat_body(
    request: ResponsesRequest, history: list[dict[str, Any]], items: list[dict[str, Any]]
) -> dict[str, Any]:
    """The chat completions body for a Responses request (``history``: the items of the
    turns before, from ``previous_response_id``)."""
    body: dict[str, Any] = {
        "model": request.model,
        "messages": chat_messages(request.instructions, [*history, *items]),
    }
    optional = {
        "tools": chat_tools(request.tools),
        "tool_choice": chat_tool_choice(request.tool_choice),
        "parallel_tool_calls": request.parallel_tool_calls,
        "temperature": request.temperature,
        "top_p": request.top_p,
        "max_tokens": request.max_output_tokens,
        "response_format": chat_response_format(request.text),
    }
    body.update({k: v for k, v in optional.items() if v is not None})
    return body
