"""The engine's Prometheus metrics, served at ``/metrics`` (llama-server's ``llamacpp:``
names where they mean the same); mr's own /metrics re-exposes them with a ``model`` label."""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"
# One step is one llama_decode: from a few ms (one token per slot) to seconds (a long chunk).
STEP_BUCKETS: Final = (
    0.0025, 0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip


class EngineMetrics:
    """Implements the scheduler's StepObserver."""

    def __init__(self, slots: int) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        reg = self.registry
        self._prompt = Counter(
            "llamacpp:prompt_tokens",
            "Prompt tokens decoded (not counting reused ones).",
            registry=reg,
        )
        self._reused = Counter(
            "llamacpp:prompt_tokens_reused",
            "Prompt tokens whose KV cache a slot already held (prefix reuse).",
            registry=reg,
        )
        self._generated = Counter(
            "llamacpp:tokens_predicted", "Tokens generated (sampled).", registry=reg
        )
        self._step = Histogram(
            "llamacpp:step_seconds",
            "Time of one llama_decode over the batch of a step.",
            buckets=STEP_BUCKETS,
            registry=reg,
        )
        self._batch_tokens = Counter(
            "llamacpp:batch_tokens", "Tokens decoded in all steps' batches.", registry=reg
        )
        self._busy = Gauge("llamacpp:requests_processing", "Slots running a request.", registry=reg)
        self._queued = Gauge(
            "llamacpp:requests_deferred", "Requests waiting for a free slot.", registry=reg
        )
        self._rejected = Counter(
            "llamacpp:requests_rejected",
            "Requests refused with 503 because the queue was full.",
            registry=reg,
        )
        self._handed_off = Counter(
            "llamacpp:streams_handed_off",
            "Streams written straight to the socket of mr's client (mr's hand-off).",
            registry=reg,
        )
        Gauge("llamacpp:slots", "Slots (parallel requests) of the context.", registry=reg).set(
            slots
        )

    def step(self, seconds: float, tokens: int) -> None:
        self._step.observe(seconds)
        self._batch_tokens.inc(tokens)

    def prompt_tokens(self, decoded: int, reused: int) -> None:
        if decoded:
            self._prompt.inc(decoded)
        if reused:
            self._reused.inc(reused)

    def generated_tokens(self, count: int) -> None:
        self._generated.inc(count)

    def watch(self, busy: Callable[[], int], queued: Callable[[], int]) -> None:
        """Read the gauges live from the scheduler at every scrape."""
        self._busy.set_function(busy)
        self._queued.set_function(queued)

    def rejected(self) -> None:
        self._rejected.inc()

    def handed_off(self) -> None:
        self._handed_off.inc()

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
