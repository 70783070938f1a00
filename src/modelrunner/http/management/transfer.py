"""A store transfer (pull or push) run in a thread, its progress streamed as JSON lines.

The store reports progress from its thread (``Progress``: a task per blob, ``advance`` per
chunk); ``LineProgress`` throttles that to a line per blob every 0.1 s and hands the lines
to the event loop. ``start_transfer`` waits for the first line or the end: a transfer that
fails before any byte moved (unknown model, registry refusing) becomes a plain HTTP error
with the right status; once bytes move, the answer is a 200 stream of lines ending in
``success`` or ``error``.

A client that goes away does not stop the transfer: the store finishes it (and shares it
with any other pull of the same reference), so the next request finds it done.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Final, Literal

from modelrunner.http.management.shapes import ProgressLayer, ProgressMessage, progress_line
from modelrunner.store.progress import Task

_EVERY: Final = 0.1  # seconds between two lines of one blob


class _BlobTask:
    def __init__(self, owner: LineProgress, label: str, total: int, done: int) -> None:
        self._owner = owner
        self._label = label
        self._total = total
        self._done = done
        self._last = 0.0

    def advance(self, n: int) -> None:
        self._done += n
        now = time.monotonic()
        if now - self._last >= _EVERY:
            self._last = now
            self._owner.report(self._label, self._total, self._done)

    def close(self) -> None:
        self._owner.report(self._label, self._total, self._done)


class LineProgress:
    """``Progress`` for the store's thread; lines go to ``queue`` on the event loop."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        queue: asyncio.Queue[bytes],
        mode: Literal["pull", "push"],
    ) -> None:
        self._loop = loop
        self._queue = queue
        self._mode = mode
        self._lock = threading.Lock()
        self._total = 0

    def task(self, label: str, total: int, done: int = 0) -> Task:
        with self._lock:
            self._total += total
        return _BlobTask(self, label, total, done)

    def note(self, message: str) -> None:
        self._put(ProgressMessage(type="warning", message=message, mode=self._mode))

    def report(self, label: str, size: int, current: int) -> None:
        verb = "Downloaded" if self._mode == "pull" else "Uploaded"
        self._put(
            ProgressMessage(
                type="progress",
                message=f"{verb}: {current / 1024 / 1024:.2f} MB",
                total=self._total,
                layer=ProgressLayer(label, size, current),
                mode=self._mode,
            )
        )

    def _put(self, message: ProgressMessage) -> None:
        self._loop.call_soon_threadsafe(self._queue.put_nowait, progress_line(message))


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
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    progress = LineProgress(loop, queue, mode)
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
