"""Every failure becomes one OpenAI-shaped body: ``{"error": {message, type, param, code}}``.

The deciding here is pure (exception or upstream answer -> status, body, headers);
``exception_handler`` is the only piece that knows Litestar.
"""

from __future__ import annotations

import logging
import math
import re
from typing import TYPE_CHECKING, Any, Final

import msgspec
from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException

from modelrunner.errors import (
    ModelRunnerError,
    ModelUnavailable,
    Overloaded,
    RequestTimedOut,
    UnknownModel,
    UpstreamFailed,
)

if TYPE_CHECKING:
    from litestar.types import Send

log = logging.getLogger(__name__)

# OpenAI's vocabulary for ``type`` and ``code`` per status.
_TYPE_FOR_STATUS: Final = {401: "authentication_error", 403: "permission_error"}
_CODE_FOR_STATUS: Final = {
    401: "invalid_api_key",
    404: "not_found",
    405: "method_not_allowed",
    413: "request_too_large",
    429: "rate_limit_exceeded",
}
_MAX_UPSTREAM_MESSAGE: Final = 500


class ErrorDetail(msgspec.Struct, frozen=True):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorBody(msgspec.Struct, frozen=True):
    error: ErrorDetail


class ErrorAnswer(msgspec.Struct, frozen=True):
    """An error decided but not yet sent: status, body and extra headers."""

    status: int
    body: ErrorBody
    headers: tuple[tuple[str, str], ...] = ()

    def encode(self) -> bytes:
        return msgspec.json.encode(self.body)


def problem(
    status: int,
    message: str,
    *,
    type_: str | None = None,
    param: str | None = None,
    code: str | None = None,
    headers: tuple[tuple[str, str], ...] = (),
) -> ErrorAnswer:
    if type_ is None:
        type_ = (
            "server_error"
            if status >= 500
            else _TYPE_FOR_STATUS.get(status, "invalid_request_error")
        )
    if code is None:
        code = _CODE_FOR_STATUS.get(status)
    return ErrorAnswer(status, ErrorBody(ErrorDetail(message, type_, param, code)), headers)


def malformed_body(exc: RecursionError | UnicodeError, where: str) -> ErrorAnswer:
    """A JSON body the decoder gave up on outside its own error type: too deeply nested
    for the stack, or text that is not UTF-8."""
    reason = (
        "JSON nested too deeply" if isinstance(exc, RecursionError) else "text is not valid UTF-8"
    )
    return problem(400, f"Invalid request body for {where}: {reason}")


def from_exception(exc: BaseException, where: str) -> ErrorAnswer:
    """The answer for any exception raised while serving ``where`` (e.g. ``POST /v1/models``)."""
    if isinstance(exc, RecursionError | UnicodeError):
        # Only body decoding recurses this deep or decodes client text; see malformed_body.
        return malformed_body(exc, where)
    if isinstance(exc, UnknownModel):
        return problem(404, str(exc), param="model", code="model_not_found")
    if isinstance(exc, ModelUnavailable):
        retry = str(max(1, math.ceil(exc.retry_after)))
        return problem(503, str(exc), code="model_unavailable", headers=(("retry-after", retry),))
    if isinstance(exc, UpstreamFailed):
        return problem(502, str(exc), code="upstream_failed")
    if isinstance(exc, Overloaded):
        retry = str(max(1, math.ceil(exc.retry_after)))
        return problem(429, str(exc), headers=(("retry-after", retry),))
    if isinstance(exc, RequestTimedOut):
        return problem(504, str(exc), code="timeout")
    if isinstance(exc, ValidationException):
        return _validation(exc, where)
    if isinstance(exc, HTTPException):
        message = exc.detail if exc.detail else f"{where} failed"
        if exc.status_code == 404 and message == "Not Found":
            message = f"No route for {where}"
        elif exc.status_code == 405:
            message = f"Method not allowed: {where}"
        elif exc.status_code == 400:
            message = f"Invalid request body for {where}: {message}"
        elif exc.status_code == 413:
            message = f"{where}: the request body is larger than the server's limit ({message})"
        headers = tuple((k.lower(), v) for k, v in (exc.headers or {}).items())
        return problem(exc.status_code, message, headers=headers)
    if isinstance(exc, ModelRunnerError):
        return problem(500, f"{where} failed: {exc}")
    return problem(
        500, f"{where} failed: internal error ({type(exc).__name__}); see the server log"
    )


