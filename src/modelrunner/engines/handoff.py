"""Streams the engine writes straight to mr's client: the hand-off.

mr relays answers chunk by chunk, which costs it a wake-up, a read and a write per token,
taken from the cores the engine computes on (docs/design/engines.md, "Every core"). For a
streamed generation it can instead hand the engine its client's socket: mr checks and
gates the request as always and writes the answer's head; the engine writes every event,
framed as HTTP chunks, to the client's socket itself; mr writes the end (``data: [DONE]``
and the last, empty chunk) once the engine says it is done. mr's bookkeeping (the gate,
the deadline, the revision header, metrics) stays whole, and no byte of the stream passes
through it.

The exchange runs over a Unix socket the engine listens on, one connection per request,
in frames (``kind`` byte, 4-byte big-endian length, payload):

    mr -> engine   one byte, carrying the client's socket (SCM_RIGHTS)
    mr -> engine   REQUEST: a JSON head (``target``, ``echo``), a newline, the body
    engine -> mr   ANSWER: a JSON head (status, headers), a newline, the body: any answer
                   that is not a stream (an error, a plain answer); the exchange ends
    engine -> mr   STREAM: the request is a stream and its job is queued
    mr -> engine   GO: the head is out on the client's socket; events may follow it
    engine -> mr   DONE: a JSON head: ``clean`` (the events ended on a chunk boundary),
                   ``finished`` (the answer's last event is out: mr writes
                   ``data: [DONE]``), ``prompt_tokens`` and ``completion_tokens`` (null if
                   cut short); a newline, and with ``echo`` the events written (for mr's
                   request inspector, which records what it cannot see pass)

mr closing its end, at any point, means stop: the client left or the deadline passed. The
engine then cancels the job, closes its copy of the client's socket, and says DONE.
"""

from __future__ import annotations

import contextlib
import json
import socket
import socketserver
import struct
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Final, NamedTuple

from modelrunner.engines.serving import (
    ClientGone,
    RawReply,
    Refusal,
    Routes,
    SelfWritten,
    error_body,
    json_object,
    run_route,
    watching,
)

REQUEST: Final = b"R"
ANSWER: Final = b"A"
STREAM: Final = b"S"
GO: Final = b"G"
DONE: Final = b"D"
MARKER: Final = b"F"  # the byte that carries the client's socket
_HEAD: Final = struct.Struct("!cI")
MAX_FRAME: Final = 64 * 1024 * 1024  # a request body is at most 32 MiB (serving.MAX_BODY)


class FrameError(Exception):
    """The other side broke the framing (an unknown kind, an oversized frame)."""


def frame(kind: bytes, payload: bytes = b"") -> bytes:
    return _HEAD.pack(kind, len(payload)) + payload


class FrameReader:
    """Frames out of a byte stream fed in pieces split anywhere (no I/O here)."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> None:
        self._buffer += data

    def next(self) -> tuple[bytes, bytes] | None:
        """The next complete frame (kind, payload), or None until more bytes come."""
        if len(self._buffer) < _HEAD.size:
            return None
        kind, length = _HEAD.unpack_from(self._buffer)
        if kind not in (REQUEST, ANSWER, STREAM, GO, DONE):
            raise FrameError(f"unknown frame kind {kind!r}")
        if length > MAX_FRAME:
            raise FrameError(f"a frame of {length} bytes is over {MAX_FRAME}")
        end = _HEAD.size + length
        if len(self._buffer) < end:
            return None
        payload = bytes(self._buffer[_HEAD.size : end])
        del self._buffer[:end]
        return kind, payload


def request_frame(target: str, echo: bool, body: bytes) -> bytes:
    head = {"target": target, "echo": echo}
    return frame(REQUEST, json.dumps(head).encode() + b"\n" + body)


def parse_request(payload: bytes) -> tuple[str, bool, bytes]:
    """A REQUEST frame's target, whether to echo the events, and body."""
    head, _, body = payload.partition(b"\n")
    fields = json.loads(head)
    return str(fields["target"]), bool(fields["echo"]), body


def answer_frame(status: int, body: bytes, content_type: str, headers: dict[str, str]) -> bytes:
    head = {"status": status, "content_type": content_type, "headers": headers}
    return frame(ANSWER, json.dumps(head).encode() + b"\n" + body)


def parse_answer(payload: bytes) -> tuple[int, str, dict[str, str], bytes]:
    """An ANSWER frame's status, content type, extra headers and body."""
    head, _, body = payload.partition(b"\n")
    fields = json.loads(head)
    return int(fields["status"]), str(fields["content_type"]), dict(fields["headers"]), body


class HandoffResult(NamedTuple):
    """How a handed-off stream ended, on the engine's side."""

    clean: bool  # nothing of a chunk is left unwritten
    finished: bool  # the answer's every event is written (not stopped before its end)
    usage: tuple[int, int] | None  # prompt and completion tokens; None if cut short


