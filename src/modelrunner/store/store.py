"""The local model store: pull, package, push, tag, list, remove, collect garbage.

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
import shutil
import threading
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelrunner.errors import (
    DigestMismatch,
    ModelInUse,
    ModelNotFound,
    ModelRunnerError,
    RegistryUnavailable,
    StoreError,
    UsageError,
)
from modelrunner.model_files import ModelFiles
from modelrunner.reference import Reference, is_loopback_host, parse
from modelrunner.store import bundle
from modelrunner.store import mediatypes as mt
from modelrunner.store.artifact import (
    Descriptor,
    Manifest,
    ModelConfig,
    build_config,
    build_manifest,
    parse_config,
    parse_manifest,
    plan_bundle,
)
from modelrunner.store.blobs import BlobStore
from modelrunner.store.index import Index, store_lock
from modelrunner.store.pins import Pins
from modelrunner.store.progress import NullProgress, Progress
from modelrunner.store.verify import VerifiedRecord, check_blob

if TYPE_CHECKING:
    from modelrunner.store.remote import RegistryClient

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


def _short(digest: str) -> str:
    return digest[:19]


class Store:
    def __init__(
        self,
        root: Path,
        insecure_registries: Sequence[str] = (),
        *,
        environ: Mapping[str, str] | None = None,
        timeout: tuple[float, float] = (10.0, 60.0),
        verify_existing: bool = True,
        backoff: Sequence[float] | None = None,
    ) -> None:
        self.root = Path(root)
        self.insecure_registries = tuple(insecure_registries)
        self.environ = environ
        self.timeout = timeout
        # Re-hash blobs already on disk when a pull needs them: a corrupted one is fetched again.
        self.verify_existing = verify_existing
        # Waits between attempts when a download breaks off (None: the client's default).
        self.backoff = None if backoff is None else tuple(backoff)
        self.blobs = BlobStore(self.root)
        self.index = Index(self.root)
        self.pins = Pins(self.root)
        self.verified = VerifiedRecord(self.root)
        self._inflight: dict[str, Future[ModelFiles]] = {}
        self._inflight_lock = threading.Lock()

    # ---- references and lookups -------------------------------------------------------

    def is_insecure(self, registry: str) -> bool:
        host = registry.rsplit(":", 1)[0] if registry.count(":") == 1 else registry
        return (
            is_loopback_host(registry)
            or registry in self.insecure_registries
            or (host in self.insecure_registries)
        )

    def _client(self, ref: Reference, bearer_token: str | None = None) -> RegistryClient:
        from modelrunner.store.credentials import lookup
        from modelrunner.store.remote import BACKOFF, RegistryClient

        return RegistryClient(
            ref.registry,
            ref.repository,
            insecure=self.is_insecure(ref.registry),
            credentials=lookup(ref.registry, self.environ),
            timeout=self.timeout,
            backoff=BACKOFF if self.backoff is None else self.backoff,
            bearer_token=bearer_token,
        )

    @staticmethod
    def _key(ref: Reference) -> str:
        """The index key a reference is tagged under (tag wins over digest)."""
        name = f"{ref.registry}/{ref.repository}"
        return f"{name}:{ref.tag}" if ref.tag else f"{name}@{ref.digest}"

    def _lookup(self, ref: Reference) -> str | None:
        tags = self.index.tags()
        if ref.digest:
            known = ref.digest in tags.values() or self._key(ref) in tags
            return ref.digest if known else None
        return tags.get(self._key(ref))

    def _load(self, digest: str, where: str) -> tuple[bytes, Manifest, ModelConfig]:
        raw = self.blobs.read(digest)
        manifest = parse_manifest(raw, where)
        config = parse_config(self.blobs.read(manifest.config.digest), manifest, where)
        return raw, manifest, config

    def _files(
        self, digest: str, manifest: Manifest, config: ModelConfig, where: str
    ) -> ModelFiles:
        plan = plan_bundle(manifest, config, where)
        folder = bundle.materialise(self.root, digest, plan, self.blobs)
        return ModelFiles(
            format=plan.format,
            path=folder if plan.model == "." else folder / plan.model,
            digest=digest,
            context_size=config.context_size,
            chat_template=folder / plan.chat_template if plan.chat_template else None,
            mmproj=folder / plan.mmproj if plan.mmproj else None,
        )

    def has(self, ref: str | Reference) -> bool:
        r = parse(ref) if isinstance(ref, str) else ref
        digest = self._lookup(r)
        if digest is None or not self.blobs.has(digest):
            return False
        try:
            manifest = parse_manifest(self.blobs.path(digest).read_bytes(), r.familiar)
        except (OSError, StoreError):
            return False
        return all(self.blobs.has(d.digest, d.size) for d in manifest.blobs)

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
            refs = sorted({_familiar(k) for k in self.index.tags()})
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

    # ---- pull -------------------------------------------------------------------------

    def pull(
        self,
        ref: str | Reference,
        progress: Progress | None = None,
        *,
        bearer_token: str | None = None,
    ) -> ModelFiles:
        """Fetch a model (only the blobs not already here) and return its files.
        ``bearer_token``: a registry token to send instead of the configured credentials."""
        r = parse(ref) if isinstance(ref, str) else ref
        key = str(r)
        with self._inflight_lock:
            future = self._inflight.get(key)
            leader = future is None
            if future is None:
                future = self._inflight[key] = Future()
        if not leader:
            return future.result()  # another thread is pulling it: share its result
        try:
            files = self._pull(r, progress or NullProgress(), bearer_token)
            future.set_result(files)
            return files
        except BaseException as exc:
            future.set_exception(exc)
            raise
        finally:
            with self._inflight_lock:
                del self._inflight[key]

    async def pull_async(
        self, ref: str | Reference, progress: Progress | None = None
    ) -> ModelFiles:
        return await asyncio.to_thread(self.pull, ref, progress)

    def _pull(self, r: Reference, progress: Progress, bearer_token: str | None) -> ModelFiles:
        where = r.familiar
        client = self._client(r, bearer_token)
        added: list[str] = []
        try:
            with store_lock(self.root, exclusive=False):
                raw, digest = client.get_manifest(r.digest or r.tag or "latest", where)
                manifest = parse_manifest(raw, where)
                self._fetch(client, manifest.config, where, progress, added)
                config = parse_config(self.blobs.read(manifest.config.digest), manifest, where)
                plan_bundle(manifest, config, where)  # refuse unsafe paths before big downloads
                for layer in manifest.layers:
                    self._fetch(client, layer, where, progress, added)
                self.blobs.put_bytes(raw, digest, where)
                with self.index.edit() as tags:
                    tags[self._key(r)] = digest
                return self._files(digest, manifest, config, where)
        except RegistryUnavailable:
            raise  # keep what arrived: the next pull resumes from it
        except BaseException:
            self._roll_back(added)
            raise

    def _roll_back(self, added: Iterable[str]) -> None:
        """Remove blobs a failed pull installed, unless a tagged model uses them meanwhile."""
        added = list(added)
        if not added:
            return
        with store_lock(self.root, exclusive=True):
            referenced = self._referenced()
            for digest in added:
                if digest not in referenced:
                    self.blobs.remove(digest)

    def _fetch(
        self,
        client: RegistryClient,
        blob: Descriptor,
        where: str,
        progress: Progress,
        added: list[str],
    ) -> None:
        with self.blobs.lock(blob.digest):
            if self.blobs.has(blob.digest):
                if not self.verify_existing:
                    return
                path = self.blobs.path(blob.digest)
                try:
                    check_blob(path, blob.digest, blob.size, self.verified, where)
                    return
                except StoreError:
                    progress.note(
                        f"{where}: stored blob {blob.digest} is corrupted; fetching it again"
                    )
                    self.blobs.remove(blob.digest)
            writer = self.blobs.writer(blob.digest, blob.size, where)
            label = f"{_short(blob.digest)} {blob.media_type.rsplit('.', 1)[-1]}"
            task = progress.task(label, blob.size, writer.offset)
            try:
                client.fetch_blob(blob, writer, where, task.advance)
                writer.commit()
                added.append(blob.digest)
            finally:
                writer.close()
                task.close()

    # ---- package and push -------------------------------------------------------------

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
        r = parse(ref) if isinstance(ref, str) else ref
        if r.tag is None:
            raise UsageError(f"{r.familiar}: package needs a tag to name the model, not a digest")
        if sum(x is not None for x in (gguf, safetensors_dir, dduf)) != 1:
            raise UsageError("package needs exactly one of --gguf, --safetensors-dir, --dduf")
        if context_size is not None and context_size <= 0:
            raise UsageError(f"--context-size must be positive, not {context_size}")
        progress = progress or NullProgress()
        where = r.familiar
        with store_lock(self.root, exclusive=False):
            config_type, fmt, fields, trained, files = self._sources(gguf, safetensors_dir, dduf)
            extras = [(mt.LICENSE, p) for p in licenses]
            if chat_template is not None:
                extras.append((mt.CHAT_TEMPLATE, chat_template))
            if mmproj is not None:
                extras.append((mt.MMPROJ, mmproj))
            files += [(media, p.name, p) for media, p in extras]
            layers = []
            for media, name, path in files:
                task = progress.task(f"store {name}", path.stat().st_size if path.exists() else 0)
                try:
                    digest, size = self.blobs.ingest(path, task.advance)
                finally:
                    task.close()
                layers.append(Descriptor(media, digest, size, {mt.ANNOTATION_FILEPATH: name}))
            raw_config = build_config(
                fmt,
                [layer.digest for layer in layers],
                datetime.now(UTC),
                fields,
                context_size or trained,
            )
            config = Descriptor(config_type, self.blobs.put_bytes(raw_config), len(raw_config))
            raw = build_manifest(config, layers)
            manifest = parse_manifest(raw, where)
            model_config = parse_config(raw_config, manifest, where)
            plan_bundle(manifest, model_config, where)  # two files at one path are refused here
            digest = self.blobs.put_bytes(raw)
            with self.index.edit() as tags:
                tags[self._key(r)] = digest
            return self._files(digest, manifest, model_config, where)

    @staticmethod
    def _sources(
        gguf: Path | None, folder: Path | None, dduf: Path | None
    ) -> tuple[str, Any, dict[str, Any], int | None, list[tuple[str, str, Path]]]:
        """(config media type, format, config fields, trained context, [(type, name, path)])."""
        if gguf is not None:
            from modelrunner.store import gguf_meta

            if not gguf.is_file():
                raise StoreError(f"{gguf}: no such GGUF file")
            shards = gguf_meta.discover_shards(gguf)
            fields, trained = gguf_meta.read_fields(shards)
            return mt.CONFIG_V01, "gguf", fields, trained, [(mt.GGUF, s.name, s) for s in shards]
        if folder is not None:
            from modelrunner.store import folder_meta

            listed = folder_meta.list_folder(folder)
            weights = [p for rel, p in listed if rel.endswith(".safetensors")]
            if not weights:
                raise StoreError(f"{folder}: no .safetensors file in the folder")
            fields = folder_meta.read_fields(folder, weights)
            layers = [(folder_meta.classify(rel), rel, p) for rel, p in listed]
            return mt.CONFIG_V02, "safetensors", fields, None, layers
        assert dduf is not None  # _sources is called with exactly one source
        if not dduf.is_file():
            raise StoreError(f"{dduf}: no such DDUF file")
        from modelrunner.store.gguf_meta import human

        size = human(dduf.stat().st_size, ("B", "KiB", "MiB", "GiB", "TiB"), 1024)
        return mt.CONFIG_V01, "dduf", {"size": size}, None, [(mt.DDUF, dduf.name, dduf)]

    def push(self, ref: str | Reference, progress: Progress | None = None) -> str:
        """Upload a stored model to the registry its reference names; returns its digest."""
        r = parse(ref) if isinstance(ref, str) else ref
        progress = progress or NullProgress()
        where = r.familiar
        with store_lock(self.root, exclusive=False):
            digest = self._lookup(r)
            if digest is None:
                raise ModelNotFound(f"{where}: not in the local store {self.root}; nothing to push")
            raw, manifest, _ = self._load(digest, where)
            client = self._client(r)
            for blob in manifest.blobs:
                if not self.blobs.has(blob.digest, blob.size):
                    raise ModelNotFound(f"{where}: blob {blob.digest} is missing locally")
                task = progress.task(f"push {_short(blob.digest)}", blob.size)
                try:
                    client.push_blob(self.blobs.path(blob.digest), blob, where, task.advance)
                finally:
                    task.close()
            client.put_manifest(r.tag or digest, raw, where)
            return digest

    # ---- tags, listing, removal -------------------------------------------------------

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
        self._collect_removed(digest)

    def release_pins(self) -> None:
        """A clean stop: drop this process's pins, then the files only they kept."""
        for digest in self.pins.release():
            self._collect_removed(digest)

    def removed_while_served(self, digest: str) -> bool:
        """True for a pinned model no tag names any more (``mr rm --force`` while served):
        its files stay until it is no longer served."""
        return digest not in set(self.index.tags().values()) and self.blobs.has(digest)

    def _collect_removed(self, digest: str) -> None:
        """Delete what ``rm --force`` left of ``digest`` once nothing pins it."""
        try:
            if digest in set(self.index.tags().values()) or digest in self.pins.in_use():
                return
            if not bundle.bundle_dir(self.root, digest).exists() and not self.blobs.has(digest):
                return
            # Never wait (a server calls this from its event loop): if a pull or rm holds
            # the store, the next rm or gc (mr df --gc) removes the files instead.
            with store_lock(self.root, exclusive=True, wait=False):
                self._collect(partials=False)
        except (OSError, StoreError):
            pass

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
                    f"{where}: model {_short(digest)} is served by a running instance; "
                    "stop it first, or remove with --force (its files are then kept until "
                    "the instance stops)"
                )
            with self.index.edit() as current:
                for key in keys:
                    current.pop(key, None)
            if last:
                self._collect(partials=False)
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
                    tags=tuple(sorted(_familiar(k) for k in keys)),
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
        tags = sorted(_familiar(k) for k, v in self.index.tags().items() if v == digest)
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

    def _referenced(self) -> set[str]:
        """Blobs a tag or a served model (a pin) reaches."""
        referenced: set[str] = set()
        for digest in set(self.index.tags().values()) | self.pins.in_use():
            referenced.add(digest)
            try:
                manifest = parse_manifest(self.blobs.path(digest).read_bytes(), digest)
            except (OSError, StoreError):
                continue
            referenced.update(blob.digest for blob in manifest.blobs)
        return referenced

    def _collect(self, partials: bool) -> GcReport:
        referenced = self._referenced()
        live = set(self.index.tags().values()) | self.pins.in_use()
        removed = freed = 0
        for digest in self.blobs.digests():
            if digest not in referenced:
                freed += self.blobs.remove(digest)
                self.verified.forget(digest)
                removed += 1
        bundles = 0
        for digest in bundle.known(self.root):
            if digest not in live:
                bundle.remove(self.root, digest)
                bundles += 1
        dropped = 0
        if partials:
            for path in self.blobs.partials():
                freed += path.stat().st_size
                path.unlink(missing_ok=True)
                dropped += 1
            for lock in self.blobs.incoming.glob("*.lock"):
                lock.unlink(missing_ok=True)
        return GcReport(removed, freed, bundles, dropped)

    def gc(self) -> GcReport:
        """Delete blobs and bundles no tag reaches, and broken-off downloads."""
        with store_lock(self.root, exclusive=True):
            return self._collect(partials=True)

    def disk_usage(self) -> DiskUsage:
        referenced = self._referenced()
        blob_bytes = reclaimable = 0
        digests = self.blobs.digests()
        for digest in digests:
            size = self.blobs.path(digest).stat().st_size
            blob_bytes += size
            if digest not in referenced:
                reclaimable += size
        partial_bytes = sum(p.stat().st_size for p in self.blobs.partials())
        self.root.mkdir(parents=True, exist_ok=True)
        return DiskUsage(
            models=len(set(self.index.tags().values())),
            blobs=len(digests),
            blob_bytes=blob_bytes,
            reclaimable_bytes=reclaimable,
            partial_bytes=partial_bytes,
            free_bytes=shutil.disk_usage(self.root).free,
        )

    def in_use(self) -> set[str]:
        return self.pins.in_use()


def _familiar(key: str) -> str:
    prefix = "docker.io/"
    return key[len(prefix) :] if key.startswith(prefix) else key
