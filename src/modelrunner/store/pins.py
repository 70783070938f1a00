"""Models in use: a server pins the manifest digests its instances serve, so ``mr rm``
(another process, no server connection) keeps their files, and garbage collection too.

Each process (each ``Pins`` of it) writes its pins to ``pins/<owner>.json`` and holds an
exclusive ``flock`` on ``pins/<owner>.lock`` while it lives. A pin file whose lock anyone
can take belongs to a process that is gone (however it ended), so a reused pid (mr as
PID 1 in a container, restarted) never keeps a stale pin alive. ``release`` removes both
on a clean stop. The owner name (pid, the process's start time from /proc, a random
suffix) is for people reading the folder.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import threading
import uuid
from collections import Counter
from pathlib import Path
from typing import IO


def owner_name(pid: int | None = None) -> str:
    """``<pid>-<start time in clock ticks>``: unique for the machine's uptime."""
    pid = os.getpid() if pid is None else pid
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        start = stat.rpartition(")")[2].split()[19]  # field 22: starttime
    except (OSError, IndexError):
        start = uuid.uuid4().hex[:12]  # no /proc: still unique, only less telling
    return f"{pid}-{start}"


def _try_lock(path: Path) -> IO[bytes] | None:
    """The file opened and exclusively locked, or None if another process holds it."""
    try:
        handle = path.open("rb")
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        return None
    return handle


class Pins:
    def __init__(self, root: Path) -> None:
        self.dir = root / "pins"
        self._counts: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._owner: str | None = None
        self._held: IO[bytes] | None = None  # our lock file, locked while we have pins

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

    def release(self) -> set[str]:
        """Drop every pin of this process and its files (a clean stop); returns the digests
        it had pinned."""
        with self._lock:
            had = set(self._counts)
            self._counts.clear()
            if self._owner is not None:
                (self.dir / f"{self._owner}.json").unlink(missing_ok=True)
                (self.dir / f"{self._owner}.lock").unlink(missing_ok=True)
            if self._held is not None:
                self._held.close()
            self._held = self._owner = None
        return had

    def _take_ownership(self) -> str:
        """Create and lock our lock file (once); retried if a reader removed it meanwhile."""
        if self._owner is not None and self._held is not None:
            return self._owner
        self.dir.mkdir(parents=True, exist_ok=True)
        # One lock per Pins object: two stores in one process must not wait on each other.
        owner = f"{owner_name()}-{uuid.uuid4().hex[:6]}"
        path = self.dir / f"{owner}.lock"
        while True:
            handle = path.open("ab")
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                same = os.fstat(handle.fileno()).st_ino == path.stat().st_ino
            except FileNotFoundError:
                same = False
            if same:
                self._owner, self._held = owner, handle
                return owner
            handle.close()  # a reader took it for stale and removed it: create it again

    def _write(self) -> None:
        owner = self._take_ownership()
        path = self.dir / f"{owner}.json"
        if not self._counts:
            path.unlink(missing_ok=True)
            return
        tmp = self.dir / f".{uuid.uuid4().hex}.tmp"
        tmp.write_text(json.dumps(sorted(self._counts)))
        os.replace(tmp, path)

    def in_use(self) -> set[str]:
        """Digests pinned by this process or any other live one; stale files are removed."""
        with self._lock:
            used = set(self._counts)
            own = self._owner
        if not self.dir.is_dir():
            return used
        for path in self.dir.glob("*.json"):
            if path.stem == own:
                continue
            stale = _try_lock(path.with_suffix(".lock"))
            if stale is not None or not path.with_suffix(".lock").exists():
                # Nobody holds its lock: the process that wrote it is gone.
                with contextlib.suppress(OSError):
                    path.unlink()
                    path.with_suffix(".lock").unlink(missing_ok=True)
                if stale is not None:
                    stale.close()
                continue
            with contextlib.suppress(OSError, ValueError):
                used.update(str(d) for d in json.loads(path.read_text()))
        for lock in self.dir.glob("*.lock"):  # of processes gone while they had no pins
            if lock.stem != own and not lock.with_suffix(".json").exists():
                handle = _try_lock(lock)
                if handle is not None:
                    lock.unlink(missing_ok=True)
                    handle.close()
        return used
