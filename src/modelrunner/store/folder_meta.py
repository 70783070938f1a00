"""Config fields for a safetensors folder and the classification of its files.

Parameters are counted from each ``.safetensors`` header (8-byte length, then JSON with
every tensor's shape) so no weights are read; the architecture comes from config.json.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from modelrunner.errors import StoreError
from modelrunner.store import mediatypes as mt
from modelrunner.store.gguf_meta import human

_LICENSE_WORDS = ("license", "licence", "copying", "notice")


def classify(name: str) -> str:
    """The layer media type for a file of a model folder (DMR's rules)."""
    lower = name.lower()
    if lower.endswith(".gguf"):
        return mt.GGUF
    if lower.endswith(".safetensors"):
        return mt.SAFETENSORS
    if lower.endswith(".dduf"):
        return mt.DDUF
    if lower.endswith(".jinja") or "chat_template" in lower:
        return mt.CHAT_TEMPLATE
    if any(word in lower for word in _LICENSE_WORDS):
        return mt.LICENSE
    return mt.MODEL_FILE


def list_folder(folder: Path) -> list[tuple[str, Path]]:
    """(relative path, file) for every non-hidden file, sorted, symlinks to files followed."""
    if not folder.is_dir():
        raise StoreError(f"{folder}: not a folder")
    found: list[tuple[str, Path]] = []
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder)
        if any(part.startswith(".") for part in rel.parts) or not path.is_file():
            continue
        found.append((rel.as_posix(), path))
    return found


def _parameters(path: Path) -> int:
    try:
        with path.open("rb") as f:
            (length,) = struct.unpack("<Q", f.read(8))
            if length > 100 << 20:
                raise ValueError("header too large")
            header = json.loads(f.read(length))
    except (OSError, ValueError, struct.error) as exc:
        raise StoreError(f"{path}: not a readable safetensors file ({exc})") from None
    return sum(
        math.prod(info.get("shape", []))
        for name, info in header.items()
        if name != "__metadata__" and isinstance(info, dict)
    )


def read_fields(folder: Path, weights: Sequence[Path]) -> dict[str, Any]:
    parameters = sum(_parameters(w) for w in weights)
    architecture = None
    config = folder / "config.json"
    if config.is_file():
        try:
            names = json.loads(config.read_text()).get("architectures") or []
            architecture = str(names[0]) if names else None
        except (OSError, ValueError, AttributeError):
            architecture = None
    size = sum(w.stat().st_size for w in weights)
    return {
        "parameters": human(parameters, ("", "K", "M", "B", "T"), 1000) if parameters else None,
        "architecture": architecture,
        "size": human(size, ("B", "KiB", "MiB", "GiB", "TiB"), 1024),
    }
