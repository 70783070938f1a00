"""``mr package``: build a model artifact from local files (GGUF, a safetensors folder or a
DDUF file, plus licenses, a chat template, a projector), store it and tag it."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from modelrunner.errors import StoreError, UsageError
from modelrunner.model_files import ModelFiles
from modelrunner.reference import Reference
from modelrunner.store import mediatypes as mt
from modelrunner.store.artifact import (
    Descriptor,
    build_config,
    build_manifest,
    parse_config,
    parse_manifest,
    plan_bundle,
)
from modelrunner.store.base import StoreBase
from modelrunner.store.index import store_lock
from modelrunner.store.progress import NullProgress, Progress


def package(
    store: StoreBase,
    r: Reference,
    *,
    gguf: Path | None,
    safetensors_dir: Path | None,
    dduf: Path | None,
    licenses: Sequence[Path],
    chat_template: Path | None,
    mmproj: Path | None,
    context_size: int | None,
    progress: Progress | None,
) -> ModelFiles:
    if r.tag is None:
        raise UsageError(f"{r.familiar}: package needs a tag to name the model, not a digest")
    if sum(x is not None for x in (gguf, safetensors_dir, dduf)) != 1:
        raise UsageError("package needs exactly one of --gguf, --safetensors-dir, --dduf")
    if context_size is not None and context_size <= 0:
        raise UsageError(f"--context-size must be positive, not {context_size}")
    progress = progress or NullProgress()
    where = r.familiar
    with store_lock(store.root, exclusive=False):
        config_type, fmt, fields, trained, files = sources(gguf, safetensors_dir, dduf)
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
                digest, size = store.blobs.ingest(path, task.advance)
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
        config = Descriptor(config_type, store.blobs.put_bytes(raw_config), len(raw_config))
        raw = build_manifest(config, layers)
        manifest = parse_manifest(raw, where)
        model_config = parse_config(raw_config, manifest, where)
        plan_bundle(manifest, model_config, where)  # two files at one path are refused here
        digest = store.blobs.put_bytes(raw)
        with store.index.edit() as tags:
            tags[store._key(r)] = digest
        return store._files(digest, manifest, model_config, where)


def sources(
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
    assert dduf is not None  # sources is called with exactly one source
    if not dduf.is_file():
        raise StoreError(f"{dduf}: no such DDUF file")
    from modelrunner.store.gguf_meta import human

    size = human(dduf.stat().st_size, ("B", "KiB", "MiB", "GiB", "TiB"), 1024)
    return mt.CONFIG_V01, "dduf", {"size": size}, None, [(mt.DDUF, dduf.name, dduf)]
