"""mr's side of a stream handed to its engine (engines/handoff.py has the exchange).

``client_transport(scope)`` finds the client's connection, which uvicorn's protocol (our
``connection_guard`` subclass) puts in the scope; ``Handoff`` is one exchange with the
engine over its Unix socket; ``flushed`` and ``cut`` act on the client's connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from typing import TYPE_CHECKING, Any, Final

import msgspec

from modelrunner.engines.handoff import (
    DONE,
    GO,
    MARKER,
    FrameError,
    FrameReader,
    frame,
    request_frame,
)
from modelrunner.http.upstream.connection import BrokenAnswer, CannotConnect

if TYPE_CHECKING:
    from litestar.types import Scope

CLIENT_TRANSPORT: Final = "modelrunner.client_transport"  # the scope's extension
_FLUSH_POLL: Final = 0.001  # seconds


def client_transport(scope: Scope) -> asyncio.Transport | None:
    """The client's connection, if its events may be written by another process: plain
    TCP or Unix (no TLS), as our uvicorn protocol records it."""
    extensions: dict[str, Any] = scope.get("extensions") or {}
    transport: asyncio.Transport | None = extensions.get(CLIENT_TRANSPORT)
    if transport is None or transport.is_closing():
        return None
    if transport.get_extra_info("sslcontext") is not None:
        return None
    return transport


class Outcome(msgspec.Struct):
    """A handed-off stream's end, as the engine's DONE says it."""

    clean: bool  # the events ended on a chunk boundary: mr may write after them
    finished: bool = False  # every event of the answer is out: mr writes data: [DONE]
    prompt_tokens: int | None = None  # None: cut short
    completion_tokens: int | None = None
    echo: bytes = b""  # the events written, when asked (for the request inspector)


CUT: Final = Outcome(clean=False)  # nothing more may be written to the client


class Handoff:
    """One exchange with an engine's hand-off socket; closing it tells the engine to stop."""

    def __init__(self, path: str) -> None:
        self._path = path
        self._loop = asyncio.get_running_loop()
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.setblocking(False)
        self._reader = FrameReader()

    async def open(
        self, client: asyncio.Transport, target: str, body: bytes, echo: bool
    ) -> tuple[bytes, bytes]:
        """Hand over the client's socket and the request; the engine's first frame. With
        ``echo`` the engine's DONE carries the events it wrote."""
        try:
            await self._loop.sock_connect(self._sock, self._path)
        except OSError as exc:
            raise CannotConnect(f"cannot connect to {self._path}: {exc}") from None
        raw = client.get_extra_info("socket")
        try:
            # One byte into an empty socket buffer: never blocks.
            socket.send_fds(self._sock, [MARKER], [raw.fileno()])
            await self._loop.sock_sendall(self._sock, request_frame(target, echo, body))
        except OSError as exc:
            raise BrokenAnswer(f"the engine closed its hand-off socket: {exc}") from None
        found = await self.next()
        if found is None:
            raise BrokenAnswer("the engine closed its hand-off socket before answering")
        return found

    async def go(self) -> None:
        """The answer's head is out: the engine may write its events."""
        with contextlib.suppress(OSError):  # it is gone: ``next`` says so
            await self._loop.sock_sendall(self._sock, frame(GO))

    async def done(self) -> Outcome | None:
        """How the handed-off stream ended (the engine's DONE); None if the engine closed
        its end without one (it died)."""
        found = await self.next()
        if found is None:
            return None
        kind, payload = found
        head, _, echo = payload.partition(b"\n")
        try:
            if kind != DONE:
                raise ValueError(f"a {kind!r} frame")
            outcome = msgspec.json.decode(head, type=Outcome)
        except (ValueError, msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise BrokenAnswer(f"the engine ended the hand-off out of turn: {exc}") from None
        outcome.echo = echo
        return outcome

    async def next(self) -> tuple[bytes, bytes] | None:
        """The engine's next frame; None once it closed its end (it ended, or died)."""
        while (found := self._next_buffered()) is None:
            try:
                data = await self._loop.sock_recv(self._sock, 64 * 1024)
            except OSError:
                return None
            if not data:
                return None
            self._reader.feed(data)
        return found

    def _next_buffered(self) -> tuple[bytes, bytes] | None:
        try:
            return self._reader.next()
        except FrameError as exc:
            raise BrokenAnswer(f"the engine broke the hand-off's framing: {exc}") from None

    def stop(self) -> None:
        """Ask the engine to stop (it sees mr's end close) and still read its DONE."""
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        self._sock.close()


async def flushed(transport: asyncio.Transport) -> None:
    """Wait until what was written to the client (the answer's head) left mr's buffer, so
    the engine's first event cannot overtake it."""
    while transport.get_write_buffer_size() and not transport.is_closing():
        await asyncio.sleep(_FLUSH_POLL)


def cut(transport: asyncio.Transport) -> None:
    """End the client's connection at once, whoever else holds its socket: a stream that
    may have stopped mid-chunk cannot be completed."""
    raw = transport.get_extra_info("socket")
    if raw is not None:
        with contextlib.suppress(OSError):
            duplicate = socket.socket(fileno=os.dup(raw.fileno()))
            with duplicate:
                duplicate.shutdown(socket.SHUT_RDWR)
    transport.abort()
