"""``/api/pull`` on the store: the pull runs in a thread; its progress arrives here from
that thread and goes out as Ollama's status lines (``pulling <digest>`` with ``total`` and
``completed``), at most every ``_EVERY`` seconds per blob, and always at a blob's end."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from typing import Any, Final

from modelrunner.store.progress import Task
from modelrunner.store.store import Store

log = logging.getLogger(__name__)
_EVERY: Final = 0.25
_END: Final = object()


class _BlobTask:
    def __init__(self, owner: QueueProgress, digest: str, total: int, done: int) -> None:
        self._owner = owner
        self._digest = digest
        self._total = total
        self._done = done
        self._sent = 0.0
        owner.put(self._line())

    def advance(self, n: int) -> None:
        self._done += n
        now = time.monotonic()
        if now - self._sent >= _EVERY:
            self._sent = now
            self._owner.put(self._line())

    def close(self) -> None:
        self._owner.put(self._line())

    def _line(self) -> dict[str, Any]:
        return {
            "status": f"pulling {self._digest.removeprefix('sha256:')[:12]}",
            "digest": self._digest,
            "total": self._total,
            "completed": min(self._done, self._total),
        }


class QueueProgress:
    """The store's ``Progress``, handing lines to an asyncio queue from the pull's thread."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self.lines: asyncio.Queue[Any] = asyncio.Queue()

    def put(self, item: Any) -> None:
        self._loop.call_soon_threadsafe(self.lines.put_nowait, item)

    def task(self, label: str, total: int, done: int = 0) -> Task:
        # The store labels a blob "<short digest> <kind>".
        return _BlobTask(self, label.split(" ", 1)[0], total, done)

    def note(self, message: str) -> None:
        self.put({"status": message})


async def pull_lines(store: Store, ref: str) -> AsyncIterator[dict[str, Any]]:
    """Pull ``ref`` into the store, yielding Ollama's progress lines; the pull's error is
    raised after the lines before it. A client that leaves does not stop the pull (the
    store keeps what arrived either way)."""
    progress = QueueProgress(asyncio.get_running_loop())
    yield {"status": "pulling manifest"}

    def run() -> None:
        try:
            store.pull(ref, progress)
        finally:
            progress.put(_END)

    job = asyncio.ensure_future(asyncio.to_thread(run))
    job.add_done_callback(_log_failure)
    while (line := await progress.lines.get()) is not _END:
        yield line
    await job  # raises the pull's error
    yield {"status": "verifying sha256 digest"}
    yield {"status": "writing manifest"}
    yield {"status": "success"}


def _log_failure(job: asyncio.Future[None]) -> None:
    with contextlib.suppress(asyncio.CancelledError):
        if job.exception() is not None:
            log.debug("pull failed: %s", job.exception())
