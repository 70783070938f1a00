"""The store's ``Progress``, reported from a transfer's thread, handed to the event loop.

A pull or push runs in a thread (``asyncio.to_thread``); the store calls ``task`` per blob
and ``advance`` per chunk from there. ``QueueProgress`` turns those calls into lines on an
``asyncio.Queue`` (thread-safely, with ``call_soon_threadsafe``), at most one line per blob
every ``shape.every`` seconds and always one at a blob's end. What a line looks like is
the API's business: ``LineShape`` (Docker Model Runner's JSON lines in
``management/transfer.py``, Ollama's status lines in ``ollama/pull.py``).
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Generic, Protocol, TypeVar

from modelrunner.store.progress import Task

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)


class LineShape(Protocol[T_co]):
    """One API's progress lines."""

    @property
    def every(self) -> float:
        """Seconds between two lines of one blob."""
        ...

    @property
    def announce(self) -> bool:
        """Whether a blob's start is a line of its own."""
        ...

    def blob(self, label: str, size: int, current: int, total: int) -> T_co:
        """A blob's line: ``current`` of ``size`` bytes moved; ``total`` is the size of
        every blob started so far."""
        ...

    def note(self, message: str) -> T_co:
        """A line for a note of the store's (a warning)."""
        ...


class _BlobTask(Generic[T]):
    def __init__(self, owner: QueueProgress[T], label: str, size: int, done: int) -> None:
        self._owner = owner
        self._label = label
        self._size = size
        self._done = done
        self._sent = 0.0
        if owner.shape.announce:
            owner.report(label, size, done)

    def advance(self, n: int) -> None:
        self._done += n
        now = time.monotonic()
        if now - self._sent >= self._owner.shape.every:
            self._sent = now
            self._owner.report(self._label, self._size, self._done)

    def close(self) -> None:
        self._owner.report(self._label, self._size, self._done)


class QueueProgress(Generic[T]):
    """``Progress`` for a transfer's thread; its lines arrive on ``lines`` in the loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop, shape: LineShape[T]) -> None:
        self.shape = shape
        self.lines: asyncio.Queue[T] = asyncio.Queue()
        self._loop = loop
        self._lock = threading.Lock()
        self._total = 0

    def task(self, label: str, total: int, done: int = 0) -> Task:
        with self._lock:
            self._total += total
        return _BlobTask(self, label, total, done)

    def note(self, message: str) -> None:
        self.put(self.shape.note(message))

    def report(self, label: str, size: int, current: int) -> None:
        self.put(self.shape.blob(label, size, current, self._total))

    def put(self, item: T) -> None:
        """Queue ``item`` from any thread."""
        self._loop.call_soon_threadsafe(self.lines.put_nowait, item)
