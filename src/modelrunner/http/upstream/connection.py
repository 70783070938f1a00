"""One keep-alive HTTP/1.1 connection to an engine, as an asyncio ``Protocol``.

httpx (through httpcore, h11 and anyio) cost mr ~0.35 ms of CPU per proxied request; this
does the same exchange with llhttp parsing straight out of ``data_received`` and no
stream or task layers in between. One request at a time per connection.

Flow control: while the body waits to be taken (a slow client), reading from the engine
pauses above ``_HIGH_WATER`` bytes, so a stream never piles up in mr's memory.
Timeouts: one timer per answer fails it after ``read_timeout`` seconds without a byte.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Final, cast

from modelrunner.wire import MalformedResponse, ResponseParser

_HIGH_WATER: Final = 256 * 1024
_SMALL_BODY: Final = 64 * 1024


class UpstreamError(Exception):
    """The exchange with the engine failed (see the subclasses)."""


class CannotConnect(UpstreamError):
    """No connection to the engine: it is not listening (any more), or did not accept in time."""


class BrokenAnswer(UpstreamError):
    """The engine closed the connection, sent garbage or went silent while answering."""


class UpstreamConnection(asyncio.Protocol):
    def __init__(self, loop: asyncio.AbstractEventLoop, read_timeout: float, key: str) -> None:
        self.key = key  # the engine's address, for the pool
        # Called when the engine closes the connection while it is idle (the pool drops it).
        self.on_idle_close: Callable[[UpstreamConnection], None] | None = None
        self._loop = loop
        self._read_timeout = read_timeout
        self._transport: asyncio.Transport | None = None
        self._parser: ResponseParser | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._error: UpstreamError | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._last_data = 0.0
        self._paused = False
        self.closed = False
        self.idle_since = 0.0

    # -- asyncio's side -------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport, but have its methods.
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        parser = self._parser
        if parser is None:  # nothing asked: the connection is out of step
            self.abort()
            return
        self._last_data = self._loop.time()
        try:
            parser.feed(data)
        except MalformedResponse as exc:
            self._fail(BrokenAnswer(str(exc)))
            return
        if parser.buffered > _HIGH_WATER and not parser.complete and not self._paused:
            self._paused = True
            assert self._transport is not None
            self._transport.pause_reading()
        self._wake()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        parser = self._parser
        if parser is not None and not parser.eof() and self._error is None:
            reason = f": {exc}" if exc else ""
            self._error = BrokenAnswer(
                f"the engine closed the connection before its answer was complete{reason}"
            )
        self._cancel_timer()
        self._wake()
        if parser is None and self.on_idle_close is not None:
            self.on_idle_close(self)

    # -- the client's side ----------------------------------------------------------
    def send(self, head: bytes, body: bytes) -> None:
        """Start one exchange. Writes are buffered by the transport: the body is already in
        memory, so waiting for it to drain gains nothing."""
        transport = self._transport
        assert transport is not None
        self._parser = ResponseParser()
        self._error = None
        self._last_data = self._loop.time()
        self._timer = self._loop.call_at(self._last_data + self._read_timeout, self._check_timer)
        if len(body) < _SMALL_BODY:
            transport.write(head + body)  # one segment: the engine reads it in one go
        else:
            transport.write(head)
            transport.write(body)

    async def head(self) -> ResponseParser:
        """Wait for the status line and headers."""
        parser = self._parser
        assert parser is not None
        while not parser.headers_done:
            await self._wait()
        return parser

    async def chunk(self) -> bytes | None:
        """The body bytes that arrived since the last call (waiting for some); None at the end."""
        parser = self._parser
        assert parser is not None
        while not parser.buffered:
            if parser.complete:
                return None
            await self._wait()
        data = parser.take()
        if self._paused and self._transport is not None:
            self._paused = False
            self._transport.resume_reading()
        return data

    @property
    def reusable(self) -> bool:
        """The answer was read to its end and the engine keeps the connection open."""
        parser = self._parser
        return (
            not self.closed
            and self._error is None
            and parser is not None
            and parser.complete
            and parser.keep_alive
            and not parser.buffered
        )

    def finish(self) -> None:
        """The exchange is over (read or abandoned): stop its timer, close if not reusable."""
        self._cancel_timer()
        if not self.reusable:
            self.abort()
        self._parser = None
        self.idle_since = self._loop.time()

    def abort(self) -> None:
        """Close at once; an engine still generating sees it on its next write and stops."""
        self.closed = True
        if self._transport is not None:
            self._transport.abort()

    # -- internals ------------------------------------------------------------------
    async def _wait(self) -> None:
        if self._error is not None:
            raise self._error
        if self.closed:
            raise BrokenAnswer("the connection to the engine is closed")
        self._waiter = self._loop.create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None
        if self._error is not None:
            raise self._error

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _fail(self, error: UpstreamError) -> None:
        self._error = error
        self.abort()
        self._wake()

    def _check_timer(self) -> None:
        self._timer = None
        if self._parser is None or self._parser.complete:
            return
        now = self._loop.time()
        if self._paused:  # our own doing (a slow client), not the engine's silence
            self._last_data = now
        due = self._last_data + self._read_timeout
        if now < due:
            self._timer = self._loop.call_at(due, self._check_timer)
            return
        self._fail(BrokenAnswer(f"no answer from the engine for {self._read_timeout:g} s"))

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
