"""Ollama requests to OpenAI calls, and OpenAI answers (whole or streamed) back to Ollama's
shapes. Pure: no I/O, the clock is passed in (``now``: seconds, ``perf_counter`` style), so
tables of inputs and outputs test everything here.

A request mr cannot honour is refused with ``BadRequest`` (HTTP 400) naming the field;
options it ignores are returned as warnings for the answer's ``Warning`` header.
"""

from __future__ import annotations

import math
import re
import time
from datetime import UTC, datetime
from typing import Any, Final

import msgspec

from modelrunner.http.ollama.shapes import (
    Format,
    KeepAlive,
    OllamaChatRequest,
    OllamaGenerateRequest,
    OllamaMessage,
    OllamaOptions,
)

_OPTION_NAMES: Final = frozenset(OllamaOptions.__struct_fields__)
# Ollama option -> OpenAI field, where the names differ.
_RENAMED: Final = {"num_predict": "max_tokens"}
_NS: Final = 1_000_000_000
# keep_alive: a plain number of seconds, or a Go duration (time.ParseDuration's syntax).
_NUMBER: Final = re.compile(r"[-+]?([0-9]+(\.[0-9]*)?|\.[0-9]+)")
_GO_DURATION_PART: Final = re.compile(r"([0-9]+(?:\.[0-9]*)?|\.[0-9]+)(ns|us|µs|μs|ms|s|m|h)")
_GO_DURATION: Final = re.compile(
    r"[-+]?(?:(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:ns|us|µs|μs|ms|s|m|h))+"
)
_GO_UNIT_SECONDS: Final = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3,
                           "s": 1.0, "m": 60.0, "h": 3600.0}  # fmt: skip


