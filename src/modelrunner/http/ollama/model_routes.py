"""Ollama's model routes under ``/api/``: ``version``, ``tags``, ``ps``, ``show``,
``pull`` (the store's pull, progress as NDJSON status lines) and ``delete``."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator
from typing import Any

import msgspec
from litestar import Request, delete, get, post
from litestar.handlers import HTTPRouteHandler
from litestar.types import ASGIApp

from modelrunner import __version__
from modelrunner.errors import UnknownModel
from modelrunner.http.ollama.errors import (
    ERRORS,
    HANDLERS,
    NDJSON,
    TAGS,
    OllamaError,
    json_answer,
    ollama_error,
    served_name,
)
from modelrunner.http.ollama.models import FactsCache, ps_entry, show_answer, tags_entry
from modelrunner.http.ollama.pull import pull_lines
from modelrunner.http.ollama.shapes import OllamaModelRequest
from modelrunner.http.ollama.translate import BadRequest
from modelrunner.http.translated.answers import StreamAnswer
from modelrunner.http.translated.engine_call import EngineCall
from modelrunner.keep_alive import effective
from modelrunner.manifest.spec import duration_seconds
from modelrunner.reference import parse
from modelrunner.registry import ServedModel
from modelrunner.status import StatusSource
from modelrunner.store.store import Store


async def _nothing() -> None:
    return None


def model_handlers(calls: EngineCall, status: StatusSource, store: Store) -> list[HTTPRouteHandler]:
    registry = calls.forwarder.registry
    facts = FactsCache(store)

    def served_as(name: str) -> str:
        return served_name(calls, name)

    @get("/api/version", tags=TAGS, exception_handlers=HANDLERS)
    async def version() -> dict[str, str]:
        """The server's version."""
        return {"version": __version__}

    @get("/api/tags", tags=TAGS, exception_handlers=HANDLERS, responses=ERRORS)
    async def tags() -> dict[str, list[dict[str, Any]]]:
        """The served models, with size, digest and details from their artifacts."""
        known = {s.name: s for s in status.snapshot()}
        served = [m for m in registry.models() if m.name in known]
        found = await asyncio.to_thread(lambda: [facts.get(known[m.name]) for m in served])
        return {"models": [tags_entry(m.name, f) for m, f in zip(served, found, strict=True)]}

    @get("/api/ps", tags=TAGS, exception_handlers=HANDLERS, responses=ERRORS)
    async def ps() -> dict[str, list[dict[str, Any]]]:
        """The loaded models, and when keep_alive unloads each if no request comes."""
        known = {s.name: s for s in status.snapshot()}
        loaded = [m for m in registry.models() if m.endpoint is not None and m.name in known]

        def keep(m: ServedModel) -> float:
            manifest = duration_seconds(known[m.name].keep_alive, float("inf"))
            return effective(manifest, m.endpoint.keep_alive if m.endpoint else None)

        found = await asyncio.to_thread(lambda: [facts.get(known[m.name]) for m in loaded])
        now_unix, now_mono = time.time(), time.monotonic()
        entries = [
            ps_entry(m, f, keep(m), now_unix, now_mono) for m, f in zip(loaded, found, strict=True)
        ]
        return {"models": entries}

    @post("/api/show", tags=TAGS, status_code=200, exception_handlers=HANDLERS, responses=ERRORS)
    async def show(data: OllamaModelRequest) -> dict[str, Any]:
        """Details, chat template and model_info (the GGUF header) of a served model."""
        if not data.which:
            raise BadRequest("model is required", "model")
        model = registry.lookup(served_as(data.which))
        known = {s.name: s for s in status.snapshot()}
        if model.name not in known:
            raise UnknownModel(f"The model '{data.which}' does not exist")
        found = await asyncio.to_thread(facts.get, known[model.name])
        return show_answer(model, found, data.verbose)

    @post("/api/pull", tags=TAGS, status_code=200, exception_handlers=HANDLERS, responses=ERRORS)
    async def pull(data: OllamaModelRequest) -> ASGIApp:
        """Pull a model into the store; progress as NDJSON status lines unless
        ``"stream": false``."""
        if not data.which:
            raise BadRequest("model is required", "model")
        if data.insecure:
            raise BadRequest(
                "insecure is not supported: loopback registries are spoken to over plain "
                "HTTP; name others in MR_INSECURE_REGISTRIES",
                "insecure",
            )
        ref = str(parse(data.which))  # InvalidReference: 400 before anything starts
        lines = pull_lines(store, ref)
        if not data.stream:
            last: dict[str, Any] = {}
            async for line in lines:
                last = line
            return json_answer(last)

        async def encoded() -> AsyncGenerator[bytes, None]:
            try:
                async for line in lines:
                    yield msgspec.json.encode(line) + b"\n"
            except Exception as exc:  # the status line is sent: say it in the stream
                _, message, _ = ollama_error(exc, "POST /api/pull")
                yield msgspec.json.encode(OllamaError(message)) + b"\n"

        return StreamAnswer(encoded(), NDJSON, {}, _nothing)

    @delete("/api/delete", tags=TAGS, status_code=200, exception_handlers=HANDLERS,
            responses=ERRORS)  # fmt: skip
    async def delete_model(request: Request[Any, Any, Any]) -> None:
        """Remove a model from the store (refused with 409 while an instance serves it)."""
        try:
            data = msgspec.json.decode(await request.body(), type=OllamaModelRequest)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise BadRequest(f"Invalid request body for DELETE /api/delete: {exc}") from None
        if not data.which:
            raise BadRequest("model is required", "model")
        await asyncio.to_thread(store.remove, data.which)

    return [version, tags, ps, show, pull, delete_model]
