"""One OpenAI-shaped call to the engine serving a model, for routes that translate another
API (Ollama, Anthropic Messages, OpenAI Responses) to the calls the engines already serve.

What it offers (a stable interface; other route modules build on it):

- ``EngineCall(forwarder)``, made once per app.
- ``await call.complete(op, model, body, segment=None, route=None) -> Answer``: sends
  ``POST /v1/{op}`` (``op`` as in ``chat/completions``, ``completions``, ``embeddings``)
  with the JSON ``body`` (a dict; ``model`` is set to the served model's name) and returns
  ``Answer(model, body)``, the engine's decoded JSON answer. ``path`` sends it to another
  engine path instead (``/tokenize``).
- ``await call.stream(op, model, body, segment=None, route=None) -> EventStream``: the same
  with ``"stream": true`` (and ``stream_options.include_usage``, so engines that can report
  usage do). It returns once the engine accepted the request (its status line arrived),
  so every refusal is still an exception the route can answer with a status code.
  ``async for event in stream`` then yields each server-sent ``data:`` event as a decoded
  dict, as it arrives (nothing is buffered beyond one event), ending at ``[DONE]``;
  ``stream.batches()`` yields the same events grouped by network read (lists), and
  ``stream.ended`` is true from the batch the engine's end arrived with. Always
  ``await stream.aclose()`` (or ``async with stream:``): it gives the model's in-flight
  slot back and, if the answer was not read to its end, closes the engine connection,
  which stops the generation (what a client disconnect must do).
- ``segment`` is the engine a path names (``/engines/{engine}/...``): a model of another
  engine is ``UnknownModel``. ``route`` labels the request metrics (default: ``op``).
- The model's ``limits`` apply as on the proxied routes (``upstream/limits.py``): a call
  holds one of its ``max_concurrent_requests`` slots (queued, then ``Overloaded``, 429)
  until it returns or its stream is closed, and ``request_timeout`` counts from the call:
  past it the engine's request is cancelled and ``RequestTimedOut`` (504) is raised, before
  the answer or mid-stream.
- Errors are the project's own: ``UnknownModel`` (404), ``ModelUnavailable`` (503, with
  ``retry_after``; a model in standby is asked to load), ``Overloaded`` (429),
  ``RequestTimedOut`` (504), ``UpstreamFailed`` (502, also raised
  mid-stream when the connection breaks or the engine sends an error event), and
  ``EngineRejected`` (the engine's own 4xx or busy 503, with its OpenAI-shaped ``problem``).
  ``problem_of(exc, where)`` turns any of them (or any other exception) into the
  OpenAI-shaped ``ErrorAnswer`` (status, message), which each API then says in its own shape.

While a call runs, the model's endpoint counts it in flight (so a replaced instance drains
it), request metrics are recorded under ``route`` and token usage is counted when the
engine reports it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from typing import Any, Final

import msgspec

from modelrunner.errors import ModelRunnerError, ModelUnavailable, RequestTimedOut, UpstreamFailed
from modelrunner.http.errors import ErrorAnswer, from_exception, from_upstream
from modelrunner.http.routing import check_engine
from modelrunner.http.upstream.connection import CannotConnect, UpstreamError
from modelrunner.http.upstream.forwarder import (
    CLIENT_CLOSED,
    Forwarder,
    failed_before_answer,
    read_answer,
    withdrawn,
)
from modelrunner.http.upstream.limits import deadline, limited, timed, timed_out
from modelrunner.http.upstream.pool import UpstreamResponse
from modelrunner.http.upstream.revision import answered_by, current_session
from modelrunner.registry import Endpoint, ServedModel

_DONE: Final = b"[DONE]"
_MAX_EVENT: Final = 16 * 1024 * 1024  # one SSE event larger than this is an engine fault


class EngineRejected(ModelRunnerError):
    """The engine refused the request with a 4xx (a prompt too long, a bad field)."""

    def __init__(self, problem: ErrorAnswer) -> None:
        super().__init__(problem.body.error.message)
        self.problem = problem


def problem_of(exc: BaseException, where: str) -> ErrorAnswer:
    """The OpenAI-shaped error for any exception raised by a call (or around it)."""
    if isinstance(exc, EngineRejected):
        return exc.problem
    return from_exception(exc, where)


class Answer(msgspec.Struct, frozen=True):
    model: ServedModel
    body: dict[str, Any]


class EngineCall:
    """Sends OpenAI-shaped requests to the engines through the forwarder's upstream pool."""

    __slots__ = ("_fw",)

    def __init__(self, fw: Forwarder) -> None:
        self._fw = fw

    @property
    def forwarder(self) -> Forwarder:
        return self._fw

    def resolve(
        self, model: str, segment: str | None = None, op: str = "chat/completions"
    ) -> ServedModel:
        """The served model for a name or alias (``UnknownModel`` if none, or another engine's)."""
        served = self._fw.registry.lookup(model)
        check_engine(served, segment, op)
        return served

    async def complete(
        self,
        op: str,
        model: str,
        body: dict[str, Any],
        segment: str | None = None,
        route: str | None = None,
        path: str | None = None,
    ) -> Answer:
        started = time.perf_counter()
        label, status = "unknown", 500
        chosen: Endpoint | None = None
        try:
            served = self.resolve(model, segment, op)
            label = served.name
            cut = deadline(served)
            async with limited(served, cut):
                with self._fw.registry.acquire(model, _session(served)) as (served, endpoint):
                    chosen = endpoint
                    answered_by(endpoint.revision)
                    body = {**body, "model": served.name}
                    target = path or f"/v1/{op}"
                    where = _where(target, served, endpoint)
                    async with timed(cut, served, where):
                        response = await self._post(target, served, endpoint, body)
                        try:
                            raw = await read_answer(response, where)
                        finally:
                            response.close()
            try:
                decoded = msgspec.json.decode(raw)
            except msgspec.DecodeError:
                raise UpstreamFailed(
                    f"The engine for '{served.name}' answered {op} with invalid JSON"
                ) from None
            if not isinstance(decoded, dict):
                raise UpstreamFailed(
                    f"The engine for '{served.name}' answered {op} with no JSON object"
                )
            status = 200
            self._count(served.name, decoded.get("usage"))
            return Answer(served, decoded)
        except EngineRejected as exc:
            status = exc.problem.status
            raise
        except ModelRunnerError as exc:
            status = from_exception(exc, op).status
            raise
        finally:
            self._fw.metrics.record_request(
                route or op, label, status, time.perf_counter() - started
            )
            self._record_revision(label, chosen, status)

    async def stream(
        self,
        op: str,
        model: str,
        body: dict[str, Any],
        segment: str | None = None,
        route: str | None = None,
    ) -> EventStream:
        started = time.perf_counter()
        label, status = "unknown", 500
        slot = AsyncExitStack()
        chosen: Endpoint | None = None
        try:
            served = self.resolve(model, segment, op)
            label = served.name
            cut = deadline(served)
            await slot.enter_async_context(limited(served, cut))
            served, endpoint = slot.enter_context(
                self._fw.registry.acquire(model, _session(served))
            )
            chosen = endpoint
            answered_by(endpoint.revision)
            options = body.get("stream_options")
            body = {
                **body,
                "model": served.name,
                "stream": True,
                "stream_options": {
                    "include_usage": True,
                    **(options if isinstance(options, dict) else {}),
                },
            }
            where = _where(f"/v1/{op}", served, endpoint)
            async with timed(cut, served, where):
                response = await self._post(f"/v1/{op}", served, endpoint, body)
            if not (response.content_type or "").startswith("text/event-stream"):
                response.close()
                raise UpstreamFailed(
                    f"The engine did not stream its answer to {where} "
                    f"(content type {response.content_type or 'none'})"
                )
        except BaseException as exc:
            await slot.aclose()
            if isinstance(exc, EngineRejected):
                status = exc.problem.status
            elif isinstance(exc, ModelRunnerError):
                status = from_exception(exc, op).status
            elif isinstance(exc, asyncio.CancelledError):
                status = CLIENT_CLOSED
            if chosen is not None and _failed(status):
                chosen.errors += 1  # (acquire counts only what is raised inside its block)
            self._fw.metrics.record_request(
                route or op, label, status, time.perf_counter() - started
            )
            self._record_revision(label, chosen, status)
            raise
        return EventStream(self, served, endpoint, op, response, slot, route or op, started, cut)

    # -- internals ----------------------------------------------------------------
    async def _post(
        self, target: str, served: ServedModel, endpoint: Endpoint, body: dict[str, Any]
    ) -> UpstreamResponse:
        where = _where(target, served, endpoint)
        try:
            response = await self._fw.pool.post(
                endpoint.base_url, target, msgspec.json.encode(body)
            )
        except CannotConnect as exc:
            raise ModelUnavailable(f"Cannot reach the engine for {where}: {exc}") from None
        except UpstreamError as exc:
            raise failed_before_answer(self._fw.registry, served, endpoint, where, exc) from None
        if response.status >= 400:
            try:
                raw = await read_answer(response, where)
            finally:
                response.close()
            found = from_upstream(response.status, raw, where)
            if found.status >= 500 and found.status != 503:
                raise UpstreamFailed(found.body.error.message)
            raise EngineRejected(found)
        return response

    def _record_revision(self, model: str, endpoint: Endpoint | None, status: int) -> None:
        """Per-revision outcomes (``mr_revision_requests_total``), as the proxy records them."""
        if endpoint is not None and endpoint.revision:
            self._fw.metrics.record_revision(model, endpoint.revision, _failed(status))

    def _count(self, model: str, usage: Any) -> None:
        if isinstance(usage, dict):
            prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
            self._fw.metrics.add_tokens(
                model,
                prompt if isinstance(prompt, int) else 0,
                completion if isinstance(completion, int) else 0,
            )


