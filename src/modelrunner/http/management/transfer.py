"""A store transfer (pull or push) run in a thread, its progress streamed as JSON lines.

The store reports progress from its thread; ``thread_progress.QueueProgress`` hands it to
the event loop as Docker Model Runner's lines, one per blob every 0.1 s. ``start_transfer``
waits for the first line or the end: a transfer that fails before any byte moved (unknown
model, registry refusing) becomes a plain HTTP error with the right status; once bytes move,
the answer is a 200 stream of lines ending in ``success`` or ``error``.

A client that goes away does not stop the transfer: the store finishes it (and shares it
with any other pull of the same reference), so the next request finds it done.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Literal

from modelrunner.http.management.shapes import ProgressLayer, ProgressMessage, progress_line
from modelrunner.http.thread_progress import QueueProgress


@dataclass(frozen=True)
class _DmrLines:
    """Docker Model Runner's progress lines: one per blob every 0.1 s, with the size of
    every blob started so far as ``total``."""

    mode: Literal["pull", "push"]
    every: float = 0.1
    announce: bool = False

    def blob(self, label: str, size: int, current: int, total: int) -> bytes:
        verb = "Downloaded" if self.mode == "pull" else "Uploaded"
        return progress_line(
            ProgressMessage(
                type="progress",
                message=f"{verb}: {current / 1024 / 1024:.2f} MB",
                total=total,
                layer=ProgressLayer(label, size, current),
                mode=self.mode,
            )
        )

    def note(self, message: str) -> bytes:
        return progress_line(ProgressMessage(type="warning", message=message, mode=self.mode))


LineProgress = QueueProgress[bytes]


@dataclass
class Transfer:
    """A running transfer: ``failed`` is set when it ended in an error before any line."""

    failed: BaseException | None
    lines: AsyncIterator[bytes] | None


async def start_transfer(
    work: Callable[[LineProgress], str], mode: Literal["pull", "push"]
) -> Transfer:
    """Run ``work`` (returns the success message) in a thread. Returns once it has
    produced its first line or ended."""
    progress = QueueProgress(asyncio.get_running_loop(), _DmrLines(mode))
    queue = progress.lines
    job = asyncio.ensure_future(asyncio.to_thread(work, progress))
    first = asyncio.ensure_future(queue.get())
    await asyncio.wait((job, first), return_when=asyncio.FIRST_COMPLETED)
    head: list[bytes] = []
    if first.done():
        head.append(first.result())
    else:
        first.cancel()
        if job.exception() is not None and queue.empty():
            return Transfer(job.exception(), None)
    return Transfer(None, _lines(job, queue, head, mode))


async def _lines(
    job: asyncio.Future[str],
    queue: asyncio.Queue[bytes],
    head: list[bytes],
    mode: Literal["pull", "push"],
) -> AsyncIterator[bytes]:
    for line in head:
        yield line
    while not job.done():
        getter = asyncio.ensure_future(queue.get())
        await asyncio.wait((job, getter), return_when=asyncio.FIRST_COMPLETED)
        if getter.done():
            yield getter.result()
        else:
            getter.cancel()
    while not queue.empty():
        yield queue.get_nowait()
    error = job.exception()
    if error is None:
        yield progress_line(ProgressMessage(type="success", message=job.result(), mode=mode))
    else:
        yield progress_line(ProgressMessage(type="error", message=str(error), mode=mode))