def done_frame(result: HandoffResult, echo: bytes) -> bytes:
    prompt, completion = result.usage if result.usage is not None else (None, None)
    fields = {"clean": result.clean, "finished": result.finished,
              "prompt_tokens": prompt, "completion_tokens": completion}  # fmt: skip
    return frame(DONE, json.dumps(fields).encode() + b"\n" + echo)


class HandedOff(SelfWritten, ABC):
    """A streamed answer that can also write its events to a handed-off client socket."""

    @abstractmethod
    def echo(self) -> None:
        """Keep a copy of the events written (``written`` gives it)."""

    @abstractmethod
    def write_handed_off(self, client: socket.socket) -> HandoffResult:
        """Write every event as HTTP chunks, but not the end (``data: [DONE]`` and the last,
        empty chunk): mr writes it, or an error event in its place.
        ``serving.client_gone()`` says when mr asks it to stop; never touch ``client``
        after returning."""

    @abstractmethod
    def written(self) -> bytes:
        """The events written, unframed, if ``echo`` was asked (else nothing)."""

    @abstractmethod
    def cancel(self) -> None:
        """Stop the generation (mr left before the events began)."""


# -- the engine's side ------------------------------------------------------------------
class HandoffServer(socketserver.ThreadingUnixStreamServer):
    """Accepts mr's hand-offs on a Unix socket: a thread per request, as the HTTP server."""

    daemon_threads = True
    request_queue_size = 1024

    def __init__(self, path: str, routes: Routes, on_stream: Callable[[], None]) -> None:
        self.routes = routes
        self.on_stream = on_stream  # a stream is handed off (the engine's metrics)
        super().__init__(path, _Exchange)


class _Exchange(socketserver.BaseRequestHandler):
    server: HandoffServer

    def setup(self) -> None:
        self._reader = FrameReader()

    def handle(self) -> None:
        control: socket.socket = self.request
        try:
            data, fds, _flags, _address = socket.recv_fds(control, 1, 1)
        except OSError:
            return
        if data != MARKER or len(fds) != 1:
            for fd in fds:
                socket.close(fd)
            return
        try:
            client = socket.socket(fileno=fds[0])  # shares mr's socket: never change its mode
        except OSError:  # not a socket
            socket.close(fds[0])
            return
        try:
            received = self._read_frame(control)
            if received is None or received[0] != REQUEST:
                return
            target, echo, body = parse_request(received[1])
            with watching(control):  # mr closing its end is client_gone()
                self._answer(control, client, target, echo, body)
        except (OSError, FrameError, ValueError, KeyError, ClientGone):
            pass  # mr went away, or is not mr: nothing to tell it
        finally:
            client.close()

    def _answer(
        self, control: socket.socket, client: socket.socket, target: str, echo: bool, body: bytes
    ) -> None:
        result = run_route(self.server.routes, "POST", target, lambda: json_object(body))
        if isinstance(result, Refusal):
            error = json.dumps(result.body).encode()
            control.sendall(
                answer_frame(result.status, error, "application/json", dict(result.headers))
            )
            return
        if isinstance(result, dict):
            control.sendall(answer_frame(200, json.dumps(result).encode(), "application/json", {}))
        elif isinstance(result, RawReply):
            control.sendall(answer_frame(200, result.data, result.content_type, {}))
        elif isinstance(result, HandedOff):
            if echo:
                result.echo()
            self._stream(control, client, result)
        else:
            message = f"POST {target} answers in a form the hand-off does not carry"
            error = json.dumps(error_body(500, message)).encode()
            control.sendall(answer_frame(500, error, "application/json", {}))

    def _stream(self, control: socket.socket, client: socket.socket, answer: HandedOff) -> None:
        try:
            control.sendall(frame(STREAM))
            received = self._read_frame(control)
        except (OSError, FrameError):
            received = None
        if received is None or received[0] != GO:
            answer.cancel()  # mr left before the events began
            return
        self.server.on_stream()
        result = answer.write_handed_off(client)
        client.close()  # before DONE: mr may write to the client once it reads DONE
        control.sendall(done_frame(result, answer.written()))

    def _read_frame(self, control: socket.socket) -> tuple[bytes, bytes] | None:
        """The next frame, blocking; None if mr closed first."""
        while (found := self._reader.next()) is None:
            data = control.recv(64 * 1024)
            if not data:
                return None
            self._reader.feed(data)
        return found


def serve_handoffs(
    path: str, routes: Routes, on_stream: Callable[[], None] = lambda: None
) -> Callable[[], None]:
    """Listen on ``path`` in a thread of its own; the returned function stops it. The
    thread blocks in ``accept`` (socketserver's ``serve_forever`` would wake twice a second
    to look for a shutdown: CPU an idle engine need not spend)."""
    server = HandoffServer(path, routes, on_stream)

    def accept_forever() -> None:
        while True:
            try:
                request, address = server.get_request()
            except OSError:  # the listening socket was shut down: the engine is stopping
                return
            server.process_request(request, address)  # a thread of its own

    threading.Thread(target=accept_forever, name="handoff", daemon=True).start()

    def stop() -> None:
        with contextlib.suppress(OSError):
            server.socket.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept
        server.server_close()

    return stop
