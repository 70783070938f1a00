"""Models in use: a server pins the manifest digests its instances serve, so ``mr rm``
(another process, no server connection) refuses to delete them without ``--force``.

Each process writes its pins to ``pins/<pid>.json``; files of processes that no longer
run are ignored and cleaned up.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import uuid
from collections import Counter
from pathlib import Path


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Pins:
    def __init__(self, root: Path) -> None:
        self.dir = root / "pins"
        self._counts: Counter[str] = Counter()
        self._lock = threading.Lock()

    def pin(self, digest: str) -> None:
        with self._lock:
            self._counts[digest] += 1
            self._write()

    def unpin(self, digest: str) -> None:
        with self._lock:
            if self._counts[digest] > 0:
                self._counts[digest] -= 1
            self._counts += Counter()  # drop zero counts
            self._write()

    def _write(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        path = self.dir / f"{os.getpid()}.json"
        if not self._counts:
            path.unlink(missing_ok=True)
            return
        tmp = self.dir / f".{uuid.uuid4().hex}.tmp"
        tmp.write_text(json.dumps(sorted(self._counts)))
        os.replace(tmp, path)

    def in_use(self) -> set[str]:
        """Digests pinned by this process or any other live one."""
        with self._lock:
            used = set(self._counts)
        if not self.dir.is_dir():
            return used
        for path in self.dir.glob("*.json"):
            if not path.stem.isdigit() or int(path.stem) == os.getpid():
                continue
            if not _alive(int(path.stem)):
                with contextlib.suppress(OSError):
                    path.unlink()
                continue
            with contextlib.suppress(OSError, ValueError):
                used.update(str(d) for d in json.loads(path.read_text()))
        return used
