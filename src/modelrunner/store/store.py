"""The local model store: pull, package, push, tag, list, remove, collect garbage.

`Store` is the front door: the transfers (transfers.py), packaging (package.py) and garbage
collection (gc.py) are modules of their own working on the shared `StoreBase` (base.py).

Layout under the root (``settings.store_dir``):

    blobs/sha256/<hex>       every blob (layers, configs, manifests), verified, read-only
    index.json               tags: "registry/repository:tag" -> manifest digest
    bundles/<hex>/           per manifest: the files an engine loads (hard links to blobs)
    incoming/<hex>.partial   downloads in progress or broken off (resumed by the next pull)
    pins/<owner>.json        manifest digests a running server serves (<owner>.lock held)
    store.lock, index.lock   flock files

Every method is blocking and thread-safe; from asyncio use ``await store.pull_async(ref)``
(or ``asyncio.to_thread``). Concurrent pulls of one reference share one download.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modelrunner.errors import (
    DigestMismatch,
    ModelInUse,
    ModelNotFound,
    ModelRunnerError,
    StoreError,
    UsageError,
)
from modelrunner.model_files import ModelFiles
from modelrunner.reference import Reference, parse
from modelrunner.store import gc as _gc
from modelrunner.store import package as _package
from modelrunner.store import transfers
from modelrunner.store.base import StoreBase, as_reference, familiar, short
from modelrunner.store.gc import DiskUsage, GcReport
from modelrunner.store.index import store_lock
from modelrunner.store.progress import Progress
from modelrunner.store.verify import check_blob

__all__ = ["DiskUsage", "GcReport", "ModelInfo", "Store"]

log = logging.getLogger("modelrunner.store")


@dataclass(frozen=True, slots=True)
class ModelInfo:
    digest: str
    tags: tuple[str, ...]
    format: str
    size: int
    created: str | None
    architecture: str | None
    parameters: str | None
    quantization: str | None


class Store(StoreBase):
    # ---- lookups and integrity --------------------------------------------------------

    def resolve(self, ref: str | Reference) -> ModelFiles:
        """The files of a stored model (no network); ModelNotFound when it is not here."""
        r = parse(ref) if isinstance(ref, str) else ref
        where = r.familiar
        with store_lock(self.root, exclusive=False):
            digest = self._lookup(r)
            if digest is None or not self.blobs.has(digest):
                raise ModelNotFound(
                    f"{where}: not in the local store {self.root} (mr pull {where})"
                )
            _, manifest, config = self._load(digest, where)
            for blob in manifest.blobs:
                if not self.blobs.has(blob.digest, blob.size):
                    raise ModelNotFound(
                        f"{where}: incomplete in the local store (blob {blob.digest} is "
                        "missing); pull it again"
                    )
            return self._files(digest, manifest, config, where)

    # ---- integrity --------------------------------------------------------------------

    def check_intact(self, ref: str | Reference, *, force: bool = False) -> int:
        """Re-hash every blob of a stored model whose file changed since it was last
        verified (every blob with ``force``). Raises DigestMismatch naming the model, the
        blob and its file; returns how many blobs were hashed."""
        r = parse(ref) if isinstance(ref, str) else ref
        where = r.familiar
        with store_lock(self.root, exclusive=False):
            digest = self._lookup(r)
            if digest is None:
                raise ModelNotFound(f"{where}: not in the local store {self.root}")
            _, manifest, _ = self._load(digest, where)  # manifest and config: hashed on read
            return sum(
                check_blob(
                    self.blobs.path(blob.digest),
                    blob.digest,
                    blob.size,
                    self.verified,
                    where,
                    force=force,
                )
                for blob in manifest.layers
            )

    def files_to_load(
        self, ref: str | Reference, pull_policy: str = "if-not-present", pull: bool = True
    ) -> ModelFiles:
        """The files of a model an engine is about to load, checked with ``check_intact``.
        Resolved locally when ``pull_policy`` (``pull``: the reference may have moved)
        allows, else pulled. A corrupted blob is fetched again unless the policy is
        ``never``; then, or when that fails, DigestMismatch says which file is bad."""
        r = parse(ref) if isinstance(ref, str) else ref
        if pull_policy == "never":
            files = self.resolve(r)
            self.check_intact(r)
            return files
        corrupted: DigestMismatch | None = None
        if (pull_policy == "if-not-present" or not pull) and self.has(r):
            files = self.resolve(r)
            try:
                self.check_intact(r)
                return files
            except DigestMismatch as exc:
                log.error("%s; fetching it again", exc)
                corrupted = exc
        try:
            return self.pull(r)
        except ModelRunnerError as exc:
            if corrupted is None:
                raise
            raise DigestMismatch(f"{corrupted}; fetching it again failed: {exc}") from None

    def verify(self, ref: str | Reference | None = None) -> list[tuple[str, str | None]]:
        """``mr verify``: hash every blob of every model (or of ``ref``), whatever was
        verified before. Returns (model, problem or None) per model."""
        if ref is not None:
            r = parse(ref) if isinstance(ref, str) else ref
            refs = [r.familiar]
        else:
            refs = sorted({familiar(k) for k in self.index.tags()})
        results: list[tuple[str, str | None]] = []
        for name in refs:
            try:
                self.check_intact(name, force=True)
                results.append((name, None))
            except ModelNotFound:
                raise
            except StoreError as exc:
                log.error("%s", exc)
                results.append((name, str(exc)))
        return results

    # ---- transfers, packaging ---------------------------------------------------------

    def pull(
        self,
        ref: str | Reference,
        progress: Progress | None = None,
        *,
        bearer_token: str | None = None,
    ) -> ModelFiles:
        """Fetch a model (only the blobs not already here) and return its files.
        ``bearer_token``: a registry token to send instead of the configured credentials."""
        return transfers.pull(self, as_reference(ref), progress, bearer_token)

    async def pull_async(
        self, ref: str | Reference, progress: Progress | None = None
    ) -> ModelFiles:
        return await asyncio.to_thread(self.pull, ref, progress)

    def push(self, ref: str | Reference, progress: Progress | None = None) -> str:
        """Upload a stored model to the registry its reference names; returns its digest."""
        return transfers.push(self, as_reference(ref), progress)

    def package(
        self,
        ref: str | Reference,
        *,
        gguf: Path | None = None,
        safetensors_dir: Path | None = None,
        dduf: Path | None = None,
        licenses: Sequence[Path] = (),
        chat_template: Path | None = None,
        mmproj: Path | None = None,
        context_size: int | None = None,
        progress: Progress | None = None,
    ) -> ModelFiles:
        """Build a model artifact from local files, store it and tag it ``ref``."""
        return _package.package(
            self,
            as_reference(ref),
            gguf=gguf,
            safetensors_dir=safetensors_dir,
            dduf=dduf,
            licenses=licenses,
            chat_template=chat_template,
            mmproj=mmproj,
            context_size=context_size,
            progress=progress,
        )

    # ---- tags, pins, listing, removal -------------------------------------------------

    def tag(self, source: str | Reference, target: str | Reference) -> str:
        src = parse(source) if isinstance(source, str) else source
        dst = parse(target) if isinstance(target, str) else target
        if dst.tag is None or dst.digest is not None:
            raise UsageError(f"{dst.familiar}: a tag target needs a tag and no digest")
        with store_lock(self.root, exclusive=False):
            digest = self._lookup(src)
            if digest is None:
                raise ModelNotFound(f"{src.familiar}: not in the local store {self.root}")
            with self.index.edit() as tags:
                tags[self._key(dst)] = digest
        return digest

    def pin(self, digest: str) -> None:
        """Mark a model as served: ``rm`` refuses it without force, and with force (like gc)
        keeps its files until the last pin goes."""
        self.pins.pin(digest)

    def unpin(self, digest: str) -> None:
        self.pins.unpin(digest)
        _gc.collect_removed(self, digest)

    def release_pins(self) -> None:
        """A clean stop: drop this process's pins, then the files only they kept."""
        for digest in self.pins.release():
            _gc.collect_removed(self, digest)

    def removed_while_served(self, digest: str) -> bool:
        """True for a pinned model no tag names any more (``mr rm --force`` while served):
        its files stay until it is no longer served."""
        return digest not in set(self.index.tags().values()) and self.blobs.has(digest)

    def remove(self, ref: str | Reference, force: bool = False) -> str:
        """Untag ``ref`` (every tag of the model when it names a digest); delete the model
        when no tag is left, unless it is in use and ``force`` is not given."""
        r = parse(ref) if isinstance(ref, str) else ref
        where = r.familiar
        with store_lock(self.root, exclusive=True):
            tags = self.index.tags()
            digest = self._lookup(r)
            if digest is None:
                raise ModelNotFound(f"{where}: not in the local store {self.root}")
            keys = {k for k, v in tags.items() if v == digest} if r.digest else {self._key(r)}
            last = all(k in keys for k, v in tags.items() if v == digest)
            if last and not force and digest in self.pins.in_use():
                raise ModelInUse(
                    f"{where}: model {short(digest)} is served by a running instance; "
                    "stop it first, or remove with --force (its files are then kept until "
                    "the instance stops)"
                )
            with self.index.edit() as current:
                for key in keys:
                    current.pop(key, None)
            if last:
                _gc.collect(self, partials=False)
        return digest

    def list(self) -> list[ModelInfo]:
        by_digest: dict[str, list[str]] = {}
        for key, digest in self.index.tags().items():
            by_digest.setdefault(digest, []).append(key)
        out = []
        for digest, keys in sorted(by_digest.items(), key=lambda kv: sorted(kv[1])[0]):
            try:
                _, manifest, config = self._load(digest, keys[0])
            except StoreError:
                continue  # half-removed or corrupted: `mr pull` repairs it
            created = config.raw.get("descriptor", {}).get("created")
            out.append(
                ModelInfo(
                    digest=digest,
                    tags=tuple(sorted(familiar(k) for k in keys)),
                    format=config.format,
                    size=manifest.size,
                    created=str(created) if created else None,
                    architecture=config.field("architecture"),
                    parameters=config.field("parameters"),
                    quantization=config.field("quantization"),
                )
            )
        return out

    def inspect(self, ref: str | Reference) -> dict[str, Any]:
        r = parse(ref) if isinstance(ref, str) else ref
        digest = self._lookup(r)
        if digest is None:
            raise ModelNotFound(f"{r.familiar}: not in the local store {self.root}")
        raw, manifest, config = self._load(digest, r.familiar)
        tags = sorted(familiar(k) for k, v in self.index.tags().items() if v == digest)
        return {
            "reference": str(r),
            "digest": digest,
            "tags": tags,
            "format": config.format,
            "size": manifest.size,
            "in_use": digest in self.pins.in_use(),
            "manifest": json.loads(raw),
            "config": dict(config.raw),
        }

    # ---- garbage collection and disk usage --------------------------------------------

    def gc(self) -> GcReport:
        """Delete blobs and bundles no tag reaches, and broken-off downloads."""
        return _gc.gc(self)

    def disk_usage(self) -> DiskUsage:
        return _gc.disk_usage(self)

    def in_use(self) -> set[str]:
        return self.pins.in_use()
