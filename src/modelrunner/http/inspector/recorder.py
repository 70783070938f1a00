"""The request inspector: the last N request/answer pairs per model, kept in memory.

``Recorder.watch`` wraps a proxied (or translated: ``inspector_translated``) request's
ASGI ``send``: it passes every message on
first and looks at it afterwards, so nothing is held back. A streamed answer is
reassembled as it passes (``StreamAssembler``), read ``FEED_BATCH`` bytes at a time; a
whole answer is kept as is. Bodies are
turned into text (media shortened, cut at 64 KiB) only when someone reads them, except
bodies over the limit, which are cut as soon as the answer is complete (not before: the
client gets its answer first) so they do not stay in memory.

Only the method, path (no query), status, timing, user agent and the bodies are kept:
never a header that could carry a key (``Authorization``, ``x-api-key``).

``GET /engines/requests`` reads ``snapshot``; its follow mode ``subscribe``s and gets each
pair once its answer is complete.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Final, Protocol

import msgspec

from modelrunner.errors import ModelRunnerError
from modelrunner.http.inspector.body import MAX_RECORDED, StreamAssembler, cut, recorded_text
from modelrunner.http.inspector.tokens import input_tokens

if TYPE_CHECKING:
    from litestar.types import Message, Scope, Send

    from modelrunner.registry import Registry

_FOLLOW_BACKLOG: Final = 100  # pairs a slow follower may lag behind before it misses some
# A stream's chunks are given to its assembler this many bytes at a time, not one by one:
# a chunk is one token, and parsing each alone (on a cold cache, between the engine's
# decodes) made mr's CPU per relayed token 0.22 ms against 0.18 without the inspector;
# read in batches, 0.19 (bench: 4 streams of 512 tokens, medians of 4 alternating runs).
FEED_BATCH: Final = 16 * 1024


class Assembler(Protocol):
    """Reassembles one API's streamed answer as it passes (see ``inspector_assemble``)."""

    error: Any

    def feed(self, chunk: bytes) -> None: ...

    def result(self) -> dict[str, Any] | None: ...


# The assembler for an answer of this content type; None: the answer is kept as it is.
AssemblerFor = Callable[[bytes], Assembler | None]


def openai_assembler(content_type: bytes) -> Assembler | None:
    return StreamAssembler() if content_type.startswith(b"text/event-stream") else None


class RequestRecord(msgspec.Struct, kw_only=True):
    """One request/answer pair as ``GET /engines/requests`` shows it (Docker Model
    Runner's fields, plus ``duration_ms``, ``input_tokens`` and ``stream``)."""

    id: str
    model: str
    method: str
    url: str
    request: str
    response: str | None = None  # the answer, when it succeeded
    error: str | None = None  # the answer, when it failed (status >= 400)
    timestamp: int  # unix seconds when the request arrived
    status_code: int | None = None  # None while the answer is still on its way
    duration_ms: float | None = None
    input_tokens: int | None = None  # the prompt's tokens, as the answer reports them
    user_agent: str | None = None
    stream: bool = False
    complete: bool = False  # False while answering, or when the client left before the end


class ModelRecords(msgspec.Struct, kw_only=True):
    count: int
    model: str
    records: list[RequestRecord]


