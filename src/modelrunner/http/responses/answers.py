"""OpenAI chat completions -> Responses answers (pure, no I/O).

``Output``: the answer's items (a message, function calls) built from a whole chat completion
(``add_completion``) or chunk by chunk (``ResponsesStream``, which also says each step as the
Responses stream events).
"""

from __future__ import annotations

import time
from typing import Any, Literal

import msgspec

from modelrunner.http.responses.shapes import ResponsesRequest, TextFormat, new_id


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
    finish = output.finish_reason if output is not None else None
    if status == "completed" and finish in ("length", "schema_invalid"):
        status = "incomplete"
    if status == "incomplete":
        # schema_invalid: the text failed its format's schema when checked after generation.
        incomplete = {
            "reason": "schema_invalid" if finish == "schema_invalid" else "max_output_tokens"
        }
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


class ResponsesStream:
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
