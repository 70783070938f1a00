"""Garbage collection and disk usage: what no tag and no served model (pin) reaches goes."""

from __future__ import annotations

import shutil
from dataclasses import dataclass

from modelrunner.errors import StoreError
from modelrunner.store import bundle
from modelrunner.store.artifact import parse_manifest
from modelrunner.store.base import StoreBase
from modelrunner.store.index import store_lock


@dataclass(frozen=True, slots=True)
class GcReport:
    blobs_removed: int
    bytes_freed: int
    bundles_removed: int
    partials_removed: int


@dataclass(frozen=True, slots=True)
class DiskUsage:
    models: int
    blobs: int
    blob_bytes: int
    reclaimable_bytes: int
    partial_bytes: int
    free_bytes: int


def referenced(store: StoreBase) -> set[str]:
    """Blobs a tag or a served model (a pin) reaches."""
    found: set[str] = set()
    for digest in set(store.index.tags().values()) | store.pins.in_use():
        found.add(digest)
        try:
            manifest = parse_manifest(store.blobs.path(digest).read_bytes(), digest)
        except (OSError, StoreError):
            continue
        found.update(blob.digest for blob in manifest.blobs)
    return found


def collect(store: StoreBase, partials: bool) -> GcReport:
    """Delete unreferenced blobs and bundles (and broken-off downloads with ``partials``);
    the caller holds the store lock exclusively."""
    reached = referenced(store)
    live = set(store.index.tags().values()) | store.pins.in_use()
    removed = freed = 0
    for digest in store.blobs.digests():
        if digest not in reached:
            freed += store.blobs.remove(digest)
            store.verified.forget(digest)
            removed += 1
    bundles = 0
    for digest in bundle.known(store.root):
        if digest not in live:
            bundle.remove(store.root, digest)
            bundles += 1
    dropped = 0
    if partials:
        for path in store.blobs.partials():
            freed += path.stat().st_size
            path.unlink(missing_ok=True)
            dropped += 1
        for lock in store.blobs.incoming.glob("*.lock"):
            lock.unlink(missing_ok=True)
    return GcReport(removed, freed, bundles, dropped)


def collect_removed(store: StoreBase, digest: str) -> None:
    """Delete what ``rm --force`` left of ``digest`` once nothing pins it."""
    try:
        if digest in set(store.index.tags().values()) or digest in store.pins.in_use():
            return
        if not bundle.bundle_dir(store.root, digest).exists() and not store.blobs.has(digest):
            return
        # Never wait (a server calls this from its event loop): if a pull or rm holds
        # the store, the next rm or gc (mr df --gc) removes the files instead.
        with store_lock(store.root, exclusive=True, wait=False):
            collect(store, partials=False)
    except (OSError, StoreError):
        pass


def gc(store: StoreBase) -> GcReport:
    with store_lock(store.root, exclusive=True):
        return collect(store, partials=True)


def disk_usage(store: StoreBase) -> DiskUsage:
    reached = referenced(store)
    blob_bytes = reclaimable = 0
    digests = store.blobs.digests()
    for digest in digests:
        size = store.blobs.path(digest).stat().st_size
        blob_bytes += size
        if digest not in reached:
            reclaimable += size
    partial_bytes = sum(p.stat().st_size for p in store.blobs.partials())
    store.root.mkdir(parents=True, exist_ok=True)
    return DiskUsage(
        models=len(set(store.index.tags().values())),
        blobs=len(digests),
        blob_bytes=blob_bytes,
        reclaimable_bytes=reclaimable,
        partial_bytes=partial_bytes,
        free_bytes=shutil.disk_usage(store.root).free,
    )
