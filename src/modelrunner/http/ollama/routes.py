"""The Ollama API under ``/api/``: each call translated to the OpenAI call the engines serve
(``ollama_translate``), streamed as NDJSON line by line as the engine's events arrive, and
every error in Ollama's shape, ``{"error": "..."}``, with its status code."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator
from typing import Any, Final

import msgspec
from litestar import Request, Response, delete, get, post
from litestar.handlers import HTTPRouteHandler
from litestar.openapi.datastructures import ResponseSpec
from litestar.types import ASGIApp, ExceptionHandlersMap

from modelrunner import __version__
from modelrunner.errors import (
    InvalidReference,
    ModelInUse,
    ModelNotFound,
    RegistryError,
    RequestTimedOut,
    UnknownModel,
    UpstreamFailed,
    UsageError,
)
from modelrunner.http.inspector.assemble import OllamaAssembler
from modelrunner.http.inspector.recorder import Recorder
from modelrunner.http.inspector.translated import recording
from modelrunner.http.ollama.models import FactsCache, ps_entry, show_answer, tags_entry
from modelrunner.http.ollama.pull import pull_lines
from modelrunner.http.ollama.shapes import (
    KeepAlive,
    OllamaChatRequest,
    OllamaEmbeddingsRequest,
    OllamaEmbedRequest,
    OllamaGenerateRequest,
    OllamaModelRequest,
)
from modelrunner.http.ollama.translate import (
    BadRequest,
    StreamTranslator,
    chat_answer,
    chat_request,
    embed_answer,
    generate_answer,
    generate_request,
    keep_alive_seconds,
    timestamp,
)
from modelrunner.http.translated.answers import JsonAnswer, StreamAnswer
from modelrunner.http.translated.engine_call import EngineCall, EventStream, problem_of
from modelrunner.http.translated.fast_path import TranslatedFastPath
from modelrunner.keep_alive import effective
from modelrunner.manifest.spec import duration_seconds
from modelrunner.reference import parse
from modelrunner.registry import ServedModel
from modelrunner.status import StatusSource
from modelrunner.store.store import Store

TAGS: Final = ["Ollama"]
NDJSON: Final = "application/x-ndjson"


class OllamaError(msgspec.Struct):
    error: str


ERRORS: Final = {
    code: ResponseSpec(OllamaError, description=text, generate_examples=False)
    for code, text in {
        400: "Invalid body, or a field mr cannot honour",
        401: "Missing or wrong API key",
        404: "Unknown model",
        429: "limits.max_concurrent_requests reached, see Retry-After",
        502: "The engine failed",
        503: "The model is starting, see Retry-After",
        504: "Longer than limits.request_timeout",
    }.items()
}


def ollama_error(exc: BaseException, where: str) -> tuple[int, str, dict[str, str]]:
    """Status, message and headers of the Ollama answer to any exception."""
    if isinstance(exc, BadRequest):
        return 400, f"{exc.field}: {exc}" if exc.field else str(exc), {}
    if isinstance(exc, InvalidReference | UsageError):
        return 400, str(exc), {}
    if isinstance(exc, ModelNotFound):
        return 404, str(exc), {}
    if isinstance(exc, ModelInUse):
        return 409, str(exc), {}
    if isinstance(exc, RegistryError):
        return 502, str(exc), {}
    found = problem_of(exc, where)
    return found.status, found.body.error.message, dict(found.headers)


def handle_error(request: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    status, message, headers = ollama_error(exc, f"{request.method} {request.url.path}")
    body = msgspec.json.encode(OllamaError(message))
    return Response(body, status_code=status, media_type="application/json", headers=headers)


HANDLERS: Final[ExceptionHandlersMap] = {Exception: handle_error}


def _json(content: dict[str, Any], headers: dict[str, str] | None = None) -> JsonAnswer:
    return JsonAnswer(msgspec.json.encode(content), headers or {})


def _lines(objects: list[dict[str, Any]]) -> bytes:
    return b"".join(msgspec.json.encode(o) + b"\n" for o in objects)


async def _nothing() -> None:
    return None


def _warning(warnings: list[str]) -> dict[str, str]:
    if not warnings:
        return {}
    return {"warning": ", ".join(f'299 modelrunner "{w}"' for w in warnings)}


def _assembler(content_type: bytes) -> OllamaAssembler | None:
    return OllamaAssembler() if content_type.startswith(NDJSON.encode()) else None


def ollama_handlers(
    calls: EngineCall,
    status: StatusSource,
    store: Store,
    fast: TranslatedFastPath,
    recorder: Recorder | None = None,
) -> list[HTTPRouteHandler]:
    registry = calls.forwarder.registry
    facts = FactsCache(store)

    def served_name(name: str) -> str:
        """The name or alias as served; Ollama clients add ``:latest`` to bare names."""
        try:
            calls.resolve(name)
        except UnknownModel:
            bare = name.removesuffix(":latest")
            if bare == name:
                raise
            calls.resolve(bare)
            return bare
        return name

    # The request inspector records the model calls (see inspector_translated).
    record = (
        [] if recorder is None else [recording(recorder, _assembler, handle_error, served_name)]
    )

    def keep_alive(served: str, value: KeepAlive | None) -> None:
        """A request's keep_alive replaces the manifest's for the running instance."""
        seconds = keep_alive_seconds(value)
        endpoint = registry.lookup(served).endpoint
        if seconds is not None and endpoint is not None:
            endpoint.keep_alive = seconds

    def load(name: str, answer: dict[str, Any], keep: KeepAlive | None) -> JsonAnswer:
        """Ollama loads the model for a request with nothing to answer; with keep_alive 0
        it unloads it (``ollama stop``)."""
        served = served_name(name)
        reason = "unload" if keep_alive_seconds(keep) == 0 else "load"
        if reason == "load" or registry.lookup(served).endpoint is not None:
            keep_alive(served, keep)  # (not loaded and keep_alive 0: nothing to do)
            with registry.acquire(served):
                pass  # a model in standby is asked to load (503 + Retry-After meanwhile)
        return _json({"model": name, "created_at": timestamp(), **answer, "done": True,
                      "done_reason": reason})  # fmt: skip

    async def ndjson(
        stream: EventStream, translate: StreamTranslator
    ) -> AsyncGenerator[bytes, None]:
        async with stream:
            try:
                finished = False
                async for batch in stream.batches():
                    now = time.perf_counter()
                    lines = [line for event in batch for line in translate.feed(event, now)]
                    if stream.ended:  # the end came with this batch: one write for both
                        lines += translate.finish(now)
                        finished = True
                    if lines:
                        yield _lines(lines)
                if not finished:
                    yield _lines(translate.finish(time.perf_counter()))
            except (UpstreamFailed, RequestTimedOut) as exc:
                yield msgspec.json.encode(OllamaError(str(exc))) + b"\n"

    async def answer(
        kind: str,
        op: str,
        name: str,
        body: dict[str, Any],
        stream: bool,
        warnings: list[str],
        keep: KeepAlive | None,
    ) -> ASGIApp:
        started = time.perf_counter()
        served = served_name(name)
        keep_alive(served, keep)
        route = f"api/{kind}"
        if stream:
            events = await calls.stream(op, served, body, route=route)
            lines = ndjson(events, StreamTranslator(kind, name, started))
            return StreamAnswer(lines, NDJSON, _warning(warnings), events.aclose)
        done = await calls.complete(op, served, body, route=route)
        shape = chat_answer if kind == "chat" else generate_answer
        return _json(shape(done.body, name, started, time.perf_counter()), _warning(warnings))

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
        model = registry.lookup(served_name(data.which))
        known = {s.name: s for s in status.snapshot()}
        if model.name not in known:
            raise UnknownModel(f"The model '{data.which}' does not exist")
        found = await asyncio.to_thread(facts.get, known[model.name])
        return show_answer(model, found, data.verbose)

    async def chat_answer_for(data: OllamaChatRequest, _segment: str = "") -> ASGIApp:
        if not data.messages:
            message = {"role": "assistant", "content": ""}
            return load(data.model, {"message": message}, data.keep_alive)
        body, warnings = chat_request(data)
        return await answer(
            "chat", "chat/completions", data.model, body, data.stream, warnings, data.keep_alive
        )

    async def generate_answer_for(data: OllamaGenerateRequest, _segment: str = "") -> ASGIApp:
        op, body, warnings = generate_request(data)
        if not data.prompt:
            return load(data.model, {"response": ""}, data.keep_alive)
        return await answer("generate", op, data.model, body, data.stream, warnings,
                            data.keep_alive)  # fmt: skip

    @post("/api/chat", tags=TAGS, status_code=200, exception_handlers=HANDLERS, responses=ERRORS,
          middleware=[*record, fast.middleware(OllamaChatRequest, chat_answer_for)])  # fmt: skip
    async def chat(data: OllamaChatRequest) -> ASGIApp:
        """A chat turn; NDJSON lines unless ``"stream": false``."""
        return await chat_answer_for(data)

    short_generate = fast.middleware(OllamaGenerateRequest, generate_answer_for)

    @post("/api/generate", tags=TAGS, status_code=200, exception_handlers=HANDLERS,
          responses=ERRORS, middleware=[*record, short_generate])  # fmt: skip
    async def generate(data: OllamaGenerateRequest) -> ASGIApp:
        """A completion of ``prompt`` (a chat turn unless ``raw``); NDJSON unless
        ``"stream": false``."""
        return await generate_answer_for(data)

    @post("/api/embed", tags=TAGS, status_code=200, exception_handlers=HANDLERS, responses=ERRORS,
          middleware=record)  # fmt: skip
    async def embed(data: OllamaEmbedRequest) -> dict[str, Any]:
        """Embeddings of one or more inputs."""
        started = time.perf_counter()
        inputs = [data.input] if isinstance(data.input, str) else data.input
        served = served_name(data.model)
        keep_alive(served, data.keep_alive)
        done = await calls.complete("embeddings", served, {"input": inputs}, route="api/embed")
        return embed_answer(done.body, data.model, started, time.perf_counter())

    @post("/api/embeddings", tags=TAGS, status_code=200, exception_handlers=HANDLERS,
          responses=ERRORS, middleware=record)  # fmt: skip
    async def embeddings(data: OllamaEmbeddingsRequest) -> dict[str, Any]:
        """The older single-prompt embedding call."""
        served = served_name(data.model)
        keep_alive(served, data.keep_alive)
        done = await calls.complete(
            "embeddings", served, {"input": data.prompt}, route="api/embeddings"
        )
        vectors = embed_answer(done.body, data.model, 0.0, 0.0)["embeddings"]
        return {"embedding": vectors[0] if vectors else []}

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
            return _json(last)

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

    return [version, tags, ps, show, chat, generate, embed, embeddings, pull, delete_model]
