"""OpenAI Responses <-> OpenAI chat completions, the deciding half (pure, no I/O).

- ``ResponsesRequest``: what ``POST /v1/responses`` accepts.
- ``input_items``: the request's ``input`` (a string or items) as Responses items with ids.
- ``chat_body``: instructions + earlier turns + the new items as a chat completions body,
  with function tools, ``tool_choice``, ``text.format`` and ``max_output_tokens`` mapped.
- ``Output``: the answer's items (a message, function calls) built from a whole chat
  completion (``add_completion``) or chunk by chunk (``StreamTranslator``, which also
  says each step as the Responses stream events).
"""

from __future__ import annotations

import time
import uuid
from typing import Annotated, Any, Final, Literal

import msgspec
from msgspec import Meta

from modelrunner.errors import UsageError

_ROLES: Final = {
    "user": "user",
    "system": "system",
    "developer": "system",
    "assistant": "assistant",
}
_TEXT_PARTS: Final = frozenset({"input_text", "output_text", "text", "refusal"})


class BadInput(UsageError):
    """A Responses request that cannot be translated; ``param`` names the field."""

    def __init__(self, message: str, param: str) -> None:
        super().__init__(message)
        self.param = param


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


# -- the request ------------------------------------------------------------------------
class TextFormat(msgspec.Struct, kw_only=True):
    type: Literal["text", "json_object", "json_schema"] = "text"
    name: str | None = None
    schema: dict[str, Any] | None = None
    description: str | None = None
    strict: bool | None = None


class TextConfig(msgspec.Struct, kw_only=True):
    format: TextFormat | None = None


class ResponsesRequest(msgspec.Struct, kw_only=True):
    """``POST /v1/responses``. Fields not listed are ignored; those that would change the
    answer in ways mr cannot honour (``background``, ``conversation``, hosted tools) are
    refused."""

    model: Annotated[str, Meta(min_length=1, description="A served model name or alias.")]
    input: str | list[dict[str, Any]]
    instructions: str | None = None
    previous_response_id: str | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    temperature: Annotated[float, Meta(ge=0, le=2)] | None = None
    top_p: Annotated[float, Meta(ge=0, le=1)] | None = None
    max_output_tokens: Annotated[int, Meta(ge=1)] | None = None
    text: TextConfig | None = None
    stream: bool = False
    store: bool = True
    metadata: dict[str, str] | None = None
    user: str | None = None
    background: bool | None = None
    conversation: Any = None


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


# -- the answer -------------------------------------------------------------------------
class Output:
    """The answer's output items as they build up: one message, then function calls."""

    def __init__(self) -> None:
        self.message_id: str | None = None
        self.text: list[str] = []
        self.calls: dict[int, dict[str, Any]] = {}  # chat tool call index -> item
        self.finish_reason: str | None = None
        self.usage: dict[str, Any] | None = None
        # Output index -> ("message", 0) or ("call", chat tool call index), as they came.
        self.order: list[tuple[str, int]] = []

    def items(self, done: bool = True) -> list[dict[str, Any]]:
        status = "completed" if done else "in_progress"
        return [
            self.message_item(status)
            if kind == "message"
            else {**self.calls[key], "status": status}
            for kind, key in self.order
        ]

    def message_item(self, status: str) -> dict[str, Any]:
        return {
            "id": self.message_id,
            "type": "message",
            "status": status,
            "role": "assistant",
            "content": [self.text_part()] if status == "completed" else [],
        }

    def text_part(self) -> dict[str, Any]:
        return {"type": "output_text", "text": "".join(self.text), "annotations": []}

    def add_completion(self, answer: dict[str, Any]) -> None:
        """A whole chat completion (the first choice)."""
        choices = answer.get("choices") or [{}]
        choice = choices[0] if isinstance(choices[0], dict) else {}
        message = choice.get("message") or {}
        calls = message.get("tool_calls") or ()
        if (isinstance(message.get("content"), str) and message["content"]) or not calls:
            # (an answer with neither text nor calls is still one, empty, message)
            self.message_id = new_id("msg")
            self.text.append(message.get("content") or "")
            self.order.append(("message", 0))
        for index, call in enumerate(calls):
            function = call.get("function") or {}
            self.calls[index] = _call_item(
                call.get("id"), function.get("name"), function.get("arguments")
            )
            self.order.append(("call", index))
        self.finish_reason = choice.get("finish_reason")
        self.usage = answer.get("usage") if isinstance(answer.get("usage"), dict) else None


