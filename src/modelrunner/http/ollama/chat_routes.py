"""Ollama's model calls under ``/api/`` (``chat``, ``generate``, ``embed``,
``embeddings``): each translated to the OpenAI call the engines serve (``translate.py``),
streamed as NDJSON line by line as the engine's events arrive."""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator
from typing import Any

import msgspec
from litestar import post
from litestar.handlers import HTTPRouteHandler
from litestar.types import ASGIApp

from modelrunner.errors import RequestTimedOut, UpstreamFailed
from modelrunner.http.inspector.assemble import OllamaAssembler
from modelrunner.http.inspector.recorder import Recorder
from modelrunner.http.inspector.translated import recording
from modelrunner.http.ollama.errors import (
    ERRORS,
    HANDLERS,
    NDJSON,
    TAGS,
    OllamaError,
    handle_error,
    json_answer,
    served_name,
)
from modelrunner.http.ollama.shapes import (
    KeepAlive,
    OllamaChatRequest,
    OllamaEmbeddingsRequest,
    OllamaEmbedRequest,
    OllamaGenerateRequest,
)
from modelrunner.http.ollama.translate import (
    OllamaStream,
    chat_answer,
    chat_request,
    embed_answer,
    generate_answer,
    generate_request,
    keep_alive_seconds,
    timestamp,
)
from modelrunner.http.translated.answers import JsonAnswer, StreamAnswer
from modelrunner.http.translated.engine_call import EngineCall, EventStream
from modelrunner.http.translated.fast_path import TranslatedFastPath
from modelrunner.registry import Registry


def _lines(objects: list[dict[str, Any]]) -> bytes:
    return b"".join(msgspec.json.encode(o) + b"\n" for o in objects)


def _warning(warnings: list[str]) -> dict[str, str]:
    if not warnings:
        return {}
    return {"warning": ", ".join(f'299 modelrunner "{w}"' for w in warnings)}


def _assembler(content_type: bytes) -> OllamaAssembler | None:
    return OllamaAssembler() if content_type.startswith(NDJSON.encode()) else None


def apply_keep_alive(registry: Registry, served: str, value: KeepAlive | None) -> None:
    """A request's keep_alive replaces the manifest's for the running instance, or for the
    next one when none runs (standby, starting)."""
    seconds = keep_alive_seconds(value)
    if seconds is None:
        return
    model = registry.lookup(served)
    if model.endpoint is not None:
        model.endpoint.keep_alive = seconds
    elif model.hold_keep_alive is not None:
        model.hold_keep_alive(seconds)


async def ndjson(stream: EventStream, translate: OllamaStream) -> AsyncGenerator[bytes, None]:
    """The engine's events as Ollama's NDJSON lines; a failure ends with an error line."""
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


def chat_handlers(
    calls: EngineCall, fast: TranslatedFastPath, recorder: Recorder | None = None
) -> list[HTTPRouteHandler]:
    registry = calls.forwarder.registry

    def served_as(name: str) -> str:
        return served_name(calls, name)

    # The request inspector records the model calls (see inspector_translated).
    record = [] if recorder is None else [recording(recorder, _assembler, handle_error, served_as)]

    def keep_alive(served: str, value: KeepAlive | None) -> None:
        apply_keep_alive(registry, served, value)

    def load(name: str, answer: dict[str, Any], keep: KeepAlive | None) -> JsonAnswer:
        """Ollama loads the model for a request with nothing to answer; with keep_alive 0
        it unloads it (``ollama stop``)."""
        served = served_as(name)
        reason = "unload" if keep_alive_seconds(keep) == 0 else "load"
        if reason == "load" or registry.lookup(served).endpoint is not None:
            keep_alive(served, keep)  # (not loaded and keep_alive 0: nothing to do)
            with registry.acquire(served):
                pass  # a model in standby is asked to load (503 + Retry-After meanwhile)
        return json_answer({"model": name, "created_at": timestamp(), **answer, "done": True,
                      "done_reason": reason})  # fmt: skip

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
        served = served_as(name)
        keep_alive(served, keep)
        route = f"api/{kind}"
        if stream:
            events = await calls.stream(op, served, body, route=route)
            lines = ndjson(events, OllamaStream(kind, name, started))
            return StreamAnswer(lines, NDJSON, _warning(warnings), events.aclose)
        done = await calls.complete(op, served, body, route=route)
        shape = chat_answer if kind == "chat" else generate_answer
        return json_answer(shape(done.body, name, started, time.perf_counter()), _warning(warnings))

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
        served = served_as(data.model)
        keep_alive(served, data.keep_alive)
        done = await calls.complete("embeddings", served, {"input": inputs}, route="api/embed")
        return embed_answer(done.body, data.model, started, time.perf_counter())

    @post("/api/embeddings", tags=TAGS, status_code=200, exception_handlers=HANDLERS,
          responses=ERRORS, middleware=record)  # fmt: skip
    async def embeddings(data: OllamaEmbeddingsRequest) -> dict[str, Any]:
        """The older single-prompt embedding call."""
        served = served_as(data.model)
        keep_alive(served, data.keep_alive)
        done = await calls.complete(
            "embeddings", served, {"input": data.prompt}, route="api/embeddings"
        )
        vectors = embed_answer(done.body, data.model, 0.0, 0.0)["embeddings"]
        return {"embedding": vectors[0] if vectors else []}

    return [chat, generate, embed, embeddings]
