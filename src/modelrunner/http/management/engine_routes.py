"""The engines over HTTP, at Docker Model Runner's paths: ``GET /engines/status``,
``/engines/ps``, ``/engines/df`` and ``POST /engines/unload``."""

from __future__ import annotations

import asyncio
import time
from typing import Any, Final, Protocol

from litestar import get, post
from litestar.handlers import HTTPRouteHandler

from modelrunner.http.management.problems import HANDLERS, TAGS, errors
from modelrunner.http.management.shapes import (
    DiskUsageReport,
    RunningModel,
    UnloadRequest,
    UnloadResponse,
    engine_status,
    running_models,
    unload_targets,
)
from modelrunner.registry import Registry
from modelrunner.settings import Settings
from modelrunner.status import StatusSource
from modelrunner.store.store import Store

_STATUS_TTL: Final = 60.0  # seconds an engine install probe is reused (vLLM's takes a while)


class ModelControl(Protocol):
    """What the reconciler offers the management routes."""

    def unload(self, name: str) -> bool:
        """Unload a loaded model now (it loads again on its next request)."""
        ...


def engine_handlers(
    settings: Settings,
    registry: Registry,
    status: StatusSource,
    store: Store,
    control: ModelControl | None,
) -> list[HTTPRouteHandler]:
    installs_cache: list[Any] = [0.0, None]

    @get("/engines/status", tags=TAGS, exception_handlers=HANDLERS, responses=errors(401))
    async def engines_status() -> dict[str, str]:
        """Each engine: `installed VERSION`, or why it is not installed."""
        from modelrunner.engines.versions import engine_installs

        checked, found = installs_cache
        if found is None or time.monotonic() - checked > _STATUS_TTL:
            installs = await asyncio.to_thread(engine_installs, settings)
            found = engine_status((i.name, i.version, i.problem) for i in installs)
            installs_cache[:] = [time.monotonic(), found]
        return dict(found)

    @get("/engines/ps", tags=TAGS, exception_handlers=HANDLERS, responses=errors(401))
    async def engines_ps() -> list[RunningModel]:
        """The models with an engine instance loaded (or loading)."""
        known = {s.name: s for s in status.snapshot()}
        return running_models(registry.models(), known, time.time(), time.monotonic())

    @get("/engines/df", tags=TAGS, exception_handlers=HANDLERS, responses=errors(401))
    async def engines_df() -> DiskUsageReport:
        """Disk used by the store's models (engines are installed packages: 0)."""
        usage = await asyncio.to_thread(store.disk_usage)
        return DiskUsageReport(
            models_disk_usage=usage.blob_bytes,
            default_backend_disk_usage=0,
            reclaimable_bytes=usage.reclaimable_bytes,
            partial_bytes=usage.partial_bytes,
            free_bytes=usage.free_bytes,
        )

    @post(
        "/engines/unload",
        tags=TAGS,
        exception_handlers=HANDLERS,
        status_code=200,
        responses=errors(400, 401),
    )
    async def engines_unload(data: UnloadRequest) -> UnloadResponse:
        """Unload models now (`all`, or `models` by name or alias, or one `backend`'s):
        their instances drain and stop; the next request loads them again."""
        if control is None:
            return UnloadResponse(unloaded_runners=0)
        names = unload_targets(data, registry.models())
        return UnloadResponse(unloaded_runners=sum(control.unload(n) for n in names))

    return [engines_status, engines_ps, engines_df, engines_unload]
