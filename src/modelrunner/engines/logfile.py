"""An instance's captured output: a size-capped log file with a few rotated copies, and the
last lines of stderr, kept to explain a failure."""

from __future__ import annotations

import collections
import re
from pathlib import Path
from typing import BinaryIO, Final

_LINE_END: Final = re.compile(rb"\r\n|\r|\n")  # progress bars redraw with a bare \r


class RotatingLog:
    """Appends bytes to ``path``; past ``max_bytes`` it becomes ``path.1`` (``.1`` becomes
    ``.2`` ...) and only ``backups`` old copies are kept."""

    def __init__(self, path: Path, max_bytes: int = 10 * 1024 * 1024, backups: int = 3) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.backups = backups
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file: BinaryIO | None = None
        self._size = 0

    def write(self, data: bytes) -> None:
        if not data:
            return
        file = self._file if self._file is not None else self._open()
        if self._size > 0 and self._size + len(data) > self.max_bytes:
            file = self._rotate()
        file.write(data)
        file.flush()
        self._size += len(data)

    def _open(self) -> BinaryIO:
        self._file = self.path.open("ab")
        self._size = self._file.tell()
        return self._file

    def _rotate(self) -> BinaryIO:
        if self._file is not None:
            self._file.close()
        for n in range(self.backups - 1, 0, -1):
            older = self.path.with_name(f"{self.path.name}.{n}")
            if older.exists():
                older.replace(self.path.with_name(f"{self.path.name}.{n + 1}"))
        if self.backups > 0:
            self.path.replace(self.path.with_name(f"{self.path.name}.1"))
        else:
            self.path.unlink(missing_ok=True)
        return self._open()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


class Tail:
    """The last ``lines`` complete (or pending) lines of a byte stream."""

    def __init__(self, lines: int = 20, max_line: int = 2000) -> None:
        self._lines: collections.deque[str] = collections.deque(maxlen=lines)
        self._pending = b""
        self._max_line = max_line

    def feed(self, data: bytes) -> None:
        parts = _LINE_END.split(self._pending + data)
        self._pending = parts.pop()[-self._max_line :]
        for part in parts:
            text = part.decode("utf-8", "replace").rstrip()
            if text:
                self._lines.append(text[: self._max_line])

    def text(self) -> str:
        lines = list(self._lines)
        pending = self._pending.decode("utf-8", "replace").rstrip()
        if pending:
            lines.append(pending)
        return "\n".join(lines[-(self._lines.maxlen or len(lines)) :])

    def clear(self) -> None:
        self._lines.clear()
        self._pending = b""
