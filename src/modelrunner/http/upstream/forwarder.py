"""The streaming forwarder: one request in, the same bytes to the engine, its answer back.

``Forwarder`` owns the upstream connection pool (opened and closed by its ``lifespan``).
Each proxied request is a ``ProxyCall``, a plain ASGI app: it resolves the model, holds its
endpoint's in-flight slot for the whole answer, relays server-sent events chunk by chunk as
they arrive, and cancels the upstream request (closing its connection) as soon as the client
disconnects. A stream for an engine that takes hand-offs (llama.cpp) is not relayed: the
engine writes its events to the client's socket itself (``_hand_off``; engines/handoff.py).

Upstream failures become the project's own here: an instance that cannot be reached is
``ModelUnavailable`` (503, retry), one that fails while answering is ``UpstreamFailed`` (502).

The model's ``limits`` apply here, as the registry entry carries them now (in place, no
restart): its gate (``max_concurrent_requests``, a bounded FIFO queue, then 429) and its
``request_timeout``, counted from arrival: past it the upstream request is cancelled and the
answer is 504, or a final error event when the stream has begun.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Coroutine
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, Final

import httpx
import msgspec

from modelrunner.engines.handoff import ANSWER, STREAM, parse_answer
from modelrunner.errors import (
    ModelRunnerError,
    ModelUnavailable,
    RequestTimedOut,
    UnknownModel,
    UpstreamFailed,
)
from modelrunner.http.errors import ErrorAnswer, from_exception, from_upstream, problem
from modelrunner.http.inspector.recorder import Recorder, abandon, observe
from modelrunner.http.routing import check_engine
from modelrunner.http.upstream.connection import CannotConnect, UpstreamError
from modelrunner.http.upstream.handoff import (
    CUT,
    Handoff,
    Outcome,
    client_transport,
    cut,
    flushed,
)
from modelrunner.http.upstream.limits import deadline, limited, timed
from modelrunner.http.upstream.pool import UpstreamPool, UpstreamResponse
from modelrunner.http.upstream.revision import HEADER as REVISION_HEADER
from modelrunner.http.upstream.revision import session_of
from modelrunner.metrics import Metrics
from modelrunner.registry import Endpoint, Registry, ServedModel

if TYPE_CHECKING:
    from litestar import Litestar
    from litestar.types import Receive, Scope, Send

_DONE_EVENT: Final = b"data: [DONE]\n\n"  # ends a handed-off stream that finished
_STREAM_HEADERS: Final = ((b"cache-control", b"no-cache"), (b"x-accel-buffering", b"no"))
_CONNECT_TIMEOUT: Final = 5.0
# Generation can be slow between chunks (or before a whole non-streamed answer).
_READ_TIMEOUT: Final = 600.0
_SCRAPE_TIMEOUT: Final = httpx.Timeout(10.0)
_WATCH_AFTER: Final = 0.05  # seconds; see _LateWatch
# After a handed-off stream's deadline, how long its engine has to stop and say so.
_STOP_GRACE: Final = 5.0
RETRY_AFTER: Final = 2.0  # seconds, for a request whose instance went away before answering
CLIENT_CLOSED: Final = 499  # nginx's status for "the client went away first" (metrics only)


class Forwarder:
    """Sends requests to the instance serving a model; shared by all routes."""

    def __init__(self, registry: Registry, metrics: Metrics) -> None:
        self.registry = registry
        self.metrics = metrics
        self._pool: UpstreamPool | None = None
        self._client: httpx.AsyncClient | None = None
        self.recorder: Recorder | None = None  # the request inspector, when it is on

    @asynccontextmanager
    async def lifespan(self, _app: Litestar) -> AsyncIterator[None]:
        # httpx logs every request at INFO: too loud for the engines' /metrics scrapes.
        logging.getLogger("httpx").setLevel(logging.WARNING)
        self._pool = UpstreamPool(_CONNECT_TIMEOUT, _READ_TIMEOUT)
        try:
            async with httpx.AsyncClient(timeout=_SCRAPE_TIMEOUT) as client:
                self._client = client
                yield
        finally:
            self._client = None
            self._pool.close()
            self._pool = None

    @property
    def pool(self) -> UpstreamPool:
        """The proxied requests' connections to the engines."""
        if self._pool is None:
            raise ModelUnavailable("The server is starting or shutting down", retry_after=1.0)
        return self._pool

    @property
    def client(self) -> httpx.AsyncClient:
        """For the engines' /metrics (not the proxied requests: see ``pool``)."""
        if self._client is None:
            raise ModelUnavailable("The server is starting or shutting down", retry_after=1.0)
        return self._client

    def call(
        self,
        op: str,
        segment: str | None,
        model: str,
        body: bytes,
        query: str,
        *,
        stream: bool = False,
    ) -> ProxyCall:
        return ProxyCall(self, op, segment, model, body, query, stream)


