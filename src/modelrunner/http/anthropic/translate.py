"""Anthropic Messages to OpenAI chat completions, and the answers (whole or streamed) back.
Pure: no I/O; ids are made by the caller-visible ``new_id`` so tests can pass their own.

Mapping: ``system`` -> a system message; text blocks -> message text; an assistant's
``tool_use`` blocks -> ``tool_calls`` (arguments as JSON text); a user's ``tool_result``
blocks -> ``tool`` messages (before the user's own text, as OpenAI orders them);
``tools`` -> function tools; ``tool_choice`` auto/any/tool/none -> auto/required/the
function/none (a ``tool`` naming no declared tool is refused), ``disable_parallel_tool_use``
-> ``parallel_tool_calls`` false; ``stop_sequences`` -> ``stop``; finish_reason ``length``
-> stop_reason ``max_tokens``, also beside calls (one was cut). Images and documents are
refused (no engine of mr serves vision yet), as is any block kind it does not know.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any, Final

import msgspec

from modelrunner.http.anthropic.shapes import (
    AnthropicMessage,
    AnthropicTool,
    Content,
    CountTokensRequest,
    MessagesRequest,
    ToolChoice,
)

_STOP_REASON: Final = {
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
}
_SKIPPED_BLOCKS: Final = frozenset({"thinking", "redacted_thinking"})


class InvalidMessages(ValueError):
    """A request mr cannot serve (HTTP 400, ``invalid_request_error``)."""


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:24]}"


# -- requests -----------------------------------------------------------------------
def _text_of(content: Content | None, where: str) -> str:
    """The text of ``system`` or of a tool result: a string or text blocks."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    parts = []
    for index, block in enumerate(content):
        kind = block.get("type")
        if kind == "text" and isinstance(block.get("text"), str):
            parts.append(block["text"])
        elif kind in _SKIPPED_BLOCKS:
            continue
        else:
            raise InvalidMessages(
                f"{where}[{index}]: a block of type {kind!r} is not supported here (text only)"
            )
    return "\n".join(parts)


def _user_messages(content: Content, where: str) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"role": "user", "content": content}]
    out: list[dict[str, Any]] = []
    texts: list[str] = []
    for index, block in enumerate(content):
        kind = block.get("type")
        here = f"{where}[{index}]"
        if kind == "text":
            texts.append(_block_text(block, here))
        elif kind == "tool_result":
            call_id = block.get("tool_use_id")
            if not isinstance(call_id, str) or not call_id:
                raise InvalidMessages(f"{here}.tool_use_id: required for a tool_result block")
            result = _text_of(block.get("content"), f"{here}.content")
            if block.get("is_error"):
                result = f"Error: {result}"
            out.append({"role": "tool", "tool_call_id": call_id, "content": result})
        elif kind in _SKIPPED_BLOCKS:
            continue
        else:
            raise _unsupported(kind, here)
    if texts:
        out.append({"role": "user", "content": "\n".join(texts)})
    return out


def _assistant_message(content: Content, where: str) -> dict[str, Any]:
    if isinstance(content, str):
        return {"role": "assistant", "content": content}
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for index, block in enumerate(content):
        kind = block.get("type")
        here = f"{where}[{index}]"
        if kind == "text":
            texts.append(_block_text(block, here))
        elif kind == "tool_use":
            name, call_id = block.get("name"), block.get("id")
            if not isinstance(name, str) or not isinstance(call_id, str):
                raise InvalidMessages(f"{here}: a tool_use block needs id and name")
            arguments = msgspec.json.encode(block.get("input") or {}).decode()
            calls.append({"id": call_id, "type": "function",
                          "function": {"name": name, "arguments": arguments}})  # fmt: skip
        elif kind in _SKIPPED_BLOCKS:
            continue
        else:
            raise _unsupported(kind, here)
    message: dict[str, Any] = {"role": "assistant", "content": "\n".join(texts)}
    if calls:
        message["tool_calls"] = calls
    return message


def _block_text(block: dict[str, Any], where: str) -> str:
    text = block.get("text")
    if not isinstance(text, str):
        raise InvalidMessages(f"{where}.text: a text block needs a string text")
    return text


def _unsupported(kind: Any, where: str) -> InvalidMessages:
    if kind in ("image", "document"):
        return InvalidMessages(
            f"{where}: {kind} blocks are not supported yet (no engine of mr serves vision models)"
        )
    return InvalidMessages(f"{where}: unsupported content block type {kind!r}")


