"""Tags: which manifest digest each reference points at, in ``index.json``.

Writers hold an exclusive flock and replace the file atomically; readers read the file as
it is (a rename is atomic, so they see the old or the new map, never half of one).

The same module owns the store-wide lock: pulls and packaging hold it shared (they add
blobs before they tag them), garbage collection and removal hold it exclusive so they
never delete a blob a pull has fetched but not yet tagged.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

from modelrunner.errors import StoreError

_VERSION = 1


class Index:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.path = root / "index.json"

    def tags(self) -> dict[str, str]:
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise StoreError(f"{self.path}: unreadable store index ({exc})") from None
        if not isinstance(data, dict) or data.get("version") != _VERSION:
            raise StoreError(f"{self.path}: not a store index of version {_VERSION}")
        tags = data.get("tags", {})
        return {str(k): str(v) for k, v in tags.items()}

    @contextlib.contextmanager
    def edit(self) -> Iterator[dict[str, str]]:
        """Yield the tag map to change in place; it is written back when the block ends."""
        self.root.mkdir(parents=True, exist_ok=True)
        with (self.root / "index.lock").open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            tags = self.tags()
            before = dict(tags)
            yield tags
            if tags != before:
                self._write(tags)

    def _write(self, tags: dict[str, str]) -> None:
        tmp = self.root / f".index-{uuid.uuid4().hex}.tmp"
        data = {"version": _VERSION, "tags": dict(sorted(tags.items()))}
        try:
            with tmp.open("w") as f:
                json.dump(data, f, indent=1)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise StoreError(f"{self.path}: cannot write the store index ({exc})") from None


@contextlib.contextmanager
def store_lock(root: Path, exclusive: bool, *, wait: bool = True) -> Iterator[None]:
    """The store-wide lock; with ``wait=False``, BlockingIOError if someone holds it."""
    root.mkdir(parents=True, exist_ok=True)
    with (root / "store.lock").open("a") as f:
        mode = fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH
        fcntl.flock(f, mode if wait else mode | fcntl.LOCK_NB)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