class ProxyCall:
    """The ASGI answer to one proxied request."""

    __slots__ = (
        "_body",
        "_deadline",
        "_fw",
        "_model",
        "_op",
        "_query",
        "_recorded",
        "_revision",
        "_segment",
        "_stream",
        "_transport",
        "disconnected",
        "finished",
    )

    def __init__(
        self,
        fw: Forwarder,
        op: str,
        segment: str | None,
        model: str,
        body: bytes,
        query: str,
        stream: bool = False,
    ) -> None:
        self._fw = fw
        self._stream = stream  # the body asks for a stream: it may be handed off
        self._transport: asyncio.Transport | None = None  # the client's, for a hand-off
        self._recorded: Send | None = None  # the inspector's send, if it records this one
        self._op = op
        self._segment = segment
        self._model = model
        self._body = body
        self._query = query
        self.finished = False  # the last byte is being sent: a disconnect now is normal
        self.disconnected = False
        self._deadline: float | None = None  # loop time past which request_timeout cuts it
        self._revision: bytes | None = None  # the revision answering (X-Model-Revision)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        fw = self._fw
        started = time.perf_counter()
        label = "unknown"  # never the requested name: clients must not create series
        status = 500
        if fw.recorder is not None:
            send = fw.recorder.watch(self._model, scope, self._body, send)
        self._recorded = send
        if self._stream:
            self._transport = client_transport(scope)
        send = self._revisioned(send)
        chosen: Endpoint | None = None
        try:
            model = fw.registry.lookup(self._model)
            label = model.name
            check_engine(model, self._segment, self._op)
            self._deadline = deadline(model)
            async with limited(model, self._deadline):
                session = session_of(scope) if model.split is not None else None
                with fw.registry.acquire(self._model, session) as (model, endpoint):
                    chosen = endpoint
                    self._revision = endpoint.revision.encode("latin-1")
                    status = await self._guarded(model, endpoint, receive, send)
                    if status >= 500 and status != CLIENT_CLOSED:
                        endpoint.errors += 1
        except ModelRunnerError as exc:
            found = from_exception(exc, f"POST /v1/{self._op}")
            status = found.status
            await self._send_problem(send, found)
        finally:
            fw.metrics.record_request(self._op, label, status, time.perf_counter() - started)
            if chosen is not None and chosen.revision:
                failed = status >= 500 and status != CLIENT_CLOSED
                fw.metrics.record_revision(label, chosen.revision, failed)
            if fw.recorder is not None:
                abandon(send)

    def _revisioned(self, send: Send) -> Send:
        """Every answer of a served model says which revision gave it (X-Model-Revision)."""

        async def revisioned(message: Any) -> None:
            if message["type"] == "http.response.start" and self._revision:
                headers = [*message.get("headers", ()), (REVISION_HEADER, self._revision)]
                message = {**message, "headers": headers}
            await send(message)

        return revisioned

    async def _guarded(
        self, model: ServedModel, endpoint: Endpoint, receive: Receive, send: Send
    ) -> int:
        """Forward, cancelling everything (upstream included) if the client goes away."""
        task = asyncio.current_task()
        if task is None:
            raise RuntimeError("ProxyCall must run inside an asyncio task")
        watch = _LateWatch(self._watch(receive, task))
        try:
            return await self._forward(model, endpoint, send)
        except asyncio.CancelledError:
            if not self.disconnected:
                raise
            task.uncancel()
            return CLIENT_CLOSED
        finally:
            watch.stop()

    async def _watch(self, receive: Receive, task: asyncio.Task[Any]) -> None:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                if not self.finished:
                    self.disconnected = True
                    task.cancel()
                return

    async def _forward(self, model: ServedModel, endpoint: Endpoint, send: Send) -> int:
        pool = self._fw.pool
        where = (
            f"POST /v1/{self._op} for model '{model.name}' "
            f"({endpoint.engine} instance {endpoint.instance_id} at {endpoint.base_url})"
        )
        route = f"/v1/{self._op}"  # the hand-off's target: the engine's routes take no query
        if endpoint.handoff is not None and self._transport is not None:
            return await self._hand_off(endpoint.handoff, self._transport, route, model,
                                        endpoint, where, send)  # fmt: skip
        target = f"{route}?{self._query}" if self._query else route
        try:
            async with timed(self._deadline, model, where):
                response = await pool.post(endpoint.base_url, target, self._body)
        except CannotConnect as exc:
            raise ModelUnavailable(f"Cannot reach the engine for {where}: {exc}") from None
        except UpstreamError as exc:
            raise failed_before_answer(self._fw.registry, model, endpoint, where, exc) from None
        try:
            content_type = response.content_type or "application/json"
            if response.status < 400 and content_type.startswith("text/event-stream"):
                return await self._relay_stream(
                    response, content_type, model, endpoint, where, send
                )
            async with timed(self._deadline, model, where):
                body = await read_answer(response, where)
            return await self._send_answer(
                response.status, content_type, {}, body, model, where, send
            )
        finally:
            response.close()

    async def _relay_stream(
        self,
        response: UpstreamResponse,
        content_type: str,
        model: ServedModel,
        endpoint: Endpoint,
        where: str,
        send: Send,
    ) -> int:
        await send(_start(response.status, content_type, None, _STREAM_HEADERS))
        status = response.status
        found: ErrorAnswer | None = None
        try:
            async with timed(self._deadline, model, where):
                while (chunk := await response.chunk()) is not None:
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
                    if b'"usage"' in chunk:
                        self._count_tokens(model.name, usage_of_sse(chunk))
        except UpstreamError as exc:
            # The status line is gone: say it the way OpenAI streams say it.
            why = withdrawn(self._fw.registry, model, endpoint)
            found = problem(502, f"The engine failed mid-stream on {where}: {exc}"
                            + (f" (the instance {why})" if why else ""),
                            code="upstream_failed")  # fmt: skip
        except RequestTimedOut as exc:
            found = from_exception(exc, where)
        if found is not None:
            error_event = b"data: " + found.encode() + b"\n\n"
            await send({"type": "http.response.body", "body": error_event, "more_body": True})
            status = found.status
        self.finished = True
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        return status

    async def _hand_off(
        self,
        path: str,
        client: asyncio.Transport,
        target: str,
        model: ServedModel,
        endpoint: Endpoint,
        where: str,
        send: Send,
    ) -> int:
        """The engine writes the stream's events to the client's socket itself; mr writes
        the head and the last chunk (engines/handoff.py)."""
        exchange = Handoff(path)
        echo = self._fw.recorder is not None  # the inspector records what it cannot see
        try:
            try:
                async with timed(self._deadline, model, where):
                    kind, payload = await exchange.open(client, target, self._body, echo)
            except CannotConnect as exc:
                raise ModelUnavailable(f"Cannot reach the engine for {where}: {exc}") from None
            except UpstreamError as exc:
                raise failed_before_answer(self._fw.registry, model, endpoint, where, exc) from None
            if kind == ANSWER:
                return await self._send_answer(*parse_answer(payload), model, where, send)
            if kind != STREAM:
                raise UpstreamFailed(f"The engine answered {where} out of turn ({kind!r})")
            return await self._handed_off(exchange, client, model, endpoint, where, send)
        finally:
            exchange.close()

    async def _handed_off(
        self,
        exchange: Handoff,
        client: asyncio.Transport,
        model: ServedModel,
        endpoint: Endpoint,
        where: str,
        send: Send,
    ) -> int:
        await send(_start(200, "text/event-stream", None, _STREAM_HEADERS))
        await flushed(client)
        await exchange.go()
        found: ErrorAnswer | None = None
        try:
            async with timed(self._deadline, model, where):
                outcome = await exchange.done()
        except RequestTimedOut as exc:
            found = from_exception(exc, where)
            outcome = await _stopped(exchange)
        except UpstreamError as exc:
            found = problem(502, f"The engine broke the stream on {where}: {exc}",
                            code="upstream_failed")  # fmt: skip
            outcome = CUT
        self.finished = True
        if outcome is not None and not outcome.finished and found is None:
            found = problem(502, f"The engine stopped the stream on {where} before its end",
                            code="upstream_failed")  # fmt: skip
        if outcome is None:  # the engine closed its end first: it died, its copy went with it
            why = withdrawn(self._fw.registry, model, endpoint)
            found = found or problem(502, f"The engine failed mid-stream on {where}"
                                     + (f" (the instance {why})" if why else ""),
                                     code="upstream_failed")  # fmt: skip
        else:
            observe(self._recorded, outcome.echo)
            if not outcome.clean:  # stopped mid-chunk (or its client left): nothing can follow
                cut(client)
                return found.status if found is not None else CLIENT_CLOSED
            if outcome.prompt_tokens is not None and outcome.completion_tokens is not None:
                usage = Usage(outcome.prompt_tokens, outcome.completion_tokens)
                self._count_tokens(model.name, usage)
        # The engine writes no [DONE]: a client sees the end only once mr has recorded it.
        end = b"data: " + found.encode() + b"\n\n" if found is not None else _DONE_EVENT
        await send({"type": "http.response.body", "body": end, "more_body": False})
        return found.status if found is not None else 200

    async def _send_answer(
        self,
        status: int,
        content_type: str,
        headers: dict[str, str],
        body: bytes,
        model: ServedModel,
        where: str,
        send: Send,
    ) -> int:
        """An answer the engine gave whole (an error, or a plain one), relayed or over the
        hand-off."""
        if status >= 400:
            found = from_upstream(status, body, where)
            await self._send_problem(send, found)
            return found.status
        extra = tuple((k.encode("latin-1"), v.encode("latin-1")) for k, v in headers.items())
        await send(_start(status, content_type, len(body), extra))
        self.finished = True
        await send({"type": "http.response.body", "body": body, "more_body": False})
        self._count_tokens(model.name, usage_of_json(body))
        return status

    async def _send_problem(self, send: Send, found: ErrorAnswer) -> None:
        body = found.encode()
        start = _start(found.status, "application/json", len(body),
                       tuple((k.encode(), v.encode()) for k, v in found.headers))  # fmt: skip
        await send(start)
        self.finished = True
        await send({"type": "http.response.body", "body": body, "more_body": False})

    def _count_tokens(self, model: str, usage: Usage | None) -> None:
        if usage is not None:
            self._fw.metrics.add_tokens(model, usage.prompt_tokens, usage.completion_tokens)