class Entry:
    """One pair while and after it happens; text is produced when it is first read."""

    __slots__ = (
        "_request",
        "_response",
        "_started",
        "_view",
        "complete",
        "duration_ms",
        "id",
        "method",
        "model",
        "path",
        "status",
        "stream",
        "timestamp",
        "user_agent",
    )

    def __init__(
        self, id_: str, model: str, method: str, path: str, user_agent: str | None, body: bytes
    ) -> None:
        self.id = id_
        self.model = model
        self.method = method
        self.path = path
        self.user_agent = None if user_agent is None else cut(user_agent, 512)
        self.timestamp = int(time.time())
        self._started = time.perf_counter()
        self._request: bytes | str = body  # the request holds it anyway until it ends
        self._response: bytes | str | None = None
        self.status: int | None = None
        self.duration_ms: float | None = None
        self.stream = False
        self.complete = False
        self._view: RequestRecord | None = None

    def finish(self, status: int | None, answer: bytes | str | None, complete: bool) -> None:
        """The answer is over (``complete`` False when the client left first)."""
        if status is not None:
            self.status = status
        # Bodies over the limit are cut now (the answer is out already), so the inspector
        # does not keep big bytes alive.
        if isinstance(self._request, bytes) and len(self._request) > MAX_RECORDED:
            self._request = recorded_text(self._request)
        if answer is not None:
            too_big = len(answer) > MAX_RECORDED
            self._response = recorded_text(answer) if too_big else answer
        self.duration_ms = round((time.perf_counter() - self._started) * 1000, 3)
        self.complete = complete
        self._view = None

    def view(self) -> RequestRecord:
        if self._view is not None:
            return self._view
        answer = None if self._response is None else recorded_text(self._response)
        failed = self.status is not None and self.status >= 400
        record = RequestRecord(
            id=self.id,
            model=self.model,
            method=self.method,
            url=self.path,
            request=recorded_text(self._request),
            response=None if failed else answer,
            error=answer if failed else None,
            timestamp=self.timestamp,
            status_code=self.status,
            duration_ms=self.duration_ms,
            input_tokens=None if failed or self._response is None else input_tokens(self._response),
            user_agent=self.user_agent,
            stream=self.stream,
            complete=self.complete,
        )
        if self.duration_ms is not None:
            self._view = record  # final: cache it
        return record


class Recorder:
    """Keeps the last ``per_model`` pairs of each served model (by its canonical name)."""

    def __init__(self, per_model: int, registry: Registry) -> None:
        self.per_model = per_model
        self._registry = registry
        self._records: dict[str, deque[Entry]] = {}
        self._ids = itertools.count(1)
        self._followers: set[asyncio.Queue[Entry]] = set()

    def begin(
        self, model: str, method: str, path: str, user_agent: str | None, body: bytes
    ) -> Entry:
        entry = Entry(f"req-{next(self._ids)}", model, method, path, user_agent, body)
        kept = self._records.get(model)
        if kept is None:
            kept = self._records[model] = deque(maxlen=self.per_model)
        kept.append(entry)  # the oldest falls out
        return entry

    def done(self, entry: Entry) -> None:
        """Hand a finished pair to the followers (a full follower misses it)."""
        for queue in self._followers:
            if queue.qsize() < _FOLLOW_BACKLOG:
                queue.put_nowait(entry)

    def begin_for(
        self, requested: str, method: str, path: str, user_agent: str | None, body: bytes
    ) -> Entry | None:
        """``begin`` for a requested name or alias; None when no manifest serves it (those
        requests are not recorded: a client must not fill memory with made-up names)."""
        try:
            model = self._registry.lookup(requested).name
        except ModelRunnerError:
            return None
        return self.begin(model, method, path, user_agent, body)

    def watch(
        self,
        requested: str,
        scope: Scope,
        body: bytes,
        send: Send,
        assembler_for: AssemblerFor = openai_assembler,
    ) -> Send:
        """``send`` recording the answer of a request for ``requested`` (a name or alias);
        unchanged for a model no manifest serves. A streamed answer is reassembled by
        the ``assembler_for`` its content type (default: OpenAI's server-sent events)."""
        user_agent = None
        for name, value in scope["headers"]:
            if name == b"user-agent":
                user_agent = value.decode("latin-1")
                break
        method = str(scope.get("method", "POST"))
        entry = self.begin_for(requested, method, scope["path"], user_agent, body)
        return send if entry is None else _Watch(self, entry, send, assembler_for)

    def snapshot(self, model: str | None = None) -> list[ModelRecords]:
        """Every model's pairs, oldest first; or one model's (a name or alias)."""
        if model is not None:
            model = self.canonical(model)
            names = [model] if model in self._records else []
        else:
            names = sorted(self._records)
        return [self.group(name, list(self._records[name])) for name in names]

    def canonical(self, model: str) -> str:
        """The served name of a name or alias (a retired model's pairs stay under its name)."""
        try:
            return self._registry.lookup(model).name
        except ModelRunnerError:
            return model

    @staticmethod
    def group(model: str, entries: list[Entry]) -> ModelRecords:
        return ModelRecords(count=len(entries), model=model, records=[e.view() for e in entries])

    @contextmanager
    def follow(self) -> Iterator[asyncio.Queue[Entry]]:
        """A queue that gets every pair finished from now on, until the context ends."""
        queue: asyncio.Queue[Entry] = asyncio.Queue()
        self._followers.add(queue)
        try:
            yield queue
        finally:
            self._followers.discard(queue)


