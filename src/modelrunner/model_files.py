"""The files an engine loads: what the store hands over for a model, or a local path.

gguf         path is the .gguf file (the first shard when sharded; the others beside it)
safetensors  path is the folder (config.json, tokenizer files, *.safetensors)
dduf         path is the .dduf file
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from modelrunner.errors import ModelNotFound

Format = Literal["gguf", "safetensors", "dduf"]


@dataclass(frozen=True, slots=True)
class ModelFiles:
    format: Format
    path: Path
    digest: str | None = None  # the OCI manifest digest, when the files come from the store
    context_size: int | None = None  # the artifact's own default, if its config names one
    chat_template: Path | None = None
    mmproj: Path | None = None


def from_local_path(path: Path) -> ModelFiles:
    """Recognise a local model file or folder by what it holds."""
    if path.is_file():
        suffix = path.suffix.lower()
        if suffix == ".gguf":
            return ModelFiles("gguf", path)
        if suffix == ".dduf":
            return ModelFiles("dduf", path)
        raise ModelNotFound(f"{path}: not a model file (expected .gguf or .dduf)")
    if path.is_dir():
        if any(path.glob("*.safetensors")):
            return ModelFiles("safetensors", path)
        ggufs = sorted(path.glob("*.gguf"))
        if ggufs:
            return ModelFiles("gguf", ggufs[0])
        ddufs = sorted(path.glob("*.dduf"))
        if ddufs:
            return ModelFiles("dduf", ddufs[0])
        raise ModelNotFound(f"{path}: folder holds no .safetensors, .gguf or .dduf file")
    raise ModelNotFound(f"{path}: no such file or folder")