async def _stopped(exchange: Handoff) -> Outcome | None:
    """Ask the engine to stop a handed-off stream (its deadline passed) and wait, a little,
    for it to say how the stream ended."""
    exchange.stop()
    try:
        async with asyncio.timeout(_STOP_GRACE):
            return await exchange.done()
    except (TimeoutError, UpstreamError):
        return CUT  # a hung engine may still write: the connection cannot go on


class _LateWatch:
    """Runs the disconnect watcher, but only once the answer takes ``_WATCH_AFTER``: a task
    per request cost ~15% of mr's throughput on short answers, which end sooner. A client
    that left before then is noticed when it starts (uvicorn keeps the disconnect)."""

    __slots__ = ("_coro", "_task", "_timer")

    def __init__(self, coro: Coroutine[Any, Any, None]) -> None:
        self._coro = coro
        self._task: asyncio.Task[None] | None = None
        self._timer = asyncio.get_running_loop().call_later(_WATCH_AFTER, self._start)

    def _start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._coro)

    def stop(self) -> None:
        self._timer.cancel()
        if self._task is not None:
            self._task.cancel()
        else:
            self._coro.close()  # never started


def withdrawn(registry: Registry, model: ServedModel, endpoint: Endpoint) -> str | None:
    """Why the model is no longer routed to ``endpoint`` (its instance hung and was killed,
    crashed, or was replaced), or None while it still is."""
    try:
        current = registry.lookup(model.name)
    except UnknownModel:
        return "was retired"
    if current.endpoint is endpoint:
        return None
    return current.unavailable_reason or "was replaced"


