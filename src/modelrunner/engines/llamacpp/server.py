"""The llama.cpp engine's routes, served by the shared engine HTTP plumbing (``serving``).

A generation is a job for the scheduler; the scheduler thread delivers its answer
(``delivery.py``) while the connection's thread waits. A client that goes away (streaming
or not) cancels its job, which frees the slot at the scheduler's next step.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final

from modelrunner.engines.handoff import serve_handoffs
from modelrunner.engines.llamacpp.answers import ChatOutput
from modelrunner.engines.llamacpp.delivery import CollectedAnswer, StreamedAnswer
from modelrunner.engines.llamacpp.engine import Engine
from modelrunner.engines.llamacpp.jobs import Job, QueueFull
from modelrunner.engines.llamacpp.metrics import CONTENT_TYPE
from modelrunner.engines.llamacpp.tokenize import detokenize, tokenize
from modelrunner.engines.serving import (
    Answer,
    RawReply,
    RequestError,
    Routes,
    model_list,
    with_fault,
)
from modelrunner.engines.serving import serve as serve_routes

RETRY_AFTER: Final = "1"

JobMaker = Callable[[Mapping[str, Any]], "tuple[Job, Sequence[ChatOutput]]"]


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
        job, outputs = make_job(body)  # an output per choice

        def cancel() -> None:
            engine.scheduler.cancel(job)

        sink: StreamedAnswer | CollectedAnswer
        if job.generation.stream:
            sink = StreamedAnswer(outputs, job.generation.include_usage, cancel)
        else:
            sink = CollectedAnswer(outputs)
        job.sink = sink  # before submit: every event goes to it
        try:
            engine.scheduler.submit(job)
        except QueueFull:
            job.close()
            engine.metrics.rejected()
            raise RequestError(
                503,
                "the model is busy: every slot and the queue are full",
                headers={"Retry-After": RETRY_AFTER},
            ) from None
        if isinstance(sink, StreamedAnswer):
            return sink
        return sink.wait(cancel)

    return answer


def serve(host: str, port: int, engine: Engine, handoff: str | None = None) -> None:
    """Serve until SIGTERM or SIGINT, then stop the scheduler and return; with ``handoff``,
    also take mr's streams on that Unix socket (engines/handoff.py).
    ``MR_ENGINE_FAULT=5xx`` (a manifest's ``env``, for tests): ``serving.with_fault``."""
    table = with_fault(routes(engine), os.environ.get("MR_ENGINE_FAULT", ""))
    engine.start()
    stop_handoffs = serve_handoffs(handoff, table, engine.metrics.handed_off) if handoff else None
    try:
        serve_routes(host, port, table)
    finally:
        if stop_handoffs is not None:
            stop_handoffs()
        engine.stop()
