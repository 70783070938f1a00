"""Reassembling the streams of the translated APIs for the request inspector: pure, no I/O.

Each assembler is fed the answer's bytes as they pass (split anywhere) and gives the one
JSON answer the same request without streaming would have got:

- ``OllamaAssembler``: Ollama's NDJSON lines (``/api/chat``, ``/api/generate``) become the
  final line (``done``, ``done_reason``, counts and durations) with the whole
  ``message`` (content, thinking, tool calls) or ``response`` (and ``thinking``) in it.
- ``AnthropicAssembler``: Anthropic's server-sent events become the ``message`` object of
  ``message_start`` with every content block whole (text, thinking, ``tool_use`` with its
  ``input`` parsed) and ``message_delta``'s stop reason and usage.

Like ``StreamAssembler`` they keep at most ``limit`` bytes of text (``truncated`` says when
more was dropped) and an error event goes to ``error``.
"""

from __future__ import annotations

from typing import Any, Final

import msgspec

from modelrunner.http.inspector.body import MAX_RECORDED

_json_decode: Final = msgspec.json.Decoder()


class _Lines:
    """Complete lines of a byte stream, with the text kept within a limit."""

    def __init__(self, limit: int) -> None:
        self._pending = b""
        self._kept = 0
        self._limit = limit
        self.error: Any = None
        self.truncated = False

    def _lines(self, chunk: bytes) -> list[bytes]:
        data = self._pending + chunk if self._pending else chunk
        lines = data.split(b"\n")
        self._pending = lines.pop()
        if len(self._pending) > self._limit:  # one endless line: not this API's stream
            self._pending = b""
            self.truncated = True
        return lines

    def _keep(self, into: list[str], text: Any) -> None:
        if not isinstance(text, str):
            return
        if self._kept + len(text) > self._limit:
            self.truncated = True
            text = text[: max(0, self._limit - self._kept)]
        self._kept += len(text)
        if text:
            into.append(text)


def _object(data: bytes) -> dict[str, Any] | None:
    try:
        found = _json_decode.decode(data)
    except msgspec.DecodeError:
        return None
    return found if isinstance(found, dict) else None


class OllamaAssembler(_Lines):
    """Reassembles an Ollama NDJSON chat or generate stream."""

    def __init__(self, limit: int = MAX_RECORDED) -> None:
        super().__init__(limit)
        self._last: dict[str, Any] | None = None
        self._role: Any = None
        self._content: list[str] = []
        self._thinking: list[str] = []
        self._tool_calls: list[Any] = []
        self._response: list[str] = []
        self._said_response = False

    def feed(self, chunk: bytes) -> None:
        for line in self._lines(chunk):
            event = _object(line.strip()) if line.strip() else None
            if event is None:
                continue
            if "error" in event:
                self.error = event
                continue
            self._last = event
            message = event.get("message")
            if isinstance(message, dict):
                self._role = message.get("role", self._role)
                self._keep(self._content, message.get("content"))
                self._keep(self._thinking, message.get("thinking"))
                calls = message.get("tool_calls")
                if isinstance(calls, list):
                    self._tool_calls += calls
            if "response" in event:
                self._said_response = True
                self._keep(self._response, event["response"])
                self._keep(self._thinking, event.get("thinking"))

    def result(self) -> dict[str, Any] | None:
        if self._last is None:
            return None
        final = dict(self._last)
        if self._said_response:
            final["response"] = "".join(self._response)
            if self._thinking:
                final["thinking"] = "".join(self._thinking)
        else:
            message: dict[str, Any] = {
                "role": self._role or "assistant",
                "content": "".join(self._content),
            }
            if self._thinking:
                message["thinking"] = "".join(self._thinking)
            if self._tool_calls:
                message["tool_calls"] = self._tool_calls
            final["message"] = message
        return final


class AnthropicAssembler(_Lines):
    """Reassembles an Anthropic Messages event stream (``data: {...}`` lines)."""

    def __init__(self, limit: int = MAX_RECORDED) -> None:
        super().__init__(limit)
        self._message: dict[str, Any] | None = None
        self._blocks: dict[int, dict[str, Any]] = {}
        self._parts: dict[int, list[str]] = {}

    def feed(self, chunk: bytes) -> None:
        for line in self._lines(chunk):
            if line.startswith(b"data:"):
                event = _object(line[5:].strip())
                if event is not None:
                    self._event(event)

    def _event(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        index = event.get("index", 0)
        index = index if isinstance(index, int) else 0
        if kind == "error":
            self.error = event
        elif kind == "message_start" and isinstance(event.get("message"), dict):
            self._message = dict(event["message"])
        elif kind == "content_block_start" and isinstance(event.get("content_block"), dict):
            self._blocks[index] = dict(event["content_block"])
            self._parts[index] = []
        elif kind == "content_block_delta" and isinstance(event.get("delta"), dict):
            delta = event["delta"]
            for field in ("text", "partial_json", "thinking"):
                self._keep(self._parts.setdefault(index, []), delta.get(field))
            if isinstance(delta.get("signature"), str):
                self._blocks.setdefault(index, {})["signature"] = delta["signature"]
        elif kind == "message_delta" and self._message is not None:
            delta = event.get("delta")
            if isinstance(delta, dict):
                self._message.update(delta)
            usage = event.get("usage")
            if isinstance(usage, dict):
                known = self._message.get("usage")
                self._message["usage"] = {**(known if isinstance(known, dict) else {}), **usage}

    def result(self) -> dict[str, Any] | None:
        if self._message is None:
            return None
        final = dict(self._message)
        final["content"] = [self._block(i) for i in sorted(self._blocks)]
        return final

    def _block(self, index: int) -> dict[str, Any]:
        block = dict(self._blocks[index])
        text = "".join(self._parts.get(index, ()))
        kind = block.get("type")
        if kind == "tool_use":
            if text:
                parsed = _object(text.encode())
                block["input"] = parsed if parsed is not None else text
        elif kind == "thinking":
            block["thinking"] = text
        elif kind == "text":
            block["text"] = text
        return block
