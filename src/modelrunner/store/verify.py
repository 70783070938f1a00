"""Blob integrity after download: a blob's bytes are re-hashed before an engine loads
them, unless this store already verified exactly this file.

A blob is verified when it is written (blobs.py); after that only a change on disk can
break it, and every change a process can make to a file shows in its ``stat``: size,
mtime, ctime (which no one can set back) or inode (a replaced file). ``verified.json``
remembers, per digest, the ``stat`` stamp of the file as it was last hashed; a file with
the same stamp is trusted without reading it, so a server restart costs nothing. A changed
or unknown stamp means hashing it again. (Bit rot that the file system does not report
leaves the stamp alone: ``mr verify`` hashes everything regardless.)
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path

from modelrunner.errors import DigestMismatch, StoreError

_CHUNK = 1 << 20


@dataclass(frozen=True, slots=True)
class Stamp:
    size: int
    mtime_ns: int
    ctime_ns: int
    inode: int

    @classmethod
    def of(cls, path: Path) -> Stamp:
        st = path.stat()
        return cls(st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)

    def as_list(self) -> list[int]:
        return [self.size, self.mtime_ns, self.ctime_ns, self.inode]


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return f"sha256:{h.hexdigest()}"


class VerifiedRecord:
    """``verified.json``: digest -> the stamp its file had when its hash last matched."""

    def __init__(self, root: Path) -> None:
        self.path = root / "verified.json"
        self._lock = threading.Lock()

    def _load(self) -> dict[str, list[int]]:
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def _save(self, data: dict[str, list[int]]) -> None:
        tmp = self.path.with_name(f".verified-{uuid.uuid4().hex[:8]}.tmp")
        try:
            tmp.write_text(json.dumps(data, sort_keys=True))
            os.replace(tmp, self.path)
        except OSError:
            tmp.unlink(missing_ok=True)  # a lost record only costs a hash later

    def current(self, digest: str, stamp: Stamp) -> bool:
        return self._load().get(digest) == stamp.as_list()

    def remember(self, digest: str, stamp: Stamp) -> None:
        with self._lock:
            data = self._load()
            data[digest] = stamp.as_list()
            self._save(data)

    def forget(self, digest: str) -> None:
        with self._lock:
            data = self._load()
            if data.pop(digest, None) is not None:
                self._save(data)


def check_blob(
    path: Path,
    digest: str,
    size: int | None,
    record: VerifiedRecord,
    where: str,
    *,
    force: bool = False,
) -> bool:
    """Make sure the blob at ``path`` still is ``digest``; returns whether it was hashed
    (False: its stamp was already verified). Raises DigestMismatch, naming ``where`` and
    the file, when it is not."""
    try:
        stamp = Stamp.of(path)
    except FileNotFoundError:
        raise StoreError(f"{where}: blob {digest} is missing ({path}); pull it again") from None
    if not force and record.current(digest, stamp):
        return False
    if size is not None and stamp.size != size:
        record.forget(digest)
        raise DigestMismatch(
            f"{where}: blob {digest} is corrupted: {path} has {stamp.size} bytes, "
            f"the manifest says {size}"
        )
    actual = sha256_of(path)
    if actual != digest:
        record.forget(digest)
        raise DigestMismatch(f"{where}: blob {digest} is corrupted: {path} hashes to {actual}")
    with contextlib.suppress(OSError):
        if Stamp.of(path) == stamp:  # unchanged while we read it
            record.remember(digest, stamp)
    return True