def failed_before_answer(
    registry: Registry, model: ServedModel, endpoint: Endpoint, where: str, exc: Exception
) -> ModelRunnerError:
    """The connection broke before the engine's status line. If the instance was withdrawn
    meanwhile (a hung engine is withdrawn before it is killed), the request did nothing
    yet: 503 with Retry-After, for the replacement. Otherwise the engine failed: 502."""
    why = withdrawn(registry, model, endpoint)
    if why is not None:
        return ModelUnavailable(
            f"The instance serving {where} {why}; retry shortly", retry_after=RETRY_AFTER
        )
    return UpstreamFailed(f"The engine failed on {where}: {exc}")


async def read_answer(response: UpstreamResponse, where: str) -> bytes:
    """The engine's whole answer; a broken one is ``UpstreamFailed`` (502)."""
    try:
        return await response.read()
    except UpstreamError as exc:
        raise UpstreamFailed(f"The engine failed on {where}: {exc}") from None


def _start(
    status: int,
    content_type: str,
    length: int | None,
    extra: tuple[tuple[bytes, bytes], ...] = (),
) -> Any:
    headers = [(b"content-type", content_type.encode("latin-1")), *extra]
    if length is not None:
        headers.append((b"content-length", str(length).encode()))
    return {"type": "http.response.start", "status": status, "headers": headers}


# -- token usage, read cheaply from answers ---------------------------------------------
class Usage(msgspec.Struct):
    prompt_tokens: int = 0
    completion_tokens: int = 0


class _WithUsage(msgspec.Struct):
    usage: Usage | None = None


_usage_decoder: Final = msgspec.json.Decoder(_WithUsage)


def usage_of_json(body: bytes) -> Usage | None:
    """The ``usage`` of an OpenAI answer, or None (not JSON, or none reported)."""
    try:
        return _usage_decoder.decode(body).usage
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None


def usage_of_sse(chunk: bytes) -> Usage | None:
    """The last ``usage`` reported by the ``data:`` events in a chunk of an SSE stream."""
    found: Usage | None = None
    for line in chunk.split(b"\n"):
        if line.startswith(b"data:") and b'"usage"' in line:
            usage = usage_of_json(line[5:].strip())
            if usage is not None:
                found = usage
    return found
