"""What every part of the store shares: its folders, the index, and reading a stored model.

``Store`` (store.py) is the front door; the transfers (pull, push, resume), packaging and
garbage collection live in their own modules and work on a ``StoreBase``.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import TYPE_CHECKING

from modelrunner.errors import StoreError
from modelrunner.model_files import ModelFiles
from modelrunner.reference import Reference, is_loopback_host, parse
from modelrunner.store import bundle
from modelrunner.store.artifact import (
    Manifest,
    ModelConfig,
    parse_config,
    parse_manifest,
    plan_bundle,
)
from modelrunner.store.blobs import BlobStore
from modelrunner.store.index import Index
from modelrunner.store.pins import Pins
from modelrunner.store.verify import VerifiedRecord

if TYPE_CHECKING:
    from modelrunner.store.remote import RegistryClient


def short(digest: str) -> str:
    return digest[:19]


def familiar(key: str) -> str:
    prefix = "docker.io/"
    return key[len(prefix) :] if key.startswith(prefix) else key


def as_reference(ref: str | Reference) -> Reference:
    return parse(ref) if isinstance(ref, str) else ref


class StoreBase:
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
        r = as_reference(ref)
        digest = self._lookup(r)
        if digest is None or not self.blobs.has(digest):
            return False
        try:
            manifest = parse_manifest(self.blobs.path(digest).read_bytes(), r.familiar)
        except (OSError, StoreError):
            return False
        return all(self.blobs.has(d.digest, d.size) for d in manifest.blobs)
