"""The llama.cpp engine's routes, served by the shared engine HTTP plumbing (``serving``).

A generation is a job for the scheduler; its route waits for the job's events on the
connection's thread. A client that goes away (streaming or not) cancels its job, which
frees the slot at the scheduler's next step: the wait looks for a vanished client every
POLL_SECONDS, also while tokens keep coming.
"""

from __future__ import annotations

import os
import queue
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Final

from modelrunner.engines.llamacpp.answers import ChatOutput
from modelrunner.engines.llamacpp.engine import Engine
from modelrunner.engines.llamacpp.jobs import Delta, Event, Failed, Finished, Job, QueueFull
from modelrunner.engines.llamacpp.metrics import CONTENT_TYPE
from modelrunner.engines.llamacpp.tokenize import detokenize, tokenize
from modelrunner.engines.serving import (
    Answer,
    ClientGone,
    RawReply,
    RequestError,
    Routes,
    client_gone,
    error_body,
    model_list,
    with_fault,
)
from modelrunner.engines.serving import serve as serve_routes

POLL_SECONDS: Final = 0.1
RETRY_AFTER: Final = "1"

JobMaker = Callable[[Mapping[str, Any]], "tuple[Job, ChatOutput]"]


def routes(engine: Engine) -> Routes:
    """The engine's route table: OpenAI's paths, vLLM's tokenizer paths, health, metrics."""

    def embeddings(body: dict[str, Any]) -> Answer:
        if engine.embedder is None:
            raise RequestError(
                400,
                f"model {engine.name} does not serve embeddings (set llama.cpp.embeddings: true)",
            )
        return engine.embedder.answer(body, engine.name)

    return {
        ("GET", "/health"): lambda _: {"status": "ok"},
        ("GET", "/v1/models"): lambda _: model_list([engine.name], "llama.cpp"),
        ("GET", "/metrics"): lambda _: RawReply(engine.metrics.exposition(), CONTENT_TYPE),
        ("POST", "/v1/chat/completions"): _generation(engine, engine.chat_job),
        ("POST", "/v1/completions"): _generation(engine, engine.completion_job),
        ("POST", "/v1/embeddings"): embeddings,
        # Answered at once on the connection's thread: the tokenizer needs no slot.
        ("POST", "/tokenize"): lambda body: tokenize(engine, body),
        ("POST", "/detokenize"): lambda body: detokenize(engine, body),
    }


def _generation(engine: Engine, make_job: JobMaker) -> Callable[[dict[str, Any]], Answer]:
    def answer(body: dict[str, Any]) -> Answer:
        job, output = make_job(body)
        try:
            engine.scheduler.submit(job)
        except QueueFull:
            job.chain.close()
            engine.metrics.rejected()
            raise RequestError(
                503,
                "the model is busy: every slot and the queue are full",
                headers={"Retry-After": RETRY_AFTER},
            ) from None
        if job.generation.stream:
            return _stream(engine, job, output)
        return _collect(engine, job, output)

    return answer


def _next(engine: Engine, job: Job, clock: list[float]) -> Event:
    """The job's next event; a client that has gone cancels the job (ClientGone)."""
    while True:
        now = time.monotonic()
        if now >= clock[0]:
            clock[0] = now + POLL_SECONDS
            if client_gone():
                engine.scheduler.cancel(job)
                raise ClientGone
        try:
            return job.events.get(timeout=POLL_SECONDS)
        except queue.Empty:
            continue


def _collect(engine: Engine, job: Job, output: ChatOutput) -> dict[str, Any]:
    parts: list[str] = []
    clock = [0.0]
    while True:
        event = _next(engine, job, clock)
        if isinstance(event, Delta):
            parts.append(event.text)
            output.collect(event)
        elif isinstance(event, Finished):
            parts.append(event.text)
            return output.message("".join(parts), event)
        else:
            raise RequestError(500, event.message)


def _stream(engine: Engine, job: Job, output: ChatOutput) -> Iterator[list[dict[str, Any]]]:
    clock = [0.0]
    done = False
    try:
        yield output.start_chunks()
        while True:
            event = _next(engine, job, clock)
            if isinstance(event, Delta):
                yield output.feed(event.text, event)
            elif isinstance(event, Finished):
                done = True
                yield output.feed(event.text, None) + output.finish_chunks(event)
                if job.generation.include_usage:
                    yield [output.usage_chunk(event.usage)]
                return
            else:
                assert isinstance(event, Failed)
                done = True
                yield [error_body(500, event.message)]
                return
    finally:
        if not done:  # the client left mid-stream (the stream was closed): free the slot
            engine.scheduler.cancel(job)


def serve(host: str, port: int, engine: Engine) -> None:
    """Serve until SIGTERM or SIGINT, then stop the scheduler and return.
    ``MR_ENGINE_FAULT=5xx`` (a manifest's ``env``, for tests): ``serving.with_fault``."""
    table = with_fault(routes(engine), os.environ.get("MR_ENGINE_FAULT", ""))
    engine.start()
    try:
        serve_routes(host, port, table)
    finally:
        engine.stop()
