"""A rich progress bar per transfer: bytes, rate and time left (terminals only)."""

from __future__ import annotations

from types import TracebackType
from typing import Any

from modelrunner.store.progress import Task


class _RichTask:
    def __init__(self, progress: Any, task_id: Any) -> None:
        self.progress, self.task_id = progress, task_id

    def advance(self, n: int) -> None:
        self.progress.advance(self.task_id, n)

    def close(self) -> None:
        self.progress.refresh()


class RichProgress:
    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        self.console = Console(stderr=True)
        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            DownloadColumn(binary_units=True),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=self.console,
        )

    def __enter__(self) -> RichProgress:
        self._progress.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._progress.stop()

    def task(self, label: str, total: int, done: int = 0) -> Task:
        return _RichTask(
            self._progress, self._progress.add_task(label, total=total, completed=done)
        )

    def note(self, message: str) -> None:
        self._progress.console.print(message)
