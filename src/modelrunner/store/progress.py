"""Progress of long transfers, reported by the store and shown by whoever calls it.

The store calls ``task(label, total)`` per blob and ``advance(n)`` per chunk moved; the
CLI shows a bar (bytes, rate, time left) on a terminal and plain lines otherwise; tests
and benchmarks count bytes.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import Protocol, TextIO


class Task(Protocol):
    def advance(self, n: int) -> None: ...
    def close(self) -> None: ...


class Progress(Protocol):
    def task(self, label: str, total: int, done: int = 0) -> Task: ...
    def note(self, message: str) -> None: ...


class _NullTask:
    def advance(self, n: int) -> None:
        return None

    def close(self) -> None:
        return None


class NullProgress:
    def task(self, label: str, total: int, done: int = 0) -> Task:
        return _NullTask()

    def note(self, message: str) -> None:
        return None


class _CountingTask:
    def __init__(self, owner: CountingProgress) -> None:
        self.owner = owner

    def advance(self, n: int) -> None:
        with self.owner.lock:
            self.owner.bytes += n

    def close(self) -> None:
        return None


class CountingProgress:
    """Counts the bytes that actually crossed the network (tests, benchmarks)."""

    def __init__(self) -> None:
        self.bytes = 0
        self.labels: list[str] = []
        self.notes: list[str] = []
        self.lock = threading.Lock()

    def task(self, label: str, total: int, done: int = 0) -> Task:
        self.labels.append(label)
        return _CountingTask(self)

    def note(self, message: str) -> None:
        self.notes.append(message)


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} GiB"


class _LineTask:
    def __init__(self, out: TextIO, label: str, total: int, done: int, every: float) -> None:
        self.out, self.label, self.total, self.every = out, label, total, every
        self.done = self.start_done = done
        self.start = self.last = time.monotonic()

    def _line(self, final: bool) -> None:
        elapsed = max(time.monotonic() - self.start, 1e-6)
        rate = (self.done - self.start_done) / elapsed
        left = (self.total - self.done) / rate if rate > 0 else 0.0
        state = "done" if final else f"{left:.0f}s left"
        print(
            f"{self.label}: {_size(self.done)} / {_size(self.total)} {_size(rate)}/s {state}",
            file=self.out,
            flush=True,
        )

    def advance(self, n: int) -> None:
        self.done += n
        now = time.monotonic()
        if now - self.last >= self.every:
            self.last = now
            self._line(False)

    def close(self) -> None:
        self._line(True)


class LineProgress:
    """Plain lines, one every few seconds per transfer: for logs and pipes."""

    def __init__(self, out: TextIO | None = None, every: float = 5.0) -> None:
        self.out = out or sys.stderr
        self.every = every

    def task(self, label: str, total: int, done: int = 0) -> Task:
        return _LineTask(self.out, label, total, done, self.every)

    def note(self, message: str) -> None:
        print(message, file=self.out, flush=True)
