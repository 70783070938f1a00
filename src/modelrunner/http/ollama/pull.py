"""``/api/pull`` on the store: the pull runs in a thread; its progress arrives here from
that thread (``thread_progress.QueueProgress``) and goes out as Ollama's status lines
(``pulling <digest>`` with ``total`` and ``completed``), one when a blob starts, at most
every 0.25 s per blob, and always one at a blob's end."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from modelrunner.http.thread_progress import QueueProgress
from modelrunner.store.store import Store

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _OllamaLines:
    every: float = 0.25
    announce: bool = True

    def blob(self, label: str, size: int, current: int, total: int) -> dict[str, Any]:
        digest = label.split(" ", 1)[0]  # the store labels a blob "<short digest> <kind>"
        return {
            "status": f"pulling {digest.removeprefix('sha256:')[:12]}",
            "digest": digest,
            "total": size,
            "completed": min(current, size),
        }

    def note(self, message: str) -> dict[str, Any]:
        return {"status": message}


async def pull_lines(store: Store, ref: str) -> AsyncIterator[dict[str, Any]]:
    """Pull ``ref`` into the store, yielding Ollama's progress lines; the pull's error is
    raised after the lines before it. A client that leaves does not stop the pull (the
    store keeps what arrived either way)."""
    # None ends the lines.
    progress: QueueProgress[dict[str, Any] | None] = QueueProgress(
        asyncio.get_running_loop(), _OllamaLines()
    )
    yield {"status": "pulling manifest"}

    def run() -> None:
        try:
            store.pull(ref, progress)
        finally:
            progress.put(None)

    job = asyncio.ensure_future(asyncio.to_thread(run))
    job.add_done_callback(_log_failure)
    while (line := await progress.lines.get()) is not None:
        yield line
    await job  # raises the pull's error
    yield {"status": "verifying sha256 digest"}
    yield {"status": "writing manifest"}
    yield {"status": "success"}


def _log_failure(job: asyncio.Future[None]) -> None:
    with contextlib.suppress(asyncio.CancelledError):
        if job.exception() is not None:
            log.debug("pull failed: %s", job.exception())
