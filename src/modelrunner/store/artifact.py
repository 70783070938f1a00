"""OCI manifests and model configs: parse, validate, build, and plan the bundle folder.

Pure: bytes in, data out. Nothing here touches the disk or the network, so every rule
(which media types are accepted, how files are named in the bundle) is tested by tables.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import PurePosixPath
from typing import Any

from modelrunner.errors import StoreError
from modelrunner.model_files import Format
from modelrunner.store import mediatypes as mt

_DIGEST = re.compile(r"sha256:[a-f0-9]{64}")
# llama.cpp finds the shards of a split model by this name pattern (llama_split_path).
SHARD_NAME = re.compile(r"^(?P<prefix>.+)-(?P<index>\d{5})-of-(?P<count>\d{5})\.gguf$")


def is_digest(text: str) -> bool:
    return _DIGEST.fullmatch(text) is not None


def check_digest(text: object, where: str) -> str:
    if not isinstance(text, str) or not is_digest(text):
        raise StoreError(f"{where}: invalid digest {text!r} (only sha256:<64 hex> is supported)")
    return text


@dataclass(frozen=True, slots=True)
class Descriptor:
    media_type: str
    digest: str
    size: int
    annotations: Mapping[str, str] = field(default_factory=dict)

    @property
    def filepath(self) -> str | None:
        return self.annotations.get(mt.ANNOTATION_FILEPATH)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"mediaType": self.media_type, "digest": self.digest}
        out["size"] = self.size
        if self.annotations:
            out["annotations"] = dict(self.annotations)
        return out


@dataclass(frozen=True, slots=True)
class Manifest:
    config: Descriptor
    layers: tuple[Descriptor, ...]

    @property
    def blobs(self) -> tuple[Descriptor, ...]:
        return (self.config, *self.layers)

    @property
    def size(self) -> int:
        return sum(d.size for d in self.blobs)


@dataclass(frozen=True, slots=True)
class ModelConfig:
    format: Format
    context_size: int | None
    raw: Mapping[str, Any]

    def field(self, name: str) -> str | None:
        value = self.raw.get("config", {}).get(name)
        return str(value) if value not in (None, "") else None


@dataclass(frozen=True, slots=True)
class BundleEntry:
    path: str  # relative POSIX path inside the bundle folder
    digest: str
    untar: bool = False  # a tar layer whose members are unpacked into the folder


@dataclass(frozen=True, slots=True)
class BundlePlan:
    format: Format
    entries: tuple[BundleEntry, ...]
    model: str  # the path ModelFiles.path points at ("." for a folder)
    chat_template: str | None = None
    mmproj: str | None = None


def _load_json(raw: bytes, what: str, where: str) -> dict[str, Any]:
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise StoreError(f"{where}: {what} is not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise StoreError(f"{where}: {what} is not a JSON object")
    return data


def _descriptor(data: object, where: str) -> Descriptor:
    if not isinstance(data, dict):
        raise StoreError(f"{where}: descriptor is not an object")
    media_type = data.get("mediaType")
    size = data.get("size")
    annotations = data.get("annotations") or {}
    if not isinstance(media_type, str) or not media_type:
        raise StoreError(f"{where}: descriptor without a mediaType")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise StoreError(f"{where}: descriptor with an invalid size {size!r}")
    if not isinstance(annotations, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in annotations.items()
    ):
        raise StoreError(f"{where}: descriptor annotations must map strings to strings")
    return Descriptor(media_type, check_digest(data.get("digest"), where), size, annotations)


def parse_manifest(raw: bytes, where: str) -> Manifest:
    """Validate an OCI image manifest holding a Docker model artifact."""
    data = _load_json(raw, "manifest", where)
    media_type = data.get("mediaType")
    if media_type in mt.INDEX_TYPES or "manifests" in data:
        raise StoreError(f"{where}: is an image index (a list of manifests), not a model artifact")
    if media_type is not None and media_type not in mt.MANIFEST_TYPES:
        raise StoreError(f"{where}: unsupported manifest media type {media_type!r}")
    if data.get("schemaVersion") != 2:
        raise StoreError(f"{where}: manifest schemaVersion must be 2")
    config = _descriptor(data.get("config"), f"{where} (config)")
    if config.media_type not in mt.CONFIG_TYPES:
        raise StoreError(
            f"{where}: unsupported config media type {config.media_type!r}; not a Docker "
            f"model artifact (expected {' or '.join(mt.CONFIG_TYPES)})"
        )
    layers = data.get("layers")
    if not isinstance(layers, list) or not layers:
        raise StoreError(f"{where}: manifest has no layers")
    parsed = tuple(_descriptor(layer, f"{where} (layer {i})") for i, layer in enumerate(layers))
    return Manifest(config, parsed)


def _infer_format(manifest: Manifest) -> Format | None:
    types = {layer.media_type for layer in manifest.layers}
    for name, media_type in (("gguf", mt.GGUF), ("safetensors", mt.SAFETENSORS), ("dduf", mt.DDUF)):
        if media_type in types:
            return name  # type: ignore[return-value]
    return None


def parse_config(raw: bytes, manifest: Manifest, where: str) -> ModelConfig:
    data = _load_json(raw, "model config", where)
    inner = data.get("config")
    if not isinstance(inner, dict):
        raise StoreError(f"{where}: model config has no 'config' object")
    declared = inner.get("format")
    # DMR wrote "diffusers" for DDUF artifacts before it settled on "dduf".
    name = {"diffusers": "dduf"}.get(declared, declared) if isinstance(declared, str) else None
    fmt: Format | None = name if name in mt.WEIGHTS else _infer_format(manifest)  # type: ignore[assignment]
    if fmt is None:
        raise StoreError(
            f"{where}: unknown model format {declared!r} and no GGUF, safetensors or DDUF layer"
        )
    if not any(layer.media_type == mt.WEIGHTS[fmt] for layer in manifest.layers):
        raise StoreError(f"{where}: format {fmt} but no {mt.WEIGHTS[fmt]} layer")
    context = inner.get("context_size")
    if context is not None and (not isinstance(context, int) or context <= 0):
        raise StoreError(f"{where}: context_size must be a positive integer, not {context!r}")
    return ModelConfig(fmt, context, data)


def safe_relpath(text: str, where: str) -> str:
    """A relative path from an annotation, refused when it could leave the bundle folder."""
    path = PurePosixPath(text)
    if (
        not text
        or "\\" in text
        or "\0" in text
        or path.is_absolute()
        or any(part in ("..", "") for part in text.split("/"))
    ):
        raise StoreError(f"{where}: unsafe file path {text!r} in a layer annotation")
    return str(path)


def _layer_name(layer: Descriptor, where: str) -> str | None:
    if layer.filepath:
        return safe_relpath(layer.filepath, where)
    title = layer.annotations.get(mt.ANNOTATION_TITLE)
    if title:
        return safe_relpath(PurePosixPath(title).name, where)
    return None


def _weight_names(layers: Sequence[Descriptor], fmt: Format, where: str) -> list[str]:
    names = [_layer_name(layer, where) for layer in layers]
    if all(names):
        return [n for n in names if n]
    suffix = {"gguf": ".gguf", "safetensors": ".safetensors", "dduf": ".dduf"}[fmt]
    if len(layers) == 1:
        return [f"model{suffix}"]
    # The shard naming llama.cpp expects; safetensors loaders read every file anyway.
    count = len(layers)
    return [f"model-{i:05d}-of-{count:05d}{suffix}" for i in range(1, count + 1)]


def plan_bundle(manifest: Manifest, config: ModelConfig, where: str) -> BundlePlan:
    """Name every layer's file in the bundle folder the engines load from."""
    fmt = config.format
    weights = [layer for layer in manifest.layers if layer.media_type == mt.WEIGHTS[fmt]]
    names = _weight_names(weights, fmt, where)
    entries = [BundleEntry(name, layer.digest) for name, layer in zip(names, weights, strict=True)]
    chat_template = mmproj = None
    licenses = 0
    for layer in manifest.layers:
        if layer.media_type == mt.WEIGHTS[fmt]:
            continue
        name = _layer_name(layer, where)
        if layer.media_type == mt.CHAT_TEMPLATE:
            name = name or "template.jinja"
            chat_template = chat_template or name
        elif layer.media_type == mt.MMPROJ:
            name = name or "model.mmproj"
            mmproj = mmproj or name
        elif layer.media_type == mt.LICENSE:
            name = name or ("LICENSE" if licenses == 0 else f"LICENSE.{licenses}")
            licenses += 1
        elif layer.media_type == mt.VLLM_CONFIG_TAR:
            entries.append(BundleEntry(".", layer.digest, untar=True))
            continue
        elif name is None:
            continue  # an unknown layer type without a path: nothing an engine reads
        entries.append(BundleEntry(name, layer.digest))
    seen: set[str] = set()
    for entry in entries:
        if not entry.untar and entry.path in seen:
            raise StoreError(f"{where}: two layers want the same file path {entry.path!r}")
        seen.add(entry.path)
    if fmt == "safetensors":
        model = "."
    else:
        model = names[0]
        if fmt == "gguf" and len(names) > 1:
            # llama.cpp is given the first shard and finds the others beside it.
            firsts = [
                n
                for n in names
                if (m := SHARD_NAME.match(PurePosixPath(n).name)) and m["index"] == "00001"
            ]
            model = firsts[0] if firsts else names[0]
    return BundlePlan(fmt, tuple(entries), model, chat_template, mmproj)


def dumps(data: Mapping[str, Any]) -> bytes:
    """The exact bytes stored and pushed (their sha256 is the blob's digest)."""
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode()


def build_config(
    fmt: Format,
    diff_ids: Sequence[str],
    created: datetime,
    fields: Mapping[str, Any] | None = None,
    context_size: int | None = None,
) -> bytes:
    inner: dict[str, Any] = {"format": fmt}
    inner.update({k: v for k, v in (fields or {}).items() if v not in (None, "", {})})
    if context_size is not None:
        inner["context_size"] = context_size
    return dumps(
        {
            "config": inner,
            "descriptor": {"created": created.isoformat().replace("+00:00", "Z")},
            "rootfs": {"type": "rootfs", "diff_ids": list(diff_ids)},
        }
    )


def build_manifest(config: Descriptor, layers: Sequence[Descriptor]) -> bytes:
    return dumps(
        {
            "schemaVersion": 2,
            "mediaType": mt.OCI_MANIFEST,
            "config": config.to_json(),
            "layers": [layer.to_json() for layer in layers],
        }
    )
