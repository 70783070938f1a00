"""Content-addressed blobs on disk: ``blobs/sha256/<hex>``.

A blob only ever appears under its final name complete and verified: bytes go to
``incoming/<hex>.partial`` (kept across crashes so a download can resume), the sha256 is
checked, the file is flushed to disk and then renamed into place. A crash or a full disk
leaves at worst a partial file, never a wrong blob.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
import queue
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from modelrunner.errors import DigestMismatch, StoreError
from modelrunner.store.artifact import check_digest

CHUNK = 1 << 20


def _hex(digest: str) -> str:
    return check_digest(digest, "blob").split(":", 1)[1]


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _disk_error(exc: OSError, path: Path) -> StoreError:
    if exc.errno == errno.ENOSPC:
        return StoreError(f"{path}: disk full while writing (free space and pull again)")
    return StoreError(f"{path}: {exc.strerror or exc}")


class _HashThread:
    """sha256 in a second thread, so hashing a chunk overlaps reading the next one from the
    network (hashlib and file writes release the GIL): a pull then runs at the speed of the
    slower of the two instead of their sum."""

    def __init__(self) -> None:
        self._hash = hashlib.sha256()
        self._chunks: queue.Queue[bytes | None] = queue.Queue(maxsize=16)
        self._thread = threading.Thread(target=self._run, name="blob-sha256", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (chunk := self._chunks.get()) is not None:
            self._hash.update(chunk)

    def update(self, chunk: bytes) -> None:
        self._chunks.put(chunk)

    def stop(self) -> None:
        if self._thread.is_alive():
            self._chunks.put(None)
            self._thread.join()

    def hexdigest(self) -> str:
        self.stop()
        return self._hash.hexdigest()


class BlobWriter:
    """Appends to a partial file while hashing; ``commit`` verifies and renames it into place."""

    def __init__(self, store: BlobStore, digest: str, size: int, where: str) -> None:
        self.digest, self.size, self.where = digest, size, where
        self.store = store
        self.partial = store.incoming / f"{_hex(digest)}.partial"
        self._hash = _HashThread()
        self.offset = 0
        self.resumed_from = 0
        if self.partial.exists():
            if self.partial.stat().st_size > size:
                self.partial.unlink()  # longer than the blob can be: useless
            else:
                # Re-hash what an earlier attempt left, to continue from its end.
                with self.partial.open("rb") as f:
                    while chunk := f.read(CHUNK):
                        self._hash.update(chunk)
                        self.offset += len(chunk)
                self.resumed_from = self.offset
        try:
            self._file: BinaryIO = self.partial.open("ab")
        except OSError as exc:
            raise _disk_error(exc, self.partial) from None

    def restart(self) -> None:
        """Throw away what was written (the server ignored our Range and sent it all)."""
        self._file.seek(0)
        self._file.truncate()
        self._hash.stop()
        self._hash = _HashThread()
        self.offset = self.resumed_from = 0

    def write(self, chunk: bytes) -> None:
        if self.offset + len(chunk) > self.size:
            self.discard()
            raise DigestMismatch(
                f"{self.where}: blob {self.digest} is longer than the {self.size} bytes "
                "the manifest says"
            )
        try:
            self._file.write(chunk)
        except OSError as exc:
            self.close()
            raise _disk_error(exc, self.partial) from None
        self._hash.update(chunk)
        self.offset += len(chunk)

    def close(self) -> None:
        """Stop writing but keep the partial file, so the next attempt resumes."""
        self._hash.stop()
        with contextlib.suppress(OSError):
            self._file.close()

    def discard(self) -> None:
        self.close()
        with contextlib.suppress(FileNotFoundError):
            self.partial.unlink()

    def commit(self) -> Path:
        try:
            self._file.flush()
            os.fsync(self._file.fileno())
        except OSError as exc:
            self.close()
            raise _disk_error(exc, self.partial) from None
        self._file.close()
        actual = f"sha256:{self._hash.hexdigest()}"
        if self.offset != self.size or actual != self.digest:
            self.discard()
            raise DigestMismatch(
                f"{self.where}: blob {self.digest} failed verification: got {self.offset} "
                f"bytes hashing to {actual} (expected {self.size} bytes); nothing was stored"
            )
        return self.store.install(self.partial, self.digest)


class BlobStore:
    def __init__(self, root: Path) -> None:
        self.dir = root / "blobs" / "sha256"
        self.incoming = root / "incoming"
        self._locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()

    def ensure_dirs(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        self.incoming.mkdir(parents=True, exist_ok=True)

    def path(self, digest: str) -> Path:
        return self.dir / _hex(digest)

    def has(self, digest: str, size: int | None = None) -> bool:
        try:
            st = self.path(digest).stat()
        except FileNotFoundError:
            return False
        return size is None or st.st_size == size

    def read(self, digest: str) -> bytes:
        try:
            data = self.path(digest).read_bytes()
        except FileNotFoundError:
            raise StoreError(f"blob {digest} is missing from the store") from None
        if f"sha256:{hashlib.sha256(data).hexdigest()}" != digest:
            raise DigestMismatch(f"blob {digest} in the store is corrupted (pull again)")
        return data

    def verify(self, digest: str, on_bytes: Callable[[int], None] | None = None) -> bool:
        """Re-hash a stored blob; False when its bytes no longer match its name."""
        h = hashlib.sha256()
        try:
            with self.path(digest).open("rb") as f:
                while chunk := f.read(CHUNK):
                    h.update(chunk)
                    if on_bytes:
                        on_bytes(len(chunk))
        except FileNotFoundError:
            return False
        return f"sha256:{h.hexdigest()}" == digest

    def remove(self, digest: str) -> int:
        path = self.path(digest)
        try:
            size = path.stat().st_size
            path.unlink()
        except FileNotFoundError:
            return 0
        return size

    def digests(self) -> list[str]:
        if not self.dir.is_dir():
            return []
        return [f"sha256:{p.name}" for p in self.dir.iterdir() if len(p.name) == 64]

    def install(self, source: Path, digest: str) -> Path:
        """Rename a verified file to its final name, read-only (blobs never change)."""
        final = self.path(digest)
        os.chmod(source, 0o444)
        os.replace(source, final)
        _fsync_dir(self.dir)
        return final

    def writer(self, digest: str, size: int, where: str) -> BlobWriter:
        self.ensure_dirs()
        return BlobWriter(self, digest, size, where)

    def put_bytes(self, data: bytes, expected: str | None = None, where: str = "blob") -> str:
        digest = f"sha256:{hashlib.sha256(data).hexdigest()}"
        if expected is not None and digest != expected:
            raise DigestMismatch(f"{where}: content hashes to {digest}, expected {expected}")
        if not self.has(digest, len(data)):
            self.ensure_dirs()
            tmp = self.incoming / f"put-{uuid.uuid4().hex}.tmp"
            try:
                with tmp.open("wb") as f:
                    f.write(data)
                    f.flush()
                    os.fsync(f.fileno())
                self.install(tmp, digest)
            except OSError as exc:
                tmp.unlink(missing_ok=True)
                raise _disk_error(exc, tmp) from None
        return digest

    def ingest(
        self, source: Path, on_bytes: Callable[[int], None] | None = None
    ) -> tuple[str, int]:
        """Copy a local file into the store (hashing as it goes); returns (digest, size)."""
        self.ensure_dirs()
        tmp = self.incoming / f"ingest-{uuid.uuid4().hex}.tmp"
        h = hashlib.sha256()
        size = 0
        try:
            with source.open("rb") as src, tmp.open("wb") as dst:
                while chunk := src.read(CHUNK):
                    h.update(chunk)
                    dst.write(chunk)
                    size += len(chunk)
                    if on_bytes:
                        on_bytes(len(chunk))
                dst.flush()
                os.fsync(dst.fileno())
            digest = f"sha256:{h.hexdigest()}"
            if self.has(digest, size):
                tmp.unlink()
            else:
                self.install(tmp, digest)
        except FileNotFoundError:
            tmp.unlink(missing_ok=True)
            raise StoreError(f"{source}: no such file") from None
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise _disk_error(exc, tmp) from None
        return digest, size

    @contextlib.contextmanager
    def lock(self, digest: str) -> Iterator[None]:
        """One writer per blob: across threads (a lock) and processes (flock)."""
        key = _hex(digest)
        with self._locks_guard:
            thread_lock = self._locks.setdefault(key, threading.Lock())
        self.ensure_dirs()
        with thread_lock, (self.incoming / f"{key}.lock").open("a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def partials(self) -> list[Path]:
        if not self.incoming.is_dir():
            return []
        return [p for p in self.incoming.iterdir() if p.suffix in (".partial", ".tmp")]