def messages(system: Content | None, turns: list[AnthropicMessage]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    system_text = _text_of(system, "system")
    if system_text:
        out.append({"role": "system", "content": system_text})
    for index, turn in enumerate(turns):
        where = f"messages[{index}].content"
        if turn.role == "user":
            out.extend(_user_messages(turn.content, where))
        else:
            out.append(_assistant_message(turn.content, where))
    return out


def tools(declared: list[AnthropicTool]) -> list[dict[str, Any]]:
    out = []
    for index, tool in enumerate(declared):
        if tool.type not in (None, "custom"):
            raise InvalidMessages(
                f"tools[{index}].type: server tools ({tool.type!r}) are not supported"
            )
        function: dict[str, Any] = {"name": tool.name, "parameters": tool.input_schema}
        if tool.description:
            function["description"] = tool.description
        out.append({"type": "function", "function": function})
    return out


def tool_choice(choice: ToolChoice, names: frozenset[str] | None = None) -> tuple[Any, bool | None]:
    """OpenAI's ``tool_choice`` and ``parallel_tool_calls`` (None: leave it out).
    ``names``: the declared tools, which a ``{"type": "tool"}`` choice must name one of."""
    parallel = (
        None if choice.disable_parallel_tool_use is None else not choice.disable_parallel_tool_use
    )
    if choice.type == "tool":
        if not choice.name:
            raise InvalidMessages("tool_choice.name: required when tool_choice.type is 'tool'")
        if names is not None and choice.name not in names:
            # Refused here, so the 400 names Anthropic's field rather than the engine's.
            raise InvalidMessages(
                f"tool_choice.name: {choice.name!r} is not among the tools "
                f"({', '.join(sorted(names))})"
            )
        return {"type": "function", "function": {"name": choice.name}}, parallel
    return {"auto": "auto", "any": "required", "none": "none"}[choice.type], parallel


def _tool_fields(req: MessagesRequest | CountTokensRequest) -> dict[str, Any]:
    body: dict[str, Any] = {}
    if req.tools:
        body["tools"] = tools(req.tools)
    if req.tool_choice is not None:
        if not req.tools and req.tool_choice.type != "none":
            raise InvalidMessages("tool_choice: requires tools")
        choice, parallel = tool_choice(req.tool_choice, frozenset(t.name for t in req.tools or ()))
        if req.tools:
            body["tool_choice"] = choice
        if parallel is not None and req.tools:
            body["parallel_tool_calls"] = parallel
    return body


def chat_request(req: MessagesRequest) -> dict[str, Any]:
    """The OpenAI chat/completions body for a Messages request."""
    body: dict[str, Any] = {
        "messages": messages(req.system, req.messages),
        "max_tokens": req.max_tokens,
    }
    if req.stop_sequences:
        body["stop"] = req.stop_sequences
    for name in ("temperature", "top_p", "top_k"):
        value = getattr(req, name)
        if value is not None:
            body[name] = value
    body.update(_tool_fields(req))
    return body


def count_request(req: CountTokensRequest) -> dict[str, Any]:
    """A ``POST /tokenize`` of the chat (vLLM's shape): the engine applies the model's own
    chat template with the generation prompt, so the count is what a real call costs."""
    return {"messages": messages(req.system, req.messages), "add_generation_prompt": True,
            **_tool_fields(req)}  # fmt: skip


def input_tokens(answer: dict[str, Any]) -> int:
    count = answer.get("count")
    return count if isinstance(count, int) else 0


# -- answers ------------------------------------------------------------------------
def stop_reason(finish_reason: Any, called_tools: bool, matched: Any = None) -> str:
    # Cut by max_tokens, even beside complete calls: a call was cut (and dropped), as
    # Anthropic says max_tokens for a tool_use block cut short.
    if finish_reason == "length":
        return "max_tokens"
    if called_tools:
        return "tool_use"
    if finish_reason == "stop" and isinstance(matched, str):
        return "stop_sequence"
    return _STOP_REASON.get(finish_reason, "end_turn")


def stop_sequence(finish_reason: Any, matched: Any) -> str | None:
    """The stop sequence that ended the answer, from the engine's ``stop_reason`` (vLLM's
    field, which mr's llama.cpp engine sets too): a string, not a stop token's id."""
    return matched if finish_reason == "stop" and isinstance(matched, str) else None


def _arguments(text: Any) -> dict[str, Any]:
    if isinstance(text, dict):
        return text
    try:
        value = msgspec.json.decode(text or "{}")
    except (msgspec.DecodeError, TypeError):
        return {"arguments": text}  # not JSON: keep the model's text rather than lose it
    return value if isinstance(value, dict) else {"value": value}


def _usage(usage: Any, counted: int = 0) -> dict[str, int]:
    usage = usage if isinstance(usage, dict) else {}
    prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
    return {
        "input_tokens": prompt if isinstance(prompt, int) else 0,
        "output_tokens": completion if isinstance(completion, int) else counted,
    }


def message_answer(
    answer: dict[str, Any], model: str, make_id: Callable[[str], str] = new_id
) -> dict[str, Any]:
    """A whole OpenAI chat completion as an Anthropic message."""
    choices = answer.get("choices") or [{}]
    choice = choices[0] if isinstance(choices[0], dict) else {}
    matched = choice.get("stop_reason")
    message = choice.get("message") or {}
    content: list[dict[str, Any]] = []
    if message.get("content"):
        content.append({"type": "text", "text": message["content"]})
    calls = message.get("tool_calls") or []
    for call in calls:
        function = call.get("function") or {}
        content.append({
            "type": "tool_use",
            "id": call.get("id") or make_id("toolu"),
            "name": function.get("name", ""),
            "input": _arguments(function.get("arguments")),
        })  # fmt: skip
    return {
        "id": make_id("msg"),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop_reason(choice.get("finish_reason"), bool(calls), matched),
        "stop_sequence": stop_sequence(choice.get("finish_reason"), matched),
        "usage": _usage(answer.get("usage")),
    }


Event = tuple[str, dict[str, Any]]


class AnthropicStream:
    """OpenAI stream chunks -> Anthropic's event sequence: ``start`` (message_start), then
    per chunk content_block_start/delta/stop as text and tool calls open and close, then
    ``finish`` (message_delta with stop_reason and usage, message_stop)."""

    __slots__ = (
        "_block",
        "_calls",
        "_count",
        "_finish",
        "_index",
        "_make_id",
        "_matched",
        "_model",
        "_tool",
        "_usage",
    )

    def __init__(self, model: str, make_id: Callable[[str], str] = new_id) -> None:
        self._model = model
        self._make_id = make_id
        self._index = -1  # of the open block
        self._block: str | None = None  # "text" or "tool_use"
        self._tool: Any = None  # the OpenAI index of the open tool call
        self._calls = 0
        self._count = 0
        self._usage: Any = None
        self._finish: Any = None
        self._matched: Any = None  # the engine's stop_reason: which stop string matched

    def start(self) -> list[Event]:
        message: dict[str, Any] = {
            "id": self._make_id("msg"),
            "type": "message",
            "role": "assistant",
            "model": self._model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": 0, "output_tokens": 0},
        }
        return [("message_start", {"type": "message_start", "message": message})]

    def feed(self, chunk: dict[str, Any]) -> list[Event]:
        if chunk.get("usage"):
            self._usage = chunk["usage"]
        choices = chunk.get("choices")
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
            return []
        choice = choices[0]
        if choice.get("finish_reason"):
            self._finish = choice["finish_reason"]
            self._matched = choice.get("stop_reason")
        delta = choice.get("delta") or {}
        out: list[Event] = []
        text = delta.get("content")
        if text:
            if self._block != "text":
                out += self._open({"type": "text", "text": ""}, "text")
            self._count += 1
            out.append(self._delta({"type": "text_delta", "text": text}))
        for piece in delta.get("tool_calls") or ():
            if not isinstance(piece, dict):
                continue
            function = piece.get("function") or {}
            which = piece.get("index", self._calls)
            if self._block != "tool_use" or which != self._tool:
                self._tool = which
                self._calls += 1
                call_id = piece.get("id") or self._make_id("toolu")
                name = function.get("name") or ""
                block: dict[str, Any] = {
                    "type": "tool_use",
                    "id": call_id,
                    "name": name,
                    "input": {},
                }
                out += self._open(block, "tool_use")
            if function.get("arguments"):
                self._count += 1
                out.append(
                    self._delta({"type": "input_json_delta", "partial_json": function["arguments"]})
                )
        return out

    def finish(self) -> list[Event]:
        out = self._close()
        delta = {
            "stop_reason": stop_reason(self._finish, self._calls > 0, self._matched),
            "stop_sequence": stop_sequence(self._finish, self._matched),
        }
        out.append(("message_delta", {"type": "message_delta", "delta": delta,
                                      "usage": _usage(self._usage, self._count)}))  # fmt: skip
        out.append(("message_stop", {"type": "message_stop"}))
        return out

    def _open(self, block: dict[str, Any], kind: str) -> list[Event]:
        out = self._close()
        self._index += 1
        self._block = kind
        out.append(("content_block_start", {"type": "content_block_start", "index": self._index,
                                            "content_block": block}))  # fmt: skip
        return out

    def _close(self) -> list[Event]:
        if self._block is None:
            return []
        self._block = None
        return [("content_block_stop", {"type": "content_block_stop", "index": self._index})]

    def _delta(self, delta: dict[str, Any]) -> Event:
        return (
            "content_block_delta",
            {"type": "content_block_delta", "index": self._index, "delta": delta},
        )


def error_type(status: int) -> str:
    """Anthropic's error ``type`` for an HTTP status."""
    return {
        400: "invalid_request_error",
        401: "authentication_error",
        403: "permission_error",
        404: "not_found_error",
        413: "request_too_large",
        429: "rate_limit_error",
        503: "overloaded_error",
        504: "timeout_error",
        529: "overloaded_error",
    }.get(status, "api_error" if status >= 500 else "invalid_request_error")