class BadRequest(ValueError):
    """A request mr cannot honour (HTTP 400); ``field`` names what is wrong."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


# -- requests -----------------------------------------------------------------------
def sampling(options: dict[str, Any] | None) -> tuple[dict[str, Any], list[str]]:
    """OpenAI sampling fields from Ollama ``options``, and warnings for the ignored ones."""
    if not options:
        return {}, []
    known = {k: v for k, v in options.items() if k in _OPTION_NAMES}
    try:
        parsed = msgspec.convert(known, OllamaOptions)
    except msgspec.ValidationError as exc:
        raise BadRequest(f"Invalid options: {exc}", "options") from None
    fields: dict[str, Any] = {}
    for name in _OPTION_NAMES:
        value = getattr(parsed, name)
        if value is None:
            continue
        if name == "num_predict" and value < 0:
            continue  # -1 (until the end) and -2 (fill the context): no limit
        if name == "stop" and isinstance(value, str):
            value = [value]
        fields[_RENAMED.get(name, name)] = value
    warnings = []
    if "num_ctx" in options:
        warnings.append("option num_ctx is ignored: the context size is the manifest's")
    ignored = sorted(k for k in options if k not in _OPTION_NAMES and k != "num_ctx")
    if ignored:
        warnings.append(f"options ignored: {', '.join(ignored)}")
    return fields, warnings


def response_format(fmt: Format | None) -> dict[str, Any] | None:
    """Ollama's ``format``: ``"json"`` or a JSON schema, as OpenAI's ``response_format``."""
    if fmt is None or fmt == "":
        return None
    if fmt == "json":
        return {"type": "json_object"}
    if isinstance(fmt, dict):
        return {"type": "json_schema", "json_schema": {"name": "answer", "schema": fmt}}
    raise BadRequest(f'Invalid format {fmt!r}: expected "json" or a JSON schema', "format")


def chat_messages(messages: list[OllamaMessage]) -> list[dict[str, Any]]:
    """Ollama messages as OpenAI's: tool calls get ids, tool results the id they answer
    (in order: Ollama's tool messages answer the calls before them one by one)."""
    out: list[dict[str, Any]] = []
    pending: list[str] = []  # ids of tool calls not answered yet
    serial = 0
    for index, message in enumerate(messages):
        if message.images:
            raise BadRequest(
                "Images are not supported yet: no engine of mr serves vision models",
                f"messages[{index}].images",
            )
        entry: dict[str, Any] = {"role": message.role, "content": message.content}
        if message.tool_calls:
            calls: list[dict[str, Any]] = []
            for call in message.tool_calls:
                function = call.get("function") if isinstance(call, dict) else None
                if not isinstance(function, dict) or not isinstance(function.get("name"), str):
                    raise BadRequest(
                        "A tool call needs function.name", f"messages[{index}].tool_calls"
                    )
                call_id = f"call_{serial}"
                serial += 1
                arguments = function.get("arguments", {})
                calls.append(
                    {
                        "id": call_id,
                        "type": "function",
                        "function": {
                            "name": function["name"],
                            "arguments": arguments
                            if isinstance(arguments, str)
                            else msgspec.json.encode(arguments).decode(),
                        },
                    }
                )
            entry["tool_calls"] = calls
            pending = [c["id"] for c in calls]
        if message.role == "tool":
            entry["tool_call_id"] = pending.pop(0) if pending else f"call_{serial}"
            if message.tool_name:
                entry["name"] = message.tool_name
        out.append(entry)
    return out


def chat_request(req: OllamaChatRequest) -> tuple[dict[str, Any], list[str]]:
    """The OpenAI chat/completions body for an Ollama chat request, and warnings."""
    if not req.messages:
        raise BadRequest("messages must hold at least one message", "messages")
    body, warnings = sampling(req.options)
    body["messages"] = chat_messages(req.messages)
    if req.tools:
        body["tools"] = req.tools
    fmt = response_format(req.format)
    if fmt is not None:
        body["response_format"] = fmt
    return body, warnings


def generate_request(req: OllamaGenerateRequest) -> tuple[str, dict[str, Any], list[str]]:
    """The OpenAI operation and body for an Ollama generate request (``raw``: a completion of
    the prompt as it is; otherwise a chat turn, so the model's template applies), and warnings."""
    if req.images:
        raise BadRequest(
            "Images are not supported yet: no engine of mr serves vision models", "images"
        )
    for name in ("suffix", "template"):
        if getattr(req, name):
            raise BadRequest(
                f"{name} is not supported: the model's own chat template applies", name
            )
    if req.context:
        raise BadRequest(
            "context (tokens of an earlier answer) is not supported: send the conversation "
            "as /api/chat messages",
            "context",
        )
    body, warnings = sampling(req.options)
    if req.raw:
        if req.format:
            raise BadRequest("format is not supported with raw: true", "format")
        body["prompt"] = req.prompt
        return "completions", body, warnings
    messages = [{"role": "system", "content": req.system}] if req.system else []
    messages.append({"role": "user", "content": req.prompt})
    body["messages"] = messages
    fmt = response_format(req.format)
    if fmt is not None:
        body["response_format"] = fmt
    return "chat/completions", body, warnings


KEEP_ALIVE_FOREVER: Final = 100 * 365 * 24 * 3600.0


def keep_alive_seconds(value: KeepAlive | None) -> float | None:
    """A request's ``keep_alive`` in seconds, as Ollama reads it: a number of seconds or a
    Go duration ("5m", "1h30m", "1.5h", "300ms"); 0 unloads after the request, a negative
    value keeps the model loaded (``inf``). None when the request has none."""
    if value is None:
        return None
    if isinstance(value, bool):  # JSON true/false is not a duration
        raise BadRequest(f"Invalid keep_alive {value!r}: expected a duration", "keep_alive")
    if isinstance(value, str):
        text = value.strip()
        if _NUMBER.fullmatch(text):
            seconds = float(text)
        elif text and _GO_DURATION.fullmatch(text):
            sign = -1.0 if text.startswith("-") else 1.0
            parts = _GO_DURATION_PART.findall(text)
            seconds = sign * sum(float(n) * _GO_UNIT_SECONDS[u] for n, u in parts)
        else:
            raise BadRequest(
                f'Invalid keep_alive {value!r}: expected a duration such as "5m", "30s" or -1',
                "keep_alive",
            )
    else:
        seconds = float(value)
    if math.isnan(seconds):
        raise BadRequest("Invalid keep_alive: not a number", "keep_alive")
    # Past a century is "keep it loaded": a deadline that far out overflows a date.
    return float("inf") if seconds < 0 or seconds > KEEP_ALIVE_FOREVER else seconds


# -- answers ------------------------------------------------------------------------
def timestamp(unix: float | None = None) -> str:
    """Ollama's ``created_at``: RFC 3339 in UTC."""
    moment = datetime.fromtimestamp(time.time() if unix is None else unix, UTC)
    return moment.isoformat().replace("+00:00", "Z")


def done_reason(finish_reason: Any) -> str:
    """Ollama's ``stop`` or ``length``; ``schema_invalid`` (a ``format`` schema the answer
    failed when checked after generation) kept, so it never passes for a valid answer."""
    return finish_reason if finish_reason in ("length", "schema_invalid") else "stop"


def tool_calls(calls: Any) -> list[dict[str, Any]]:
    """OpenAI tool calls (arguments as a JSON string) as Ollama's (arguments as an object)."""
    out = []
    for call in calls or ():
        function = call.get("function") or {}
        arguments: Any = function.get("arguments") or "{}"
        if isinstance(arguments, str):
            try:
                arguments = msgspec.json.decode(arguments)
            except msgspec.DecodeError:
                arguments = {"arguments": arguments}  # not JSON: keep the text, not lose it
        if not isinstance(arguments, dict):
            arguments = {"value": arguments}
        out.append({"function": {"name": function.get("name", ""), "arguments": arguments}})
    return out


class Timing:
    """Ollama's durations (nanoseconds), measured by mr around the engine's answer: prompt
    evaluation ends with the first token."""

    __slots__ = ("first", "started")

    def __init__(self, started: float) -> None:
        self.started = started
        self.first: float | None = None

    def token(self, now: float) -> None:
        if self.first is None:
            self.first = now

    def fields(self, now: float, usage: Any, counted: int) -> dict[str, Any]:
        first = self.first if self.first is not None else now
        prompt = usage.get("prompt_tokens") if isinstance(usage, dict) else None
        completion = usage.get("completion_tokens") if isinstance(usage, dict) else None
        return {
            "total_duration": int((now - self.started) * _NS),
            "load_duration": 0,
            "prompt_eval_count": prompt if isinstance(prompt, int) else 0,
            "prompt_eval_duration": int((first - self.started) * _NS),
            "eval_count": completion if isinstance(completion, int) else counted,
            "eval_duration": int((now - first) * _NS),
        }


def _choice(answer: dict[str, Any]) -> dict[str, Any]:
    choices = answer.get("choices")
    if isinstance(choices, list) and choices and isinstance(choices[0], dict):
        return choices[0]
    return {}


def chat_answer(answer: dict[str, Any], model: str, started: float, now: float) -> dict[str, Any]:
    """A whole OpenAI chat completion as Ollama's chat answer."""
    choice = _choice(answer)
    message = choice.get("message") or {}
    out_message: dict[str, Any] = {"role": "assistant", "content": message.get("content") or ""}
    if message.get("tool_calls"):
        out_message["tool_calls"] = tool_calls(message["tool_calls"])
    timing = Timing(started)
    timing.token(now)
    return {
        "model": model,
        "created_at": timestamp(),
        "message": out_message,
        "done": True,
        "done_reason": done_reason(choice.get("finish_reason")),
        **timing.fields(now, answer.get("usage"), 0),
    }


def generate_answer(
    answer: dict[str, Any], model: str, started: float, now: float
) -> dict[str, Any]:
    """A whole OpenAI chat completion or completion as Ollama's generate answer."""
    choice = _choice(answer)
    if "message" in choice:
        text = (choice.get("message") or {}).get("content") or ""
    else:
        text = choice.get("text") or ""
    timing = Timing(started)
    timing.token(now)
    return {
        "model": model,
        "created_at": timestamp(),
        "response": text,
        "done": True,
        "done_reason": done_reason(choice.get("finish_reason")),
        **timing.fields(now, answer.get("usage"), 0),
    }


class OllamaStream:
    """OpenAI stream chunks -> Ollama's NDJSON objects, one chunk at a time.

    ``feed`` returns the objects to send now (text as it comes; tool calls, which OpenAI
    streams in pieces, once complete); ``finish`` the final ``done: true`` object.
    ``kind`` is ``"chat"`` (``message``) or ``"generate"`` (``response``).
    """

    __slots__ = ("_calls", "_count", "_finish", "_kind", "_model", "_timing", "_usage")

    def __init__(self, kind: str, model: str, started: float) -> None:
        self._kind = kind
        self._model = model
        self._timing = Timing(started)
        self._count = 0
        self._usage: Any = None
        self._finish: Any = None
        self._calls: dict[int, dict[str, Any]] = {}

    def feed(self, chunk: dict[str, Any], now: float) -> list[dict[str, Any]]:
        if chunk.get("usage"):
            self._usage = chunk["usage"]
        choice = _choice(chunk)
        if not choice:
            return []
        if choice.get("finish_reason"):
            self._finish = choice["finish_reason"]
        delta = choice.get("delta")
        if isinstance(delta, dict):
            text = delta.get("content") or ""
            for piece in delta.get("tool_calls") or ():
                self._add_call_piece(piece)
        else:
            text = choice.get("text") or ""
        if not text:
            return []
        self._timing.token(now)
        self._count += 1
        return [self._object(text, done=False)]

    def finish(self, now: float) -> list[dict[str, Any]]:
        out = []
        if self._calls:
            calls = [
                {"function": {"name": c["name"], "arguments": c["arguments"]}}
                for _, c in sorted(self._calls.items())
            ]
            message = self._object("", done=False)
            message["message"]["tool_calls"] = tool_calls(calls)
            out.append(message)
        final = self._object("", done=True)
        final["done_reason"] = done_reason(self._finish)
        final.update(self._timing.fields(now, self._usage, self._count))
        out.append(final)
        return out

    def _add_call_piece(self, piece: Any) -> None:
        if not isinstance(piece, dict):
            return
        index = piece.get("index", len(self._calls))
        call = self._calls.setdefault(index, {"name": "", "arguments": ""})
        function = piece.get("function") or {}
        if function.get("name"):
            call["name"] += function["name"]
        if function.get("arguments"):
            call["arguments"] += function["arguments"]

    def _object(self, text: str, done: bool) -> dict[str, Any]:
        out: dict[str, Any] = {"model": self._model, "created_at": timestamp()}
        if self._kind == "chat":
            out["message"] = {"role": "assistant", "content": text}
        else:
            out["response"] = text
        out["done"] = done
        return out


def embed_answer(answer: dict[str, Any], model: str, started: float, now: float) -> dict[str, Any]:
    """OpenAI embeddings as Ollama's ``/api/embed`` answer (vectors in input order)."""
    data = answer.get("data") or []
    ordered = sorted((d for d in data if isinstance(d, dict)), key=lambda d: d.get("index", 0))
    usage = answer.get("usage") or {}
    return {
        "model": model,
        "embeddings": [d.get("embedding") or [] for d in ordered],
        "total_duration": int((now - started) * _NS),
        "load_duration": 0,
        "prompt_eval_count": usage.get("prompt_tokens", 0) if isinstance(usage, dict) else 0,
    }
