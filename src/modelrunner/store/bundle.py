"""The folder an engine loads a stored model from: ``bundles/<manifest hex>/``.

Files are hard links to the blobs (symlinks where the file system refuses links), named as
the artifact's plan says, so the bytes are on disk once. A bundle is built under a
temporary name and renamed into place; it is rebuilt when one of its links no longer
points at the blob (a corrupted blob was re-fetched into a new file).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tarfile
import uuid
from pathlib import Path

from modelrunner.errors import StoreError
from modelrunner.store.artifact import BundlePlan
from modelrunner.store.blobs import BlobStore


def bundle_dir(root: Path, manifest_digest: str) -> Path:
    return root / "bundles" / manifest_digest.split(":", 1)[1]


def _current(folder: Path, plan: BundlePlan, blobs: BlobStore) -> bool:
    try:
        return all(
            entry.untar or os.path.samefile(folder / entry.path, blobs.path(entry.digest))
            for entry in plan.entries
        )
    except OSError:
        return False


def _link(blob: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(blob, target)
    except OSError:
        os.symlink(blob.resolve(), target)


def _untar(blob: Path, folder: Path, where: str) -> None:
    try:
        with tarfile.open(blob) as tar:
            tar.extractall(folder, filter="data")
    except (tarfile.TarError, OSError) as exc:
        raise StoreError(f"{where}: cannot unpack config archive {blob.name}: {exc}") from None


def materialise(root: Path, manifest_digest: str, plan: BundlePlan, blobs: BlobStore) -> Path:
    folder = bundle_dir(root, manifest_digest)
    if folder.is_dir() and _current(folder, plan, blobs):
        return folder
    tmp = folder.parent / f".{folder.name}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir(parents=True)
    try:
        for entry in plan.entries:
            if entry.untar:
                _untar(blobs.path(entry.digest), tmp, manifest_digest)
            else:
                _link(blobs.path(entry.digest), tmp / entry.path)
        if folder.exists():
            remove(root, manifest_digest)
        try:
            os.rename(tmp, folder)
        except OSError:
            # Another process built it at the same moment; theirs is as good as ours.
            if not folder.is_dir():
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder


def remove(root: Path, manifest_digest: str) -> None:
    folder = bundle_dir(root, manifest_digest)
    # Rename first so an engine never sees a half-deleted folder under the real name.
    trash = folder.parent / f".trash-{uuid.uuid4().hex[:8]}"
    with contextlib.suppress(FileNotFoundError):
        os.rename(folder, trash)
        shutil.rmtree(trash, ignore_errors=True)


def known(root: Path) -> list[str]:
    folder = root / "bundles"
    if not folder.is_dir():
        return []
    return [f"sha256:{p.name}" for p in folder.iterdir() if not p.name.startswith(".")]