def _validation(exc: ValidationException, where: str) -> ErrorAnswer:
    """Litestar's body/parameter validation: name the offending field."""
    extra = exc.extra if isinstance(exc.extra, list) else []
    parts: list[str] = []
    param: str | None = None
    for item in extra:
        if isinstance(item, dict):
            key = item.get("key")
            text = str(item.get("message", ""))
            field = _field_of(text) or (None if key == "data" else key)
            if field and param is None:
                param = str(field)
            parts.append(text if key == "data" or not key else f"{key}: {text}")
    detail = "; ".join(parts) or exc.detail or "invalid request"
    return problem(400, f"Invalid request body for {where}: {detail}", param=param)


_AT_PATH: Final = re.compile(r"at `\$\.([A-Za-z0-9_]+)")
_MISSING: Final = re.compile(r"missing required field `([^`]+)`")


def _field_of(message: str) -> str | None:
    """The body field a msgspec message is about: `- at `$.model``, `missing ... `model``."""
    found = _AT_PATH.search(message) or _MISSING.search(message)
    return found.group(1) if found else None


class _UpstreamError(msgspec.Struct):
    error: Any = None
    detail: Any = None
    message: Any = None


def from_upstream(status: int, body: bytes, where: str) -> ErrorAnswer:
    """An engine answered ``status`` with ``body``: keep its OpenAI error when it sent one,
    wrap anything else, pass on a busy engine's 503 (with Retry-After) and turn its other
    faults (5xx) into 502."""
    try:
        parsed: _UpstreamError | None = msgspec.json.decode(body, type=_UpstreamError)
    except (msgspec.DecodeError, msgspec.ValidationError):
        parsed = None
    message = _upstream_message(parsed, body)
    if status == 503:
        # The engine's request queue is full: a moment's wait helps, so say so as it did.
        return problem(
            503,
            f"The engine is busy with {where}: {message}",
            code="engine_busy",
            headers=(("Retry-After", "1"),),
        )
    if status >= 500:
        return problem(
            502, f"The engine failed on {where} (HTTP {status}): {message}", code="upstream_failed"
        )
    if parsed is not None and isinstance(parsed.error, dict) and "message" in parsed.error:
        err = parsed.error
        return problem(
            status,
            str(err["message"]),
            type_=str(err.get("type") or "invalid_request_error"),
            param=_opt_str(err.get("param")),
            code=_opt_str(err.get("code")),
        )
    # FastAPI-style 422 validation is a 400 in OpenAI's vocabulary.
    out_status = 400 if status == 422 else status
    return problem(out_status, f"The engine rejected {where} (HTTP {status}): {message}")


def _upstream_message(parsed: _UpstreamError | None, body: bytes) -> str:
    if parsed is not None:
        if isinstance(parsed.error, dict) and parsed.error.get("message"):
            text = str(parsed.error["message"])
        elif parsed.error:
            text = str(parsed.error)
        elif parsed.detail is not None:
            text = _detail_text(parsed.detail)
        elif parsed.message is not None:
            text = str(parsed.message)
        else:
            text = body.decode("utf-8", "replace")
    else:
        text = body.decode("utf-8", "replace").strip() or "empty answer"
    # Never relay a traceback: keep its last line only.
    if "Traceback (most recent call last)" in text:
        text = text.strip().splitlines()[-1]
    return text[:_MAX_UPSTREAM_MESSAGE]


def _detail_text(detail: Any) -> str:
    if isinstance(detail, list):
        parts = []
        for item in detail:
            if isinstance(item, dict):
                loc = ".".join(str(p) for p in item.get("loc", ()) if p != "body")
                parts.append(f"{loc}: {item.get('msg', '')}" if loc else str(item.get("msg", "")))
            else:
                parts.append(str(item))
        return "; ".join(parts)
    return str(detail)


def _opt_str(value: Any) -> str | None:
    return None if value is None else str(value)


async def send_problem(send: Send, found: ErrorAnswer, *, close: bool = False) -> None:
    """Answer with ``found`` from plain ASGI code (middleware outside Litestar's handlers)."""
    body = found.encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        *((k.encode("latin-1"), v.encode("latin-1")) for k, v in found.headers),
    ]
    if close:
        headers.append((b"connection", b"close"))
    start: Any = {"type": "http.response.start", "status": found.status, "headers": headers}
    await send(start)
    await send({"type": "http.response.body", "body": body, "more_body": False})


def to_response(found: ErrorAnswer) -> Response[bytes]:
    return Response(
        found.encode(),
        status_code=found.status,
        media_type="application/json",
        headers=dict(found.headers),
    )


def exception_handler(request: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    """Litestar's handler for every exception: OpenAI JSON, never a traceback."""
    where = f"{request.method} {request.url.path}"
    found = from_exception(exc, where)
    if found.status >= 500 and not isinstance(exc, ModelRunnerError | HTTPException):
        log.error("%s failed", where, exc_info=exc)
    return to_response(found)
