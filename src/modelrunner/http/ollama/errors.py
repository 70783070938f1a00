"""Errors of the Ollama API, in its shape, ``{"error": "..."}``, with their status codes;
and what its routes share (tags, the NDJSON type, the resolution of Ollama's names)."""

from __future__ import annotations

from typing import Any, Final

import msgspec
from litestar import Request, Response
from litestar.openapi.datastructures import ResponseSpec
from litestar.types import ExceptionHandlersMap

from modelrunner.errors import (
    InvalidReference,
    ModelInUse,
    ModelNotFound,
    RegistryError,
    UnknownModel,
    UsageError,
)
from modelrunner.http.ollama.translate import BadRequest
from modelrunner.http.translated.answers import JsonAnswer
from modelrunner.http.translated.engine_call import EngineCall, problem_of

TAGS: Final = ["Ollama"]
NDJSON: Final = "application/x-ndjson"


class OllamaError(msgspec.Struct):
    error: str


ERRORS: Final = {
    code: ResponseSpec(OllamaError, description=text, generate_examples=False)
    for code, text in {
        400: "Invalid body, or a field mr cannot honour",
        401: "Missing or wrong API key",
        404: "Unknown model",
        429: "limits.max_concurrent_requests reached, see Retry-After",
        502: "The engine failed",
        503: "The model is starting, see Retry-After",
        504: "Longer than limits.request_timeout",
    }.items()
}


def ollama_error(exc: BaseException, where: str) -> tuple[int, str, dict[str, str]]:
    """Status, message and headers of the Ollama answer to any exception."""
    if isinstance(exc, BadRequest):
        return 400, f"{exc.field}: {exc}" if exc.field else str(exc), {}
    if isinstance(exc, InvalidReference | UsageError):
        return 400, str(exc), {}
    if isinstance(exc, ModelNotFound):
        return 404, str(exc), {}
    if isinstance(exc, ModelInUse):
        return 409, str(exc), {}
    if isinstance(exc, RegistryError):
        return 502, str(exc), {}
    found = problem_of(exc, where)
    return found.status, found.body.error.message, dict(found.headers)


def handle_error(request: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    status, message, headers = ollama_error(exc, f"{request.method} {request.url.path}")
    body = msgspec.json.encode(OllamaError(message))
    return Response(body, status_code=status, media_type="application/json", headers=headers)


HANDLERS: Final[ExceptionHandlersMap] = {Exception: handle_error}


def json_answer(content: dict[str, Any], headers: dict[str, str] | None = None) -> JsonAnswer:
    return JsonAnswer(msgspec.json.encode(content), headers or {})


def served_name(calls: EngineCall, name: str) -> str:
    """The name or alias as served; Ollama clients add ``:latest`` to bare names."""
    try:
        calls.resolve(name)
    except UnknownModel:
        bare = name.removesuffix(":latest")
        if bare == name:
            raise
        calls.resolve(bare)
        return bare
    return name
