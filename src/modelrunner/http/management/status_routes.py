"""Management routes: ``/models`` (Docker Model Runner's listing), ``/status``, ``/problems``,
``/healthz``, ``/readyz`` and ``/metrics``."""

from __future__ import annotations

from typing import Any, Final

from litestar import Request, Response, get
from litestar.handlers import HTTPRouteHandler
from litestar.openapi.datastructures import ResponseSpec

from modelrunner.http.keys import KeyCheck
from modelrunner.http.routing import dmr_models, readiness
from modelrunner.http.shapes import DmrModel, Health, Readiness
from modelrunner.http.upstream.forwarder import Forwarder
from modelrunner.manifest.problems import Problem
from modelrunner.metrics import CONTENT_TYPE, scrape_engines
from modelrunner.status import ModelStatus, StatusSource

TAGS: Final = ["Management"]


def admin_handlers(
    fw: Forwarder, status: StatusSource, keys: KeyCheck | None = None
) -> list[HTTPRouteHandler]:
    @get("/models", tags=TAGS)
    async def models() -> list[DmrModel]:
        """The served models in Docker Model Runner's shape."""
        known = {s.name: s for s in status.snapshot()}
        return dmr_models(fw.registry.models(), known)

    @get("/status", tags=TAGS)
    async def model_status() -> list[ModelStatus]:
        """The reconciler's view of every model: phase, instance, last error."""
        return status.snapshot()

    @get("/problems", tags=TAGS)
    async def manifest_problems() -> list[Problem]:
        """Problems the last reconcile pass found in the manifests (file, line, column,
        JSON path, message), including those of models that were never applied."""
        return status.problems()

    @get("/healthz", tags=TAGS, opt={"public": True})
    async def healthz() -> Health:
        """Alive: the server answers."""
        return Health()

    @get(
        "/readyz",
        tags=TAGS,
        opt={"public": True},
        responses={503: ResponseSpec(Readiness, description="Not ready: see not_ready")},
    )
    async def readyz(
        request: Request[Any, Any, Any], model: str | None = None
    ) -> Response[Readiness]:
        """Ready when every manifest is applied and serving (or each of ``?model=a,b``).
        With API keys on, a caller without one gets only the overall answer: model
        names and aliases are not for everyone."""
        if keys is not None and not keys.accepts(request.headers.get("authorization")):
            ready = status.is_ready(())
            body = Readiness(ready=ready, models=[], not_ready=[])
            return Response(body, status_code=200 if ready else 503)
        names = tuple(n.strip() for n in (model or "").split(",") if n.strip())
        ready = status.is_ready(names)
        body = readiness(status.snapshot(), names, ready)
        return Response(body, status_code=200 if ready else 503)

    @get("/metrics", tags=TAGS, media_type=CONTENT_TYPE)
    async def metrics() -> bytes:
        """Prometheus text format: ours, then each engine's own with a ``model`` label."""
        served = fw.registry.models()
        fw.metrics.set_in_flight(
            {m.name: m.endpoint.in_flight for m in served if m.endpoint is not None}
        )
        targets = [(m.name, m.endpoint.base_url) for m in served if m.endpoint is not None]
        texts = await scrape_engines(fw.client, targets, fw.metrics) if targets else {}
        return fw.metrics.exposition(texts)

    return [models, model_status, manifest_problems, healthz, readyz, metrics]
