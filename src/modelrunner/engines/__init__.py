"""Engines: one module per engine. Heavy engine packages are imported only inside
their own module, never here, so ``mr lint`` and the CLI start fast."""

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
