"""Transfers between the store and a registry: pull (only the missing blobs, resumed from
what a broken-off download left, each verified before it is installed) and push."""

from __future__ import annotations

from collections.abc import Iterable
from concurrent.futures import Future
from typing import TYPE_CHECKING

from modelrunner.errors import ModelNotFound, RegistryUnavailable, StoreError
from modelrunner.model_files import ModelFiles
from modelrunner.reference import Reference
from modelrunner.store.artifact import Descriptor, parse_config, parse_manifest, plan_bundle
from modelrunner.store.base import StoreBase, short
from modelrunner.store.gc import referenced
from modelrunner.store.index import store_lock
from modelrunner.store.progress import NullProgress, Progress
from modelrunner.store.verify import check_blob

if TYPE_CHECKING:
    from modelrunner.store.remote import RegistryClient


def pull(
    store: StoreBase, r: Reference, progress: Progress | None, bearer_token: str | None = None
) -> ModelFiles:
    """Fetch a model (only the blobs not already here) and return its files; concurrent
    pulls of one reference share one download."""
    key = str(r)
    with store._inflight_lock:
        future = store._inflight.get(key)
        leader = future is None
        if future is None:
            future = store._inflight[key] = Future()
    if not leader:
        return future.result()  # another thread is pulling it: share its result
    try:
        files = _pull(store, r, progress or NullProgress(), bearer_token)
        future.set_result(files)
        return files
    except BaseException as exc:
        future.set_exception(exc)
        raise
    finally:
        with store._inflight_lock:
            del store._inflight[key]


def _pull(
    store: StoreBase, r: Reference, progress: Progress, bearer_token: str | None
) -> ModelFiles:
    where = r.familiar
    client = store._client(r, bearer_token)
    added: list[str] = []
    try:
        with store_lock(store.root, exclusive=False):
            raw, digest = client.get_manifest(r.digest or r.tag or "latest", where)
            manifest = parse_manifest(raw, where)
            _fetch(store, client, manifest.config, where, progress, added)
            config = parse_config(store.blobs.read(manifest.config.digest), manifest, where)
            plan_bundle(manifest, config, where)  # refuse unsafe paths before big downloads
            for layer in manifest.layers:
                _fetch(store, client, layer, where, progress, added)
            store.blobs.put_bytes(raw, digest, where)
            with store.index.edit() as tags:
                tags[store._key(r)] = digest
            return store._files(digest, manifest, config, where)
    except RegistryUnavailable:
        raise  # keep what arrived: the next pull resumes from it
    except BaseException:
        _roll_back(store, added)
        raise


def _roll_back(store: StoreBase, added: Iterable[str]) -> None:
    """Remove blobs a failed pull installed, unless a tagged model uses them meanwhile."""
    added = list(added)
    if not added:
        return
    with store_lock(store.root, exclusive=True):
        reached = referenced(store)
        for digest in added:
            if digest not in reached:
                store.blobs.remove(digest)


def _fetch(
    store: StoreBase,
    client: RegistryClient,
    blob: Descriptor,
    where: str,
    progress: Progress,
    added: list[str],
) -> None:
    with store.blobs.lock(blob.digest):
        if store.blobs.has(blob.digest):
            if not store.verify_existing:
                return
            path = store.blobs.path(blob.digest)
            try:
                check_blob(path, blob.digest, blob.size, store.verified, where)
                return
            except StoreError:
                progress.note(f"{where}: stored blob {blob.digest} is corrupted; fetching it again")
                store.blobs.remove(blob.digest)
        writer = store.blobs.writer(blob.digest, blob.size, where)
        label = f"{short(blob.digest)} {blob.media_type.rsplit('.', 1)[-1]}"
        task = progress.task(label, blob.size, writer.offset)
        try:
            client.fetch_blob(blob, writer, where, task.advance)
            writer.commit()
            added.append(blob.digest)
        finally:
            writer.close()
            task.close()


def push(store: StoreBase, r: Reference, progress: Progress | None) -> str:
    """Upload a stored model to the registry its reference names; returns its digest."""
    progress = progress or NullProgress()
    where = r.familiar
    with store_lock(store.root, exclusive=False):
        digest = store._lookup(r)
        if digest is None:
            raise ModelNotFound(f"{where}: not in the local store {store.root}; nothing to push")
        raw, manifest, _ = store._load(digest, where)
        client = store._client(r)
        for blob in manifest.blobs:
            if not store.blobs.has(blob.digest, blob.size):
                raise ModelNotFound(f"{where}: blob {blob.digest} is missing locally")
            task = progress.task(f"push {short(blob.digest)}", blob.size)
            try:
                client.push_blob(store.blobs.path(blob.digest), blob, where, task.advance)
            finally:
                task.close()
        client.put_manifest(r.tag or digest, raw, where)
        return digest
