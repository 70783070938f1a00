"""The reconciler as a Litestar lifespan: reconcile once at start-up, follow the folder
while the app runs, and drain and stop every engine when it shuts down."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any

from modelrunner.reconcile.execute import Reconciler

if TYPE_CHECKING:
    from modelrunner.metrics import Metrics
    from modelrunner.registry import Registry
    from modelrunner.settings import Settings
    from modelrunner.store.store import Store


def reconcile_lifespan(
    settings: Settings, registry: Registry, store: Store, metrics: Metrics | None = None
) -> tuple[Callable[[Any], AbstractAsyncContextManager[None]], Reconciler]:
    reconciler = Reconciler(settings, registry, store, metrics=metrics)

    @contextlib.asynccontextmanager
    async def lifespan(_app: Any) -> AsyncIterator[None]:
        try:
            async with reconciler.running():
                yield
        finally:
            # Every engine has stopped: no pin may outlive a clean stop.
            await asyncio.to_thread(store.release_pins)

    return lifespan, reconciler
