"""What the request inspector keeps of a body: pure functions, no I/O.

- ``recorded_text``: a request or answer body as text, with base64 media (images, audio,
  generated PNGs) shortened and anything over ``MAX_RECORDED`` bytes cut.
- ``StreamAssembler``: an OpenAI server-sent-event stream, fed chunk by chunk as it passes,
  reassembled into the one JSON answer the same request without ``stream`` would have got.
"""

from __future__ import annotations

import re
from typing import Any, Final

import msgspec

MAX_RECORDED: Final = 64 * 1024  # bytes of one recorded body
MEDIA_KEPT: Final = 100  # characters of a base64 payload that stay visible
_MEDIA_MIN: Final = 256  # shorter strings are never treated as media
_BASE64: Final = re.compile(r"[A-Za-z0-9+/=_\-\r\n]+")
_DATA_URL: Final = re.compile(r"data:[^,;]*(;[^,]*)?;base64,")

_json_decode: Final = msgspec.json.Decoder()
_json_encode: Final = msgspec.json.Encoder()


def shorten_base64(text: str) -> str:
    """A data URL or raw base64 payload cut to ``MEDIA_KEPT`` characters, saying how many
    were dropped; any other string unchanged."""
    if len(text) < _MEDIA_MIN:
        return text
    prefix = ""
    payload = text
    if text.startswith("data:"):
        found = _DATA_URL.match(text)
        if found is None:
            return text
        prefix, payload = text[: found.end()], text[found.end() :]
    if len(payload) <= MEDIA_KEPT or _BASE64.fullmatch(payload) is None:
        return text
    dropped = len(payload) - MEDIA_KEPT
    return f"{prefix}{payload[:MEDIA_KEPT]}...[truncated {dropped} chars]"


def shorten_media(value: Any) -> Any:
    """``value`` (decoded JSON) with every base64 payload in it shortened."""
    if isinstance(value, str):
        return shorten_base64(value)
    if isinstance(value, list):
        return [shorten_media(item) for item in value]
    if isinstance(value, dict):
        return {key: shorten_media(item) for key, item in value.items()}
    return value


def cut(text: str, limit: int = MAX_RECORDED) -> str:
    """``text`` within ``limit`` UTF-8 bytes, saying how much was left out."""
    raw = text.encode()
    if len(raw) <= limit:
        return text
    kept = raw[:limit].decode("utf-8", "ignore")
    return f"{kept}...[truncated {len(raw) - len(kept.encode())} bytes]"


def recorded_text(body: bytes | str) -> str:
    """A body as the inspector shows it: JSON with base64 media shortened, other bytes as
    text (invalid UTF-8 replaced), cut at ``MAX_RECORDED`` bytes."""
    raw = body.encode() if isinstance(body, str) else body
    try:
        decoded = _json_decode.decode(raw)
    except msgspec.DecodeError:
        return cut(raw.decode("utf-8", "replace"))
    return cut(_json_encode.encode(shorten_media(decoded)).decode())


class _Choice:
    __slots__ = ("checks", "content", "finish_reason", "reasoning", "role", "text", "tool_calls")

    def __init__(self) -> None:
        self.role = "assistant"
        self.content: list[str] = []
        self.reasoning: list[str] = []
        self.text: list[str] = []
        self.tool_calls: dict[int, dict[str, Any]] = {}
        self.finish_reason: Any = None
        self.checks: dict[str, Any] = {}  # the llama.cpp engine's schema check, if any


# What a stream's last chunk says of its choice beside finish_reason (the llama.cpp engine's
# check of a structured answer), kept in the assembled answer.
_CHECK_FIELDS = ("schema_check", "schema_error")


