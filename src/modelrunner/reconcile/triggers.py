"""What starts a reconcile pass: file events, a periodic resync, and SIGHUP.

A trigger only says "look again"; bursts are coalesced into one pass after a short quiet
period (debounce), but never later than ``MAX_DEBOUNCE`` after the first event, so a file
written all the time cannot starve passes. The pass re-reads the whole folder, so lost
events, editor temp files, atomic renames and ConfigMap symlink swaps all converge. Only
events about what the loader reads count (manifest files and the ConfigMap ``..data``
swap). The periodic resync runs its pass itself, not through the event queue; resync and
SIGHUP also retry models whose last attempt failed. The host's labels file
(``MR_HOST_LABELS_FILE``), when there is one, is watched the same way: a pass reads it again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from modelrunner.manifest.files import is_manifest_name
from modelrunner.manifest.lock import LOCK_FILE

if TYPE_CHECKING:
    from modelrunner.settings import Settings

log = logging.getLogger("modelrunner.reconcile")

Pass = Callable[..., Awaitable[Any]]

# A pass runs at most this long after the first event of a burst, whatever follows it.
MAX_DEBOUNCE: Final = 1.0


def wait_before_pass(now: float, first: float, last: float, quiet: float) -> float:
    """Seconds until a pass is due: ``quiet`` after the last event, but no later than
    ``MAX_DEBOUNCE`` (or ``quiet``, if longer) after the first one."""
    due = min(last + quiet, first + max(quiet, MAX_DEBOUNCE))
    return max(0.0, due - now)


def is_relevant(path: str) -> bool:
    """An event the loader can see: a manifest file, the lock file, or a ConfigMap's
    ``..data`` swap."""
    name = Path(path).name
    return is_manifest_name(name) or name == LOCK_FILE or name.startswith("..data")


def is_labels_file(path: str, labels: Path) -> bool:
    """An event about the labels file, or a ConfigMap/downward API ``..data`` swap beside it."""
    name = Path(path).name
    return name == labels.name or name.startswith("..data")


class Triggers:
    def __init__(
        self,
        settings: Settings,
        reconcile: Pass,
        on_sighup: Callable[[], None] | None = None,
        labels_file: Path | None = None,
    ) -> None:
        self.settings = settings
        self.labels_file = labels_file
        self._reconcile = reconcile
        self._on_sighup = on_sighup
        self._pending = asyncio.Event()
        self._retry = False
        self._stop = asyncio.Event()
        self._last_event = 0.0
        self._one_pass = asyncio.Lock()  # a pass never overlaps another

    def fire(self, *, retry_failed: bool = False) -> None:
        self._retry = self._retry or retry_failed
        self._last_event = time.monotonic()
        self._pending.set()

    async def _passes(self) -> None:
        while True:
            await self._pending.wait()
            # Debounce: a burst of events makes one pass, at most MAX_DEBOUNCE late.
            first = time.monotonic()
            while wait := wait_before_pass(
                time.monotonic(), first, self._last_event, self.settings.debounce
            ):
                await asyncio.sleep(wait)
            self._pending.clear()
            retry, self._retry = self._retry, False
            await self._run(retry_failed=retry)

    async def _run(self, *, retry_failed: bool) -> None:
        async with self._one_pass:
            try:
                await self._reconcile(retry_failed=retry_failed)
            except Exception:
                log.exception("reconcile pass failed; the next trigger tries again")

    async def _watch(self, folder: Path, relevant: Callable[[str], bool]) -> None:
        import watchfiles

        while not self._stop.is_set():
            try:
                async for _changes in watchfiles.awatch(
                    folder,
                    # Level-based: any relevant change means "look again"; other files
                    # (hidden, editor temp files, heartbeats) never delay a pass.
                    watch_filter=lambda _change, path: relevant(path),
                    force_polling=self.settings.poll,
                    poll_delay_ms=500,
                    debounce=50,
                    # watchfiles' loop wakes every step to look for events (and takes the
                    # GIL): 20 ms cost an idle mr 3.2 ms of CPU a second, 100 ms 0.8 ms,
                    # for at most 0.1 s more before a pass.
                    step=100,
                    stop_event=self._stop,
                    recursive=False,  # the loader reads only the folder's own entries
                ):
                    self.fire()
            except FileNotFoundError:
                log.warning("folder %s is gone; looking again in 1 s", folder)
                await asyncio.sleep(1.0)
                self.fire()
            except Exception:
                # Never die quietly: without the watcher only resync and SIGHUP would remain.
                log.exception("watching %s failed; watching again in 1 s", folder)
                await asyncio.sleep(1.0)
                self.fire()

    async def _resync(self) -> None:
        # Its own pass, not an event: nothing queued before it can hold it back.
        while True:
            await asyncio.sleep(self.settings.resync_interval)
            await self._run(retry_failed=True)

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
            asyncio.create_task(
                self._watch(self.settings.models_dir, is_relevant), name="reconcile:watch"
            ),
            asyncio.create_task(self._resync(), name="reconcile:resync"),
        ]
        if self.labels_file is not None:
            labels = self.labels_file
            tasks.append(
                asyncio.create_task(
                    self._watch(labels.parent, lambda path: is_labels_file(path, labels)),
                    name="reconcile:watch-labels",
                )
            )
        try:
            yield self
        finally:
            self._stop.set()
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.remove_signal_handler(signal.SIGHUP)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
