"""The engines a manifest may name, and which weight format picks which (pure, no imports).

They live in manifest/ so that validating a manifest never imports engines/: the engines
depend on the manifest, never the other way round.
"""

from __future__ import annotations

from typing import Final, Literal

EngineName = Literal["llama.cpp", "vllm", "diffusers"]
ENGINES: Final[tuple[EngineName, ...]] = ("llama.cpp", "vllm", "diffusers")

# Docker Model Runner's rule: the artifact's weight format picks the engine.
ENGINE_FOR_FORMAT: Final[dict[str, EngineName]] = {
    "gguf": "llama.cpp",
    "safetensors": "vllm",
    "dduf": "diffusers",
}
