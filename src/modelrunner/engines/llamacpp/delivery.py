"""How a generation's events reach its client: on the scheduler thread, between decodes.

With threads = all cores, every core computes during ``llama_decode``, and any other
runnable thread takes a core from a compute thread; llama.cpp's barriers then make the
others wait for it. A Python thread woken per token to write it (JSON, chunk framing, the
GIL) did exactly that, and the engine fell to a third of llama-server's speed. So the
scheduler thread itself turns each event into bytes and sends them (``MSG_DONTWAIT``: it
never blocks on a slow client) after it sampled, before the next decode; the connection's
thread wakes only to start the answer, every ``POLL_SECONDS`` to see that its client is
still there (and to flush what a full socket buffer held back), and at the end.

- ``CollectedAnswer``: a plain answer, built on the scheduler thread; the connection's
  thread sends it once it is complete.
- ``StreamedAnswer``: server-sent events over chunked encoding, written as they come, to
  the connection's socket or to the client's socket mr handed off (engines/handoff.py).

Both take an output per choice (``n``): each choice's events go to its own, and the answer
ends when every choice has finished (usage: the prompt once, the completions summed).
"""

from __future__ import annotations

import logging
import select
import socket
import threading
from collections.abc import Callable, Sequence
from typing import Any, Final

from modelrunner.engines.handoff import HandedOff, HandoffResult
from modelrunner.engines.llamacpp.answers import ChatOutput, combined
from modelrunner.engines.llamacpp.choices import total_usage
from modelrunner.engines.llamacpp.jobs import Delta, Event, Failed, Finished, TokenCounts
from modelrunner.engines.serving import (
    ClientGone,
    Handler,
    RequestError,
    chunk,
    client_gone,
    error_body,
    sse,
)

log = logging.getLogger("modelrunner.llamacpp")

POLL_SECONDS: Final = 0.1
# A client that reads nothing while this much of its stream waits is not reading at all.
MAX_PENDING: Final = 8 * 1024 * 1024
# The stream's end, written by the connection's thread; mr writes its own after a hand-off.
_END: Final = chunk(b"data: [DONE]\n\n") + chunk(b"")
# After mr asks a handed-off stream to stop, how long its queued chunks may take to go out.
_STOP_FLUSH_SECONDS: Final = 1.0


class CollectedAnswer:
    """A plain answer: the tokens are collected where they are sampled."""

    def __init__(self, outputs: Sequence[ChatOutput]) -> None:
        self._outputs = outputs
        self._parts: list[list[str]] = [[] for _ in outputs]
        self._ends: dict[int, Finished] = {}
        self._result: dict[str, Any] | RequestError | None = None
        self._done = threading.Event()

    def deliver(self, event: Event) -> None:
        """On the scheduler thread."""
        try:
            if isinstance(event, Delta):
                self._parts[event.choice].append(event.text)
                self._outputs[event.choice].collect(event)
                return
            if isinstance(event, Finished):
                self._parts[event.choice].append(event.text)
                self._ends[event.choice] = event
                if len(self._ends) < len(self._outputs):
                    return  # other choices still run
                self._result = self._answer()
            else:
                self._result = RequestError(500, event.message)
        except Exception as exc:  # a bug in shaping the answer fails this request only
            log.exception("could not shape an answer")
            self._result = RequestError(500, f"{type(exc).__name__}: {exc}")
        self._done.set()

    def _answer(self) -> dict[str, Any]:
        ends = [self._ends[i] for i in range(len(self._outputs))]
        bodies = [
            output.message("".join(parts), end)
            for output, parts, end in zip(self._outputs, self._parts, ends, strict=True)
        ]
        return combined(bodies, total_usage([end.usage for end in ends]))

    def wait(self, cancel: Callable[[], None]) -> dict[str, Any]:
        """On the connection's thread: the answer, once complete (ClientGone if the
        client left first; the job is cancelled)."""
        while not self._done.wait(POLL_SECONDS):
            if client_gone():
                cancel()
                raise ClientGone
        result = self._result
        if isinstance(result, RequestError):
            raise result
        assert result is not None
        return result


