"""Limits on what a client can make the server hold before a request even reaches the app
(before authentication): open connections, the size and number of request headers, and
the time to send them.

uvicorn's parsers keep whatever header bytes arrive (httptools has no limit at all; h11 one
we configure) and wait for them forever (a "slowloris" sending one byte a second keeps a
connection open indefinitely). ``guarded_protocol`` subclasses the parser uvicorn would use
and adds, for both:

- a header-read deadline, armed when a connection is ready for a request (on connect and
  after each answer) and disarmed when a request's headers are complete: 408, then close;
- a cap on the header block: 431, then close, before more than the cap (plus one read) is
  buffered;
- a cap on open connections: the connection over it gets 503 and is closed at once.

``HeaderCountLimit`` (an ASGI wrapper) refuses more than ``max_headers`` header lines.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, cast

from litestar.enums import ScopeType

from modelrunner.http.errors import problem, send_problem
from modelrunner.http.upstream.handoff import CLIENT_TRANSPORT

if TYPE_CHECKING:
    from litestar.types import ASGIApp, Receive, Scope, Send

_REASONS: Final = {
    408: b"Request Timeout",
    431: b"Request Header Fields Too Large",
    503: b"Service Unavailable",
}
# httptools consumes every byte it is given: while a head may be open it is fed in slices
# this small, and the cap checked before each, so what it buffers stays within the cap. A
# head is counted in whole slices: within 2 slices of the cap, it may be refused early.
_SLICE: Final = 1024


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    max_header_bytes: int = 64 * 1024
    max_headers: int = 100
    header_timeout: float = 10.0
    max_connections: int = 512


def refusal_bytes(status: int, message: str) -> bytes:
    """A complete HTTP/1.1 answer that closes the connection, OpenAI-shaped."""
    body = problem(status, message).encode()
    head = (
        f"HTTP/1.1 {status} ".encode() + _REASONS[status] + b"\r\n"
        b"content-type: application/json\r\n"
        b"content-length: " + str(len(body)).encode() + b"\r\n"
        b"connection: close\r\n\r\n"
    )
    return head + body


def _refuse(transport: asyncio.BaseTransport, status: int, message: str) -> None:
    if transport.is_closing():
        return
    cast("asyncio.Transport", transport).write(refusal_bytes(status, message))
    transport.close()


class _GuardMixin:
    """The parser-independent part: connection cap and the header-read deadline."""

    limits: ConnectionLimits
    # Provided by uvicorn's protocol classes.
    connections: set[Any]
    loop: asyncio.AbstractEventLoop
    transport: asyncio.Transport
    cycle: Any

    _head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)  # type: ignore[misc]
        if len(self.connections) > self.limits.max_connections:
            _refuse(
                transport,
                503,
                f"too many open connections (more than {self.limits.max_connections}); retry",
            )
            return
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_head_timer()
        super().connection_lost(exc)  # type: ignore[misc]

    def on_response_complete(self) -> None:
        super().on_response_complete()  # type: ignore[misc]
        if not self.transport.is_closing() and self._between_requests():
            self._arm_head_timer()

    def _between_requests(self) -> bool:
        return self.cycle is None or bool(self.cycle.response_complete)

    def _after_data(self) -> None:
        if not self._between_requests():
            self._disarm_head_timer()  # a request's headers are complete

    def _arm_head_timer(self) -> None:
        self._disarm_head_timer()
        self._head_timer = self.loop.call_later(self.limits.header_timeout, self._head_timeout)

    def _disarm_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timeout(self) -> None:
        self._head_timer = None
        if self._between_requests():
            _refuse(
                self.transport,
                408,
                f"request headers not received within {self.limits.header_timeout:g} s",
            )

    def _too_large(self) -> None:
        self._disarm_head_timer()
        _refuse(
            self.transport,
            431,
            f"request headers larger than {self.limits.max_header_bytes} bytes",
        )


def _httptools_guard(base: type[asyncio.Protocol]) -> type[asyncio.Protocol]:
    class HttpToolsGuard(_GuardMixin, base):  # type: ignore[valid-type, misc]
        _head_open = False
        _in_message = False
        _head_bytes = 0
        _piece = 0

        def on_message_begin(self) -> None:
            self._head_open = self._in_message = True
            self._head_bytes = self._piece  # the slice it began in
            super().on_message_begin()
            # The client's connection, for a stream its engine writes itself (hand-off).
            self.scope["extensions"] = {CLIENT_TRANSPORT: self.transport}

        def on_headers_complete(self) -> None:
            self._head_open = False
            super().on_headers_complete()

        def on_message_complete(self) -> None:
            self._in_message = False
            super().on_message_complete()

        def data_received(self, data: bytes) -> None:
            start = 0
            while start < len(data):
                if self._in_message and not self._head_open:
                    super().data_received(data[start:] if start else data)  # body: whole
                    break
                piece = data[start : start + _SLICE]
                start += len(piece)
                if self._head_open:
                    self._head_bytes += len(piece)
                    if self._head_bytes > self.limits.max_header_bytes:
                        self._too_large()
                        return
                self._piece = len(piece)
                super().data_received(piece)
                if self.transport.is_closing():
                    return
            self._after_data()

    return HttpToolsGuard


def _h11_guard(base: type[asyncio.Protocol]) -> type[asyncio.Protocol]:
    import h11

    class H11Guard(_GuardMixin, base):  # type: ignore[valid-type, misc]
        conn: h11.Connection

        def data_received(self, data: bytes) -> None:
            # h11 buffers an unfinished head (up to its own limit, configured to ours);
            # check first, so the answer is a 431 rather than h11's generic 400.
            if self.conn.their_state is h11.IDLE:
                buffered = self.conn.trailing_data[0]
                if len(buffered) + len(data) > self.limits.max_header_bytes:
                    end = (buffered[-3:] + data).find(b"\r\n\r\n")
                    head = len(buffered) + end if end >= 0 else len(buffered) + len(data)
                    if head > self.limits.max_header_bytes:
                        self._too_large()
                        return
            super().data_received(data)
            self._after_data()

    return H11Guard


def guarded_protocol(parser: str, limits: ConnectionLimits) -> type[asyncio.Protocol]:
    """uvicorn's protocol class for ``parser`` ("auto", "httptools" or "h11"), guarded."""
    if parser == "auto":
        try:
            import httptools  # noqa: F401
        except ImportError:
            parser = "h11"
        else:
            parser = "httptools"
    if parser == "httptools":
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

        cls = _httptools_guard(HttpToolsProtocol)
    elif parser == "h11":
        from uvicorn.protocols.http.h11_impl import H11Protocol

        cls = _h11_guard(H11Protocol)
    else:
        raise ValueError(f"unknown HTTP parser {parser!r}: expected auto, httptools or h11")
    cls.limits = limits  # type: ignore[attr-defined]
    return cls


class HeaderCountLimit:
    """ASGI wrapper: more than ``limit`` header lines get 431 before the app sees them."""

    __slots__ = ("_app", "_limit")

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self._app = app
        self._limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == ScopeType.HTTP and len(scope["headers"]) > self._limit:  # type: ignore[arg-type]  # a list
            found = problem(431, f"more than {self._limit} request headers")
            await send_problem(send, found, close=True)
            return
        await self._app(scope, receive, send)
