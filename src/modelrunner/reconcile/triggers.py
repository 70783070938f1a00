"""What starts a reconcile pass: file events, a periodic resync, and SIGHUP.

A trigger only says "look again"; bursts are coalesced into one pass after a short quiet
period (debounce), and the pass re-reads the whole folder, so lost events, editor temp
files, atomic renames and ConfigMap symlink swaps all converge. Resync and SIGHUP also
retry models whose last attempt failed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from modelrunner.settings import Settings

log = logging.getLogger("modelrunner.reconcile")

Pass = Callable[..., Awaitable[Any]]


class Triggers:
    def __init__(
        self, settings: Settings, reconcile: Pass, on_sighup: Callable[[], None] | None = None
    ) -> None:
        self.settings = settings
        self._reconcile = reconcile
        self._on_sighup = on_sighup
        self._pending = asyncio.Event()
        self._retry = False
        self._stop = asyncio.Event()

    def fire(self, *, retry_failed: bool = False) -> None:
        self._retry = self._retry or retry_failed
        self._pending.set()

    async def _passes(self) -> None:
        while True:
            await self._pending.wait()
            # Debounce: wait for a quiet moment, so a burst of events makes one pass.
            while True:
                self._pending.clear()
                await asyncio.sleep(self.settings.debounce)
                if not self._pending.is_set():
                    break
            retry, self._retry = self._retry, False
            try:
                await self._reconcile(retry_failed=retry)
            except Exception:
                log.exception("reconcile pass failed; the next trigger tries again")

    async def _watch(self) -> None:
        import watchfiles

        folder = self.settings.models_dir
        while not self._stop.is_set():
            try:
                async for _changes in watchfiles.awatch(
                    folder,
                    watch_filter=None,  # level-based: any change means "look again"
                    force_polling=self.settings.poll,
                    poll_delay_ms=500,
                    debounce=50,
                    step=20,
                    stop_event=self._stop,
                    recursive=True,
                ):
                    self.fire()
            except FileNotFoundError:
                log.warning("models folder %s is gone; looking again in 1 s", folder)
                await asyncio.sleep(1.0)
                self.fire()
            except Exception:
                # Never die quietly: without the watcher only resync and SIGHUP would remain.
                log.exception("watching %s failed; watching again in 1 s", folder)
                await asyncio.sleep(1.0)
                self.fire()

    async def _resync(self) -> None:
        while True:
            await asyncio.sleep(self.settings.resync_interval)
            self.fire(retry_failed=True)

    def _sighup(self) -> None:
        if self._on_sighup is not None:
            self._on_sighup()
        self.fire(retry_failed=True)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Triggers]:
        loop = asyncio.get_running_loop()
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(signal.SIGHUP, self._sighup)
        tasks = [
            asyncio.create_task(self._passes(), name="reconcile:passes"),
            asyncio.create_task(self._watch(), name="reconcile:watch"),
            asyncio.create_task(self._resync(), name="reconcile:resync"),
        ]
        try:
            yield self
        finally:
            self._stop.set()
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.remove_signal_handler(signal.SIGHUP)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