class StreamAssembler:
    """Reassembles an OpenAI chat or text completion stream (``data: {...}`` events).

    ``feed`` takes the bytes as they pass (events may be split anywhere); ``result`` is the
    final answer as one JSON object, or None when no event was a JSON object. The text kept
    is bounded by ``limit`` bytes (``truncated`` says when more was dropped).
    """

    def __init__(self, limit: int = MAX_RECORDED) -> None:
        self._pending = b""
        self._last: dict[str, Any] | None = None
        self._usage: Any = None
        self._choices: dict[int, _Choice] = {}
        self._kept = 0
        self._limit = limit
        self.error: Any = None  # a mid-stream ``{"error": ...}`` event
        self.truncated = False

    def feed(self, chunk: bytes) -> None:
        data = self._pending + chunk if self._pending else chunk
        lines = data.split(b"\n")
        self._pending = lines.pop()
        if len(self._pending) > self._limit:  # one endless line: not an event stream
            self._pending = b""
            self.truncated = True
        for line in lines:
            if line.startswith(b"data:"):
                self._event(line[5:].strip())

    def _event(self, data: bytes) -> None:
        if not data or data == b"[DONE]":
            return
        try:
            event = _json_decode.decode(data)
        except msgspec.DecodeError:
            return
        if not isinstance(event, dict):
            return
        if "error" in event and "choices" not in event:
            self.error = event
            return
        self._last = event
        if event.get("usage"):
            self._usage = event["usage"]
        choices = event.get("choices")
        if isinstance(choices, list):
            for choice in choices:
                if isinstance(choice, dict):
                    self._merge(choice)

    def _merge(self, choice: dict[str, Any]) -> None:
        index = choice.get("index", 0)
        index = index if isinstance(index, int) else 0
        into = self._choices.get(index)
        if into is None:
            into = self._choices[index] = _Choice()
        if choice.get("finish_reason") is not None:
            into.finish_reason = choice["finish_reason"]
            into.checks = {k: choice[k] for k in _CHECK_FIELDS if k in choice}
        if isinstance(choice.get("text"), str):
            self._keep(into.text, choice["text"])
        delta = choice.get("delta")
        if not isinstance(delta, dict):
            return
        if isinstance(delta.get("role"), str):
            into.role = delta["role"]
        if isinstance(delta.get("content"), str):
            self._keep(into.content, delta["content"])
        if isinstance(delta.get("reasoning_content"), str):
            self._keep(into.reasoning, delta["reasoning_content"])
        for call in delta.get("tool_calls") or ():
            if isinstance(call, dict):
                self._merge_call(into, call)

    def _merge_call(self, into: _Choice, call: dict[str, Any]) -> None:
        index = call.get("index", len(into.tool_calls))
        index = index if isinstance(index, int) else len(into.tool_calls)
        known = into.tool_calls.setdefault(
            index, {"id": None, "type": "function", "function": {"name": "", "arguments": ""}}
        )
        if call.get("id"):
            known["id"] = call["id"]
        function = call.get("function")
        if isinstance(function, dict):
            if isinstance(function.get("name"), str):
                known["function"]["name"] += function["name"]
            if isinstance(function.get("arguments"), str):
                pieces: list[str] = []
                self._keep(pieces, function["arguments"])
                known["function"]["arguments"] += "".join(pieces)

    def _keep(self, into: list[str], text: str) -> None:
        if self._kept + len(text) > self._limit:
            self.truncated = True
            text = text[: max(0, self._limit - self._kept)]
        self._kept += len(text)
        if text:
            into.append(text)

    def result(self) -> dict[str, Any] | None:
        if self._last is None:
            return None
        chat = str(self._last.get("object", "")).startswith("chat.")
        final = {k: v for k, v in self._last.items() if k not in ("choices", "usage")}
        final["object"] = "chat.completion" if chat else "text_completion"
        final["choices"] = [
            self._chat_choice(i, c) if chat else self._text_choice(i, c)
            for i, c in sorted(self._choices.items())
        ]
        if self._usage is not None:
            final["usage"] = self._usage
        return final

    @staticmethod
    def _chat_choice(index: int, choice: _Choice) -> dict[str, Any]:
        message: dict[str, Any] = {"role": choice.role, "content": "".join(choice.content)}
        if choice.reasoning:
            message["reasoning_content"] = "".join(choice.reasoning)
        if choice.tool_calls:
            message["tool_calls"] = [c for _, c in sorted(choice.tool_calls.items())]
        return {
            "index": index,
            "message": message,
            "finish_reason": choice.finish_reason,
            **choice.checks,
        }

    @staticmethod
    def _text_choice(index: int, choice: _Choice) -> dict[str, Any]:
        return {"index": index, "text": "".join(choice.text), "finish_reason": choice.finish_reason}
