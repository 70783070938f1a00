"""Which revision of a model answered a request, for routes that call engines through
``EngineCall`` (Ollama, Anthropic, Responses, tokenize): the ``X-Model-Revision`` header on
their answers and the ``X-Session-Id`` that keeps a conversation on one revision during a
canary, as the proxied routes have them (``forwarder.ProxyCall``).

``RevisionTagging`` (ASGI middleware on those routes) opens a ``Tag`` for each request in a
context variable; ``EngineCall`` reads the session from it and records the endpoint it
chose; the first ``http.response.start`` then carries the revision. Outside such a route
(a call made elsewhere) there is no tag and both are no-ops.
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from litestar.types import ASGIApp, Receive, Scope, Send

HEADER: Final = b"x-model-revision"
_MAX_SESSION: Final = 256


class Tag:
    __slots__ = ("revision", "scope")

    def __init__(self, scope: Scope) -> None:
        self.scope = scope
        self.revision: bytes | None = None


_current: ContextVar[Tag | None] = ContextVar("modelrunner_revision_tag", default=None)


def session_of(scope: Scope) -> str | None:
    """X-Session-Id: a conversation stays on one revision during a canary."""
    for key, value in scope["headers"]:
        if key == b"x-session-id":
            return value.decode("latin-1")[:_MAX_SESSION] or None
    return None


def current_session() -> str | None:
    tag = _current.get()
    return None if tag is None else session_of(tag.scope)


def answered_by(revision: str) -> None:
    """The request's answer comes from this revision (the endpoint ``acquire`` chose)."""
    tag = _current.get()
    if tag is not None and revision:
        tag.revision = revision.encode("latin-1")


class RevisionTagging:
    """Adds ``X-Model-Revision`` to the answer of a route whose engine call recorded one."""

    __slots__ = ("_app",)

    def __init__(self, app: ASGIApp) -> None:
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        tag = Tag(scope)  # (route middleware: HTTP requests only)
        token = _current.set(tag)

        async def tagged(message: Any) -> None:
            if message["type"] == "http.response.start" and tag.revision:
                message = {
                    **message,
                    "headers": [*message.get("headers", ()), (HEADER, tag.revision)],
                }
            await send(message)

        try:
            await self._app(scope, receive, tagged)
        finally:
            _current.reset(token)
