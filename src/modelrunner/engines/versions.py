"""Which engines are installed, and their versions, without importing any of them.

llama.cpp and Diffusers run under this interpreter, so package metadata answers. vLLM runs
under its own interpreter (``settings.vllm_python``), which is asked in a short subprocess.
"""

from __future__ import annotations

import importlib.metadata
import subprocess
from dataclasses import dataclass
from typing import Final

from modelrunner.engines.catalog import CATALOG, interpreter
from modelrunner.engines.distributions import distribution_version
from modelrunner.engines.launch import EngineSpec
from modelrunner.errors import EngineNotInstalled
from modelrunner.manifest.engines import ENGINES, EngineName
from modelrunner.settings import Settings

# Packages some settings of an engine need in its interpreter, and which setting.
OPTIONAL: Final[dict[EngineName, tuple[tuple[str, str], ...]]] = {
    "vllm": (("ray", "vllm.distributed_executor_backend: ray"),),
}


@dataclass(frozen=True, slots=True)
class EngineInstall:
    name: EngineName
    version: str | None  # None when not installed
    python: str | None  # the interpreter it runs under
    problem: str | None = None  # why it is not usable, when it is not
    # (package, version or None) of the engine's OPTIONAL packages
    optional: tuple[tuple[str, str | None], ...] = ()


def _local_version(names: tuple[str, ...]) -> str | None:
    for name in names:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def _probe(spec: EngineSpec, settings: Settings) -> EngineInstall:
    try:
        python = interpreter(spec, settings)
    except EngineNotInstalled as exc:
        return EngineInstall(spec.name, None, None, str(exc))
    if not spec.own_interpreter:
        version = _local_version(spec.distributions)
        if version is None:
            return EngineInstall(spec.name, None, python, f"{spec.distributions[0]} not installed")
        missing = [name for name in spec.requires if _local_version((name,)) is None]
        if missing:
            return EngineInstall(spec.name, None, python, f"missing {', '.join(missing)}")
        return EngineInstall(spec.name, version, python)
    try:
        version = distribution_version(python, spec.distributions)
        optional = tuple(
            (name, distribution_version(python, (name,))) for name, _ in OPTIONAL.get(spec.name, ())
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return EngineInstall(spec.name, None, python, f"cannot run {python}: {exc}")
    if version is None:
        problem = f"{' or '.join(spec.distributions)} not installed for {python}"
        return EngineInstall(spec.name, None, python, problem, optional)
    return EngineInstall(spec.name, version, python, optional=optional)


def engine_installs(settings: Settings) -> list[EngineInstall]:
    return [_probe(CATALOG[name], settings) for name in ENGINES]


def installed(settings: Settings) -> dict[EngineName, str | None]:
    """Engine name -> installed version, or None."""
    return {item.name: item.version for item in engine_installs(settings)}