class _Watch:
    """The recording ``send`` of one proxied request."""

    __slots__ = ("_assembler", "_assembler_for", "_entry", "_parts", "_recorder", "_send", "_size")

    def __init__(
        self, recorder: Recorder, entry: Entry, send: Send, assembler_for: AssemblerFor
    ) -> None:
        self._recorder = recorder
        self._entry = entry
        self._send = send
        self._assembler_for = assembler_for
        self._assembler: Assembler | None = None
        self._parts: list[bytes] = []
        self._size = 0

    async def __call__(self, message: Message) -> None:
        await self._send(message)  # the client first; recording never delays it
        seen: Any = message  # ASGI messages are plain dicts
        kind = seen["type"]
        if kind == "http.response.start":
            self._entry.status = seen["status"]
            for name, value in seen.get("headers", ()):
                if name == b"content-type":
                    self._assembler = self._assembler_for(value)
                    self._entry.stream = self._assembler is not None
        elif kind == "http.response.body":
            self._keep(seen.get("body", b""))
            if not seen.get("more_body", False):
                self._entry.finish(None, self._answer(), complete=True)
                self._recorder.done(self._entry)

    def _keep(self, chunk: bytes) -> None:
        """The whole answer, or the stream's chunks its assembler has not read yet."""
        if chunk:
            self._parts.append(chunk)
            self._size += len(chunk)
            if self._assembler is not None and self._size >= FEED_BATCH:
                self._feed(self._assembler)

    def _feed(self, assembler: Assembler) -> None:
        assembler.feed(self._parts[0] if len(self._parts) == 1 else b"".join(self._parts))
        self._parts.clear()
        self._size = 0

    def _answer(self) -> bytes | str:
        assembler = self._assembler
        if assembler is None:
            return self._parts[0] if len(self._parts) == 1 else b"".join(self._parts)
        if self._parts:
            self._feed(assembler)
        if assembler.error is not None:
            return msgspec.json.encode(assembler.error)
        final = assembler.result()
        return b"" if final is None else msgspec.json.encode(final)

    def observed(self, body: bytes) -> None:
        """Body bytes that reached the client without passing here (a stream its engine
        wrote itself: http/upstream/handoff.py)."""
        self._keep(body)

    def failed(self, status: int, answer: bytes) -> None:
        """The route failed before its answer started: keep the error it answers with."""
        if self._entry.duration_ms is None and self._entry.status is None:
            self._entry.finish(status, answer, complete=True)
            self._recorder.done(self._entry)

    def abandoned(self) -> None:
        """The client left before the end: keep what passed."""
        if self._entry.duration_ms is None:
            self._entry.finish(None, self._answer(), complete=False)
            self._recorder.done(self._entry)


def observe(send: Any, body: bytes) -> None:
    """Record answer bytes the client got past ``send`` (no-op for an unwatched ``send``)."""
    if isinstance(send, _Watch):
        send.observed(body)


def abandon(send: Any) -> None:
    """Mark a watched request's answer as cut short (no-op for an unwatched ``send``)."""
    if isinstance(send, _Watch):
        send.abandoned()


def fail(send: Any, status: int, answer: bytes) -> None:
    """Record the error answer of a watched request that failed before its answer started
    (no-op for an unwatched ``send``, or once the answer started)."""
    if isinstance(send, _Watch):
        send.failed(status, answer)