class StreamedAnswer(HandedOff):
    """A streamed answer, sent by the scheduler thread as each event comes."""

    def __init__(
        self, outputs: Sequence[ChatOutput], include_usage: bool, cancel: Callable[[], None]
    ):
        self._outputs = outputs
        self._usages: dict[int, TokenCounts] = {}  # each finished choice's token counts
        self._include_usage = include_usage
        self._cancel = cancel
        self._lock = threading.Lock()
        self._pending = bytearray()
        self._socket: socket.socket | None = None  # set once the headers are out
        self._broken = False
        self._done = threading.Event()
        # A copy of the events, for mr's inspector: kept from the start (the first events
        # may come before the hand-off asks for it), dropped at ``_attach`` unless asked.
        self._echo: list[bytes] | None = []
        self._echo_wanted = False
        self._echoed = 0

    # -- the scheduler thread ---------------------------------------------------------------
    def deliver(self, event: Event) -> None:
        try:
            events, end = self._encode(event)
        except Exception as exc:  # a bug in shaping the answer fails this request only
            log.exception("could not shape a stream's chunk")
            events, end = sse(error_body(500, f"{type(exc).__name__}: {exc}")), True
        with self._lock:
            self._queue(events)
            self._send_some()
        if end:
            self._done.set()

    def _queue(self, events: bytes, first: bool = False) -> None:
        """Queue server-sent events as one HTTP chunk (under the lock)."""
        if not events:
            return
        data = chunk(events)
        if first:
            self._pending[0:0] = data
        else:
            self._pending += data
        if self._echo is not None and self._echoed < MAX_PENDING:
            self._echoed += len(events)
            if first:
                self._echo.insert(0, events)
            else:
                self._echo.append(events)

    def _encode(self, event: Event) -> tuple[bytes, bool]:
        """The event's server-sent events (unframed), and whether the answer ends."""
        if isinstance(event, Delta):
            return _events(self._outputs[event.choice].feed(event.text, event)), False
        if isinstance(event, Finished):
            output = self._outputs[event.choice]
            events = output.feed(event.text, None) + output.finish_chunks(event)
            self._usages[event.choice] = event.usage
            if len(self._usages) < len(self._outputs):
                return _events(events), False  # other choices still run
            if self._include_usage:  # one usage chunk for the whole answer
                usages = [self._usages[i] for i in range(len(self._outputs))]
                events.append(output.usage_chunk(total_usage(usages)))
            return _events(events), True
        assert isinstance(event, Failed)
        return sse(error_body(500, event.message)), True

    def _send_some(self) -> None:
        """Send what the socket takes now, without waiting (under the lock)."""
        sock = self._socket
        if sock is None or self._broken:
            return
        while self._pending:
            try:
                sent = sock.send(self._pending, socket.MSG_DONTWAIT)
            except BlockingIOError:
                break
            except OSError:  # the client left
                self._broken = True
                self._pending.clear()
                return
            del self._pending[:sent]
        if len(self._pending) > MAX_PENDING:
            self._broken = True
            self._pending.clear()

    # -- the connection's thread (or the hand-off's) -----------------------------------------
    def write(self, handler: Handler) -> None:
        handler.start_events()
        self._attach(handler.connection)
        self._pump(_END)

    def write_handed_off(self, client: socket.socket) -> HandoffResult:
        self._attach(client)
        try:
            self._pump(b"")  # mr writes the end
        except ClientGone:  # mr asked to stop: let what is queued go, up to a chunk boundary
            self._flush_for(_STOP_FLUSH_SECONDS)
        finally:
            with self._lock:  # the scheduler thread must never send to it again
                self._socket = None
                clean = not self._pending and not self._broken
        return HandoffResult(clean, self._done.is_set(), self._usage())

    def cancel(self) -> None:
        self._cancel()

    def echo(self) -> None:
        self._echo_wanted = True

    def written(self) -> bytes:
        return b"".join(self._echo) if self._echo is not None else b""

    def _attach(self, sock: socket.socket) -> None:
        with self._lock:
            if not self._echo_wanted:
                self._echo = None
            starts = [c for output in self._outputs for c in output.start_chunks()]
            self._queue(_events(starts), first=True)
            self._socket = sock
            self._send_some()

    def _pump(self, end: bytes) -> None:
        """Until every event is out: flush what the socket held back, watch the client."""
        ended_seen = False
        while True:
            ended = self._done.wait(POLL_SECONDS)
            with self._lock:
                if ended and not ended_seen:
                    ended_seen = True
                    self._pending += end
                    self._send_some()
                broken, left = self._broken, bool(self._pending)
            if broken or client_gone():
                self._cancel()
                raise ClientGone
            if left:
                self._flush_when_writable()
            elif ended:
                return

    def _flush_for(self, seconds: float) -> None:
        for _ in range(max(1, int(seconds / POLL_SECONDS))):
            with self._lock:
                if not self._pending or self._broken:
                    return
            self._flush_when_writable()

    def _usage(self) -> tuple[int, int] | None:
        if len(self._usages) < len(self._outputs):
            return None  # cut short
        total = total_usage([self._usages[i] for i in range(len(self._outputs))])
        return total.prompt_tokens, total.completion_tokens

    def _flush_when_writable(self) -> None:
        assert self._socket is not None
        _, writable, _ = select.select([], [self._socket], [], POLL_SECONDS)
        if writable:
            with self._lock:
                self._send_some()


def _events(events: list[dict[str, Any]]) -> bytes:
    return b"".join(sse(event) for event in events)
