"""The model config fields Docker Model Runner derives from a GGUF file, read with ``gguf``.

Same shape as DMR: every header key as a string (arrays longer than 50 items, such as the
tokenizer vocabulary, are left out), parameters and size as short unit strings.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from modelrunner.errors import StoreError

_MAX_ARRAY = 50


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:f}"
    if isinstance(value, list | tuple):
        return ", ".join(_text(v) for v in value)
    return str(value)


def human(value: float, units: Sequence[str], step: float) -> str:
    """134515008 -> '134.52M' (DMR's format: two decimals, no space)."""
    unit = units[0]
    for unit in units:
        if abs(value) < step or unit == units[-1]:
            break
        value /= step
    return f"{value:.2f}{unit}"


def read_fields(shards: Sequence[Path]) -> tuple[dict[str, Any], int | None]:
    """Config fields and the trained context length of a GGUF model (all its shards)."""
    import gguf

    metadata: dict[str, str] = {}
    parameters = 0
    try:
        for index, shard in enumerate(shards):
            reader = gguf.GGUFReader(shard)
            parameters += sum(int(t.n_elements) for t in reader.tensors)
            if index:
                continue
            for key, field in reader.fields.items():
                if key.startswith("GGUF."):
                    continue  # header counters, not metadata
                is_array = field.types and field.types[0] == gguf.GGUFValueType.ARRAY
                if is_array and len(field.data) > _MAX_ARRAY:
                    continue  # tokenizer vocabularies and merges: too big for a config
                metadata[key] = _text(field.contents())
    except (OSError, ValueError, KeyError, IndexError) as exc:
        raise StoreError(f"{shards[0]}: not a readable GGUF file ({exc})") from None

    architecture = metadata.get("general.architecture", "")
    file_type = metadata.get("general.file_type")
    quantization = None
    if file_type is not None and file_type.isdigit():
        try:
            quantization = gguf.LlamaFileType(int(file_type)).name.removeprefix("MOSTLY_")
        except ValueError:
            quantization = None
    size = sum(s.stat().st_size for s in shards)
    context = metadata.get(f"{architecture}.context_length")
    fields = {
        "quantization": quantization,
        "parameters": human(parameters, ("", "K", "M", "B", "T"), 1000) if parameters else None,
        "architecture": architecture or None,
        "size": human(size, ("B", "KiB", "MiB", "GiB", "TiB"), 1024),
        "gguf": metadata,
    }
    return fields, int(context) if context and context.isdigit() else None


def discover_shards(path: Path) -> list[Path]:
    """The shards of a split GGUF (``name-00001-of-00003.gguf``), or just the file."""
    from modelrunner.store.artifact import SHARD_NAME

    match = SHARD_NAME.match(path.name)
    if not match:
        return [path]
    count = int(match["count"])
    shards = [
        path.with_name(f"{match['prefix']}-{i:05d}-of-{count:05d}.gguf")
        for i in range(1, count + 1)
    ]
    missing = [s.name for s in shards if not s.is_file()]
    if missing:
        raise StoreError(f"{path}: sharded GGUF is missing {', '.join(missing)}")
    return shards