class EventStream:
    """The engine's server-sent events, decoded one by one as they arrive."""

    __slots__ = ("_buffer", "_call", "_closed", "_deadline", "_response", "_route", "_slot",
                 "_started", "_status", "ended", "endpoint", "model", "op")  # fmt: skip

    def __init__(
        self,
        call: EngineCall,
        model: ServedModel,
        endpoint: Endpoint,
        op: str,
        response: UpstreamResponse,
        slot: AsyncExitStack,
        route: str,
        started: float,
        deadline: float | None = None,
    ) -> None:
        self._call = call
        self.model = model
        self.endpoint = endpoint
        self.op = op
        self._response = response
        self._slot = slot
        self._route = route
        self._started = started
        self._deadline = deadline  # limits.request_timeout: the stream ends there
        self._buffer = b""
        self._status = CLIENT_CLOSED  # until the stream is read to its end
        # Set once the engine's end arrived, before the last batch is yielded: a translator
        # can send its closing events with that batch.
        self.ended = False
        self._closed = False

    async def __aenter__(self) -> EventStream:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.aclose()

    def __aiter__(self) -> AsyncIterator[dict[str, Any]]:
        return self._events()

    async def _events(self) -> AsyncIterator[dict[str, Any]]:
        async for batch in self.batches():
            for event in batch:
                yield event

    async def batches(self) -> AsyncIterator[list[dict[str, Any]]]:
        """The events as they arrive, grouped by what arrived together (one network read):
        a translator can answer them with one write instead of one per event."""
        where = _where(f"/v1/{self.op}", self.model, self.endpoint)
        try:
            while True:
                found, self._buffer = split_events(self._buffer)
                batch: list[dict[str, Any]] = []
                for data in found:
                    if data == _DONE:
                        self._status = 200
                        self.ended = True
                        if batch:
                            yield batch
                        return
                    event = _decode_event(data, where)
                    if "usage" in event:
                        self._call._count(self.model.name, event["usage"])
                    batch.append(event)
                if batch:
                    yield batch
                try:
                    if self._deadline is None:
                        chunk = await self._response.chunk()
                    else:
                        async with asyncio.timeout_at(self._deadline):
                            chunk = await self._response.chunk()
                except UpstreamError as exc:
                    why = withdrawn(self._call.forwarder.registry, self.model, self.endpoint)
                    raise UpstreamFailed(
                        f"The engine failed mid-stream on {where}: {exc}"
                        + (f" (the instance {why})" if why else "")
                    ) from None
                except TimeoutError:
                    raise timed_out(self.model, where) from None
                if chunk is None:
                    # An engine that ends without [DONE] has still ended.
                    self._status = 200
                    self.ended = True
                    return
                self._buffer += chunk
                if len(self._buffer) > _MAX_EVENT:
                    raise UpstreamFailed(f"The engine sent an oversized event on {where}")
        except UpstreamFailed:
            self._status = 502
            raise
        except RequestTimedOut:
            self._status = 504
            raise

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._response.close()  # not read to its end: the connection is closed, generation stops
        await self._slot.aclose()
        if _failed(self._status):
            self.endpoint.errors += 1  # a mid-stream failure counts for the canary's verdict
        fw = self._call.forwarder
        fw.metrics.record_request(
            self._route, self.model.name, self._status, time.perf_counter() - self._started
        )
        self._call._record_revision(self.model.name, self.endpoint, self._status)


