"""Prometheus metrics: the server's own, and each engine's re-exposed with a ``model`` label.

``Metrics`` owns its ``CollectorRegistry`` (no process-wide global), so several servers or
tests in one process never share counters. The reconciler calls ``reconcile_passes.inc()``,
``reconcile_errors.inc()``, ``reconcile_duration.observe(s)`` and ``instance_state(model,
state)``; the HTTP layer records requests and tokens. ``relabel`` (pure) merges the text the
engines expose into one exposition with a ``model`` label on every sample.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Final, get_args

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from modelrunner.status import Phase

if TYPE_CHECKING:
    import httpx

CONTENT_TYPE: Final = "text/plain; version=0.0.4"  # the server adds "; charset=utf-8"
PHASES: Final[tuple[str, ...]] = get_args(Phase)
# Request latency buckets: from sub-millisecond proxy answers to long generations.
_LATENCY_BUCKETS: Final = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300,
)  # fmt: skip
_SCRAPE_TIMEOUT: Final = 2.0


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        reg = self.registry
        self.requests = Counter(
            "mr_requests",
            "HTTP requests to the OpenAI routes, by route, model and status code.",
            ("route", "model", "status"),
            registry=reg,
        )
        self.latency = Histogram(
            "mr_request_duration_seconds",
            "Time from request to the last byte of the answer (whole stream included).",
            ("route", "model"),
            buckets=_LATENCY_BUCKETS,
            registry=reg,
        )
        self.revision_requests = Counter(
            "mr_revision_requests",
            "Requests per model revision (X-Model-Revision), by outcome: ok, or error (5xx, "
            "engine failure, timeout); a canary and the revision it may replace side by side.",
            ("model", "revision", "outcome"),
            registry=reg,
        )
        self.tokens = Counter(
            "mr_tokens",
            "Tokens the engines reported in their usage, by model and kind (prompt, completion).",
            ("model", "kind"),
            registry=reg,
        )
        self.in_flight = Gauge(
            "mr_requests_in_flight",
            "Requests being answered now, per model (counted by the registry).",
            ("model",),
            registry=reg,
        )
        self.instance_states = Gauge(
            "mr_instance_state",
            "1 for the phase each model is in, 0 for the others.",
            ("model", "state"),
            registry=reg,
        )
        self.reconcile_passes = Counter(
            "mr_reconcile_passes", "Reconcile passes run.", registry=reg
        )
        self.reconcile_errors = Counter(
            "mr_reconcile_errors", "Reconcile passes that ended with an error.", registry=reg
        )
        self.reconcile_duration = Histogram(
            "mr_reconcile_duration_seconds", "Time one reconcile pass took.", registry=reg
        )
        self.engine_scrape_errors = Counter(
            "mr_engine_scrape_errors",
            "Engine /metrics scrapes that failed (not counting engines without metrics).",
            ("model",),
            registry=reg,
        )

    # -- the reconciler's side ----------------------------------------------------
    def instance_state(self, model: str, state: str) -> None:
        """Mark ``model`` as being in ``state`` (one of status.Phase)."""
        if state not in PHASES:
            raise ValueError(f"unknown instance state {state!r} for {model}: expected {PHASES}")
        for phase in PHASES:
            self.instance_states.labels(model, phase).set(1.0 if phase == state else 0.0)

    def forget_model(self, model: str) -> None:
        """Drop the per-model state series of a model no manifest serves any more."""
        for phase in PHASES:
            with contextlib.suppress(KeyError):
                self.instance_states.remove(model, phase)

    # -- the HTTP layer's side ----------------------------------------------------
    def record_request(self, route: str, model: str, status: int, seconds: float) -> None:
        self.requests.labels(route, model, str(status)).inc()
        self.latency.labels(route, model).observe(seconds)

    def record_revision(self, model: str, revision: str, failed: bool) -> None:
        self.revision_requests.labels(model, revision, "error" if failed else "ok").inc()

    def add_tokens(self, model: str, prompt: int, completion: int) -> None:
        if prompt > 0:
            self.tokens.labels(model, "prompt").inc(prompt)
        if completion > 0:
            self.tokens.labels(model, "completion").inc(completion)

    def set_in_flight(self, counts: Mapping[str, int]) -> None:
        self.in_flight.clear()
        for model, count in counts.items():
            self.in_flight.labels(model).set(count)

    def exposition(self, engine_texts: Mapping[str, str] = {}) -> bytes:
        """The text format: our metrics, then every engine's with its ``model`` label."""
        own = generate_latest(self.registry)
        if not engine_texts:
            return own
        return own + relabel(engine_texts)


def relabel(engine_texts: Mapping[str, str]) -> bytes:
    """Merge engines' expositions (model -> text) into one, each sample labelled ``model``.

    A sample that already has a ``model`` label keeps it as ``exported_model`` (Prometheus'
    own convention). Families with one name across engines are merged into one family.
    """
    families: dict[str, Metric] = {}
    for model, text in engine_texts.items():
        for family in _parse(text):
            merged = families.get(family.name)
            if merged is None:
                merged = families[family.name] = Metric(
                    family.name, family.documentation, family.type, family.unit
                )
            for sample in family.samples:
                labels = dict(sample.labels)
                if "model" in labels:
                    labels["exported_model"] = labels.pop("model")
                labels["model"] = model
                merged.samples.append(sample._replace(labels=labels))
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Fixed(tuple(families.values())))
    return generate_latest(registry)


def _parse(text: str) -> list[Metric]:
    try:
        return list(text_string_to_metric_families(text))
    except ValueError:
        return []  # not the Prometheus text format: nothing to re-expose


class _Fixed(Collector):
    def __init__(self, families: tuple[Metric, ...]) -> None:
        self._families = families

    def collect(self) -> Iterator[Metric]:
        return iter(self._families)


async def scrape_engines(
    client: httpx.AsyncClient, targets: Iterable[tuple[str, str]], metrics: Metrics
) -> dict[str, str]:
    """GET ``base_url/metrics`` of each (model, base_url) at once; engines that answer
    anything but 200 (an engine without /metrics, such as Diffusers) are skipped."""
    pairs = list(targets)
    answers = await asyncio.gather(*(_scrape(client, url) for _, url in pairs))
    texts: dict[str, str] = {}
    for (model, _), answer in zip(pairs, answers, strict=True):
        if answer is None:
            metrics.engine_scrape_errors.labels(model).inc()
        elif answer:
            texts[model] = answer
    return texts


async def _scrape(client: httpx.AsyncClient, base_url: str) -> str | None:
    """The text, "" when the engine has no metrics, None when the scrape failed."""
    import httpx

    try:
        response = await client.get(f"{base_url}/metrics", timeout=_SCRAPE_TIMEOUT)
    except httpx.HTTPError:
        return None
    if response.status_code != 200:
        return "" if response.status_code in (404, 405) else None
    return response.text