def _call_item(call_id: Any, name: Any, arguments: Any) -> dict[str, Any]:
    return {
        "id": new_id("fc"),
        "type": "function_call",
        "call_id": call_id if isinstance(call_id, str) and call_id else new_id("call"),
        "name": name if isinstance(name, str) else "",
        "arguments": arguments if isinstance(arguments, str) else "",
    }


def usage_of(chat_usage: dict[str, Any] | None) -> dict[str, Any] | None:
    if not chat_usage:
        return None
    prompt = int(chat_usage.get("prompt_tokens") or 0)
    completion = int(chat_usage.get("completion_tokens") or 0)
    return {
        "input_tokens": prompt,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": completion,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": prompt + completion,
    }


def response_object(
    response_id: str,
    created_at: int,
    model: str,
    request: ResponsesRequest,
    output: Output | None,
    status: Literal["in_progress", "completed", "incomplete", "failed"],
    error: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A Responses ``response`` object."""
    incomplete = None
    if status == "completed" and output is not None and output.finish_reason == "length":
        status = "incomplete"
    if status == "incomplete":
        incomplete = {"reason": "max_output_tokens"}
    fmt = request.text.format if request.text and request.text.format else TextFormat()
    return {
        "id": response_id,
        "object": "response",
        "created_at": created_at,
        "status": status,
        "error": error,
        "incomplete_details": incomplete,
        "instructions": request.instructions,
        "max_output_tokens": request.max_output_tokens,
        "model": model,
        "output": output.items(done=status != "in_progress") if output is not None else [],
        "parallel_tool_calls": request.parallel_tool_calls is not False,
        "previous_response_id": request.previous_response_id,
        "store": request.store,
        "temperature": request.temperature,
        "text": {"format": msgspec.to_builtins(fmt)},
        "tool_choice": request.tool_choice or "auto",
        "tools": request.tools or [],
        "top_p": request.top_p,
        "usage": usage_of(output.usage) if output is not None else None,
        "metadata": request.metadata or {},
        "user": request.user,
    }


class StreamTranslator:
    """Chat completion chunks in, Responses stream events out (each a dict with ``type``
    and ``sequence_number``), in the order the openai SDK's stream helpers expect."""

    def __init__(self, response_id: str, model: str, request: ResponsesRequest) -> None:
        self.response_id = response_id
        self.created_at = int(time.time())
        self.model = model
        self.request = request
        self.output = Output()
        self._sequence = 0

    def _event(self, kind: str, **fields: Any) -> dict[str, Any]:
        event = {"type": kind, "sequence_number": self._sequence, **fields}
        self._sequence += 1
        return event

    def response(self, status: Any, error: dict[str, Any] | None = None) -> dict[str, Any]:
        return response_object(
            self.response_id, self.created_at, self.model, self.request, self.output, status, error
        )

    def start(self) -> list[dict[str, Any]]:
        snapshot = self.response("in_progress")
        return [
            self._event("response.created", response=snapshot),
            self._event("response.in_progress", response=snapshot),
        ]

    def chunk(self, chunk: dict[str, Any]) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = []
        if isinstance(chunk.get("usage"), dict):
            self.output.usage = chunk["usage"]
        choices = chunk.get("choices")
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
            return events
        choice = choices[0]
        if choice.get("finish_reason"):
            self.output.finish_reason = choice["finish_reason"]
        delta = choice.get("delta") or {}
        content = delta.get("content")
        if isinstance(content, str) and content:
            events.extend(self._text(content))
        for call in delta.get("tool_calls") or ():
            if isinstance(call, dict):
                events.extend(self._call(call))
        return events

    def _index_of(self, key: tuple[str, int]) -> int:
        return self.output.order.index(key)

    def _open_message(self) -> list[dict[str, Any]]:
        out = self.output
        out.message_id = new_id("msg")
        out.order.append(("message", 0))
        index = self._index_of(("message", 0))
        return [
            self._event(
                "response.output_item.added",
                output_index=index,
                item=out.message_item("in_progress"),
            ),
            self._event(
                "response.content_part.added",
                item_id=out.message_id,
                output_index=index,
                content_index=0,
                part={"type": "output_text", "text": "", "annotations": []},
            ),
        ]

    def _text(self, content: str) -> list[dict[str, Any]]:
        out = self.output
        events = self._open_message() if out.message_id is None else []
        out.text.append(content)
        events.append(
            self._event(
                "response.output_text.delta",
                item_id=out.message_id,
                output_index=self._index_of(("message", 0)),
                content_index=0,
                delta=content,
                logprobs=[],
            )
        )
        return events

    def _call(self, call: dict[str, Any]) -> list[dict[str, Any]]:
        index = call.get("index", len(self.output.calls))
        index = index if isinstance(index, int) else len(self.output.calls)
        function = call.get("function") or {}
        events = []
        item = self.output.calls.get(index)
        if item is None:
            item = self.output.calls[index] = _call_item(call.get("id"), function.get("name"), "")
            self.output.order.append(("call", index))
            events.append(
                self._event(
                    "response.output_item.added",
                    output_index=self._index_of(("call", index)),
                    item={**item, "status": "in_progress"},
                )
            )
        elif not item["name"] and isinstance(function.get("name"), str):
            item["name"] = function["name"]
        arguments = function.get("arguments")
        if isinstance(arguments, str) and arguments:
            item["arguments"] += arguments
            events.append(
                self._event(
                    "response.function_call_arguments.delta",
                    item_id=item["id"],
                    output_index=self._index_of(("call", index)),
                    delta=arguments,
                )
            )
        return events

    def finish(self) -> list[dict[str, Any]]:
        """The closing events: each item done, then ``response.completed`` (or
        ``response.incomplete`` when the token limit cut the answer)."""
        out = self.output
        events = []
        if out.message_id is None and not out.calls:
            events.extend(self._open_message())  # no text and no call: one empty message
        for kind, key in out.order:
            index = self._index_of((kind, key))
            if kind == "message":
                events.append(
                    self._event(
                        "response.output_text.done",
                        item_id=out.message_id,
                        output_index=index,
                        content_index=0,
                        text="".join(out.text),
                        logprobs=[],
                    )
                )
                events.append(
                    self._event(
                        "response.content_part.done",
                        item_id=out.message_id,
                        output_index=index,
                        content_index=0,
                        part=out.text_part(),
                    )
                )
                events.append(
                    self._event(
                        "response.output_item.done",
                        output_index=index,
                        item=out.message_item("completed"),
                    )
                )
            else:
                item = out.calls[key]
                events.append(
                    self._event(
                        "response.function_call_arguments.done",
                        item_id=item["id"],
                        output_index=index,
                        name=item["name"],
                        arguments=item["arguments"],
                    )
                )
                events.append(
                    self._event(
                        "response.output_item.done",
                        output_index=index,
                        item={**item, "status": "completed"},
                    )
                )
        final = self.response("completed")
        kind = "response.incomplete" if final["status"] == "incomplete" else "response.completed"
        events.append(self._event(kind, response=final))
        return events

    def fail(self, code: str, message: str) -> list[dict[str, Any]]:
        error = {"code": code, "message": message}
        return [
            self._event("error", code=code, message=message, param=None),
            self._event("response.failed", response=self.response("failed", error)),
        ]