def split_events(buffer: bytes) -> tuple[list[bytes], bytes]:
    """The ``data`` of each complete server-sent event in ``buffer`` (multi-line data joined
    by newlines; comments and events without data skipped), and the incomplete rest."""
    if b"\r" in buffer:
        buffer = buffer.replace(b"\r\n", b"\n")
    *complete, rest = buffer.split(b"\n\n")
    found = []
    for event in complete:
        data = [
            line[5:].removeprefix(b" ") for line in event.split(b"\n") if line.startswith(b"data:")
        ]
        if data:
            found.append(data[0] if len(data) == 1 else b"\n".join(data))
    return found, rest


def _decode_event(data: bytes, where: str) -> dict[str, Any]:
    try:
        event = msgspec.json.decode(data)
    except msgspec.DecodeError:
        raise UpstreamFailed(f"The engine sent an event that is not JSON on {where}") from None
    if not isinstance(event, dict):
        raise UpstreamFailed(f"The engine sent an event that is not a JSON object on {where}")
    error = event.get("error")
    if error is not None:
        message = error.get("message") if isinstance(error, dict) else error
        raise UpstreamFailed(f"The engine failed mid-stream on {where}: {message}")
    return event


def _failed(status: int) -> bool:
    """A server-side failure (5xx), not a client that left: what a canary is judged on."""
    return status >= 500 and status != CLIENT_CLOSED


def _session(model: ServedModel) -> str | None:
    return current_session() if model.split is not None else None


def _where(target: str, model: ServedModel, endpoint: Endpoint) -> str:
    return (
        f"POST {target} for model '{model.name}' "
        f"({endpoint.engine} instance {endpoint.instance_id} at {endpoint.base_url})"
    )
