"""The streaming forwarder: one request in, the same bytes to the engine, its answer back.

``Forwarder`` owns the shared ``httpx.AsyncClient`` set (opened and closed by its
``lifespan``). Each proxied request is a ``ProxyCall``, a plain ASGI app the route handler
returns: it resolves the model, holds its endpoint's in-flight slot for the whole answer,
relays server-sent events chunk by chunk as they arrive, and cancels the upstream request
(closing its connection) as soon as the client disconnects.

httpx errors become the project's own here: an instance that cannot be reached is
``ModelUnavailable`` (503, retry), one that fails while answering is ``UpstreamFailed`` (502).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, Final

import httpx
import msgspec

from modelrunner.errors import ModelRunnerError, ModelUnavailable, UpstreamFailed
from modelrunner.http.errors import Problem, from_exception, from_upstream, problem
from modelrunner.http.routing import check_engine
from modelrunner.metrics import Metrics
from modelrunner.registry import Endpoint, Registry, ServedModel

if TYPE_CHECKING:
    from litestar import Litestar
    from litestar.types import Receive, Scope, Send

_UPSTREAM_HEADERS: Final = {"content-type": "application/json", "accept-encoding": "identity"}
_STREAM_HEADERS: Final = ((b"cache-control", b"no-cache"), (b"x-accel-buffering", b"no"))
# Generation can be slow between chunks (or before a whole non-streamed answer).
_TIMEOUT: Final = httpx.Timeout(connect=5.0, read=600.0, write=60.0, pool=60.0)
_LIMITS: Final = httpx.Limits(max_connections=None, max_keepalive_connections=64)
# httpcore's pool scans every connection of a client for each request it assigns, so one
# client's cost per request grows with concurrency (measured: 1570 rps at 1 in flight,
# 1010 at 32). Requests are spread over a few clients, each with a short list to scan.
_CLIENTS: Final = 8
CLIENT_CLOSED: Final = 499  # nginx's status for "the client went away first" (metrics only)


class Forwarder:
    """Sends requests to the instance serving a model; shared by all routes."""

    def __init__(self, registry: Registry, metrics: Metrics) -> None:
        self.registry = registry
        self.metrics = metrics
        self._clients: tuple[httpx.AsyncClient, ...] = ()
        self._next = 0

    @asynccontextmanager
    async def lifespan(self, _app: Litestar) -> AsyncIterator[None]:
        # httpx logs every request at INFO: far too loud (and slow) on the hot path.
        logging.getLogger("httpx").setLevel(logging.WARNING)
        async with contextlib.AsyncExitStack() as stack:
            clients = [httpx.AsyncClient(timeout=_TIMEOUT, limits=_LIMITS) for _ in range(_CLIENTS)]
            for client in clients:
                await stack.enter_async_context(client)
            self._clients = tuple(clients)
            try:
                yield
            finally:
                self._clients = ()

    @property
    def client(self) -> httpx.AsyncClient:
        """The next shared client (round robin)."""
        if not self._clients:
            raise ModelUnavailable("The server is starting or shutting down", retry_after=1.0)
        self._next = (self._next + 1) % len(self._clients)
        return self._clients[self._next]

    def call(self, op: str, segment: str | None, model: str, body: bytes, query: str) -> ProxyCall:
        return ProxyCall(self, op, segment, model, body, query)


class ProxyCall:
    """The ASGI answer to one proxied request."""

    __slots__ = ("_body", "_fw", "_model", "_op", "_query", "_segment", "disconnected", "finished")

    def __init__(
        self, fw: Forwarder, op: str, segment: str | None, model: str, body: bytes, query: str
    ) -> None:
        self._fw = fw
        self._op = op
        self._segment = segment
        self._model = model
        self._body = body
        self._query = query
        self.finished = False  # the last byte is being sent: a disconnect now is normal
        self.disconnected = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        fw = self._fw
        started = time.perf_counter()
        label = "unknown"  # never the requested name: clients must not create series
        status = 500
        try:
            model = fw.registry.lookup(self._model)
            label = model.name
            check_engine(model, self._segment, self._op)
            with fw.registry.acquire(self._model) as (model, endpoint):
                status = await self._guarded(model, endpoint, receive, send)
        except ModelRunnerError as exc:
            found = from_exception(exc, f"POST /v1/{self._op}")
            status = found.status
            await self._send_problem(send, found)
        finally:
            fw.metrics.record_request(self._op, label, status, time.perf_counter() - started)

    async def _guarded(
        self, model: ServedModel, endpoint: Endpoint, receive: Receive, send: Send
    ) -> int:
        """Forward, cancelling everything (upstream included) if the client goes away."""
        task = asyncio.current_task()
        if task is None:
            raise RuntimeError("ProxyCall must run inside an asyncio task")
        watcher = asyncio.create_task(self._watch(receive, task))
        try:
            return await self._forward(model, endpoint, send)
        except asyncio.CancelledError:
            if not self.disconnected:
                raise
            task.uncancel()
            return CLIENT_CLOSED
        finally:
            watcher.cancel()

    async def _watch(self, receive: Receive, task: asyncio.Task[Any]) -> None:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                if not self.finished:
                    self.disconnected = True
                    task.cancel()
                return

    async def _forward(self, model: ServedModel, endpoint: Endpoint, send: Send) -> int:
        client = self._fw.client
        where = (
            f"POST /v1/{self._op} for model '{model.name}' "
            f"({endpoint.engine} instance {endpoint.instance_id} at {endpoint.base_url})"
        )
        url = f"{endpoint.base_url}/v1/{self._op}"
        if self._query:
            url = f"{url}?{self._query}"
        request = client.build_request("POST", url, content=self._body, headers=_UPSTREAM_HEADERS)
        try:
            response = await client.send(request, stream=True)
        except httpx.ConnectError as exc:
            raise ModelUnavailable(f"Cannot reach the engine for {where}: {exc}") from None
        except httpx.HTTPError as exc:
            raise UpstreamFailed(f"The engine failed on {where}: {_describe(exc)}") from None
        try:
            if response.status_code >= 400:
                body = await self._read(response, where)
                found = from_upstream(response.status_code, body, where)
                await self._send_problem(send, found)
                return found.status
            content_type = response.headers.get("content-type", "application/json")
            if content_type.startswith("text/event-stream"):
                return await self._relay_stream(response, content_type, model.name, where, send)
            body = await self._read(response, where)
            await send(_start(response.status_code, content_type, len(body)))
            self.finished = True
            await send({"type": "http.response.body", "body": body, "more_body": False})
            self._count_tokens(model.name, usage_of_json(body))
            return response.status_code
        finally:
            await response.aclose()

    async def _relay_stream(
        self, response: httpx.Response, content_type: str, model: str, where: str, send: Send
    ) -> int:
        await send(_start(response.status_code, content_type, None, _STREAM_HEADERS))
        status = response.status_code
        try:
            async for chunk in response.aiter_raw():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
                if b'"usage"' in chunk:
                    self._count_tokens(model, usage_of_sse(chunk))
        except httpx.HTTPError as exc:
            # The status line is gone: say it the way OpenAI streams say it.
            found = problem(502, f"The engine failed mid-stream on {where}: {_describe(exc)}",
                            code="upstream_failed")  # fmt: skip
            error_event = b"data: " + found.encode() + b"\n\n"
            await send({"type": "http.response.body", "body": error_event, "more_body": True})
            status = found.status
        self.finished = True
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        return status

    async def _read(self, response: httpx.Response, where: str) -> bytes:
        try:
            return await response.aread()
        except httpx.HTTPError as exc:
            raise UpstreamFailed(f"The engine failed on {where}: {_describe(exc)}") from None

    async def _send_problem(self, send: Send, found: Problem) -> None:
        body = found.encode()
        start = _start(found.status, "application/json", len(body),
                       tuple((k.encode(), v.encode()) for k, v in found.headers))  # fmt: skip
        await send(start)
        self.finished = True
        await send({"type": "http.response.body", "body": body, "more_body": False})

    def _count_tokens(self, model: str, usage: Usage | None) -> None:
        if usage is not None:
            self._fw.metrics.add_tokens(model, usage.prompt_tokens, usage.completion_tokens)


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


def _describe(exc: httpx.HTTPError) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


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
