"""Errors raised before a route is chosen (no such path, wrong method) in the shape of the
API the path belongs to: Ollama's under ``/api/``, Anthropic's for ``.../messages`` paths,
OpenAI's everywhere else. Errors inside a route are already its API's (its own handlers)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from litestar import Request, Response

from modelrunner.http.anthropic import routes as anthropic_routes
from modelrunner.http.ollama import errors as ollama_errors

Handler = Callable[[Request[Any, Any, Any], Exception], Response[Any]]


def per_api(default: Handler) -> Handler:
    def handle(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
        path = request.url.path
        if path.startswith("/api/"):
            return ollama_errors.handle_error(request, exc)
        if path.endswith(("/messages", "/messages/count_tokens")):
            return anthropic_routes.handle_error(request, exc)
        return default(request, exc)

    return handle
