"""What it takes to run one engine instance: the launch description an engine builds.

Engines turn ``(manifest, files, port, settings, python)`` into a :class:`Launch` with a
pure function (no processes, no files read), so every engine's command line is tested
with plain tables; :mod:`modelrunner.engines.process` is the one place that acts on it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Final

from modelrunner.engines.ports import LOOPBACK
from modelrunner.manifest.engines import EngineName
from modelrunner.manifest.spec import ModelManifest
from modelrunner.model_files import Format, ModelFiles
from modelrunner.settings import Settings

# Nothing is ever downloaded by an engine: models come from the store or a local path.
OFFLINE_ENV: Final[Mapping[str, str]] = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "DO_NOT_TRACK": "1",
    "PYTHONUNBUFFERED": "1",
}


@dataclass(frozen=True, slots=True)
class Probe:
    """One real, tiny request that must succeed before an instance is called ready."""

    method: str
    path: str
    body: Mapping[str, object]


@dataclass(frozen=True, slots=True)
class Launch:
    argv: tuple[str, ...]
    env: Mapping[str, str]  # added to the server's own environment
    health_path: str
    probe: Probe
    startup_timeout: float  # seconds from spawn to a successful probe
    # The server takes ``--handoff PATH``: mr may hand it a stream's client socket there
    # (engines/handoff.py).
    handoff: bool = False


LaunchBuilder = Callable[[ModelManifest, ModelFiles, int, Settings, str], Launch]


@dataclass(frozen=True, slots=True)
class EngineSpec:
    """An engine as the rest of the program sees it (one entry of the catalog)."""

    name: EngineName
    formats: tuple[Format, ...]  # the weight formats it loads
    distributions: tuple[str, ...]  # package names that provide it, first match wins
    requires: tuple[str, ...]  # other distributions it cannot run without
    own_interpreter: bool  # runs under settings.vllm_python rather than this interpreter
    build: LaunchBuilder = field(repr=False)


def server_argv(python: str, module: str, files: ModelFiles, port: int) -> list[str]:
    """The start every engine server shares: its module, the weights, a loopback port."""
    return [python, "-m", module, "--model", str(files.path),
            "--host", LOOPBACK, "--port", str(port)]  # fmt: skip


def engine_env(manifest: ModelManifest, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """Offline defaults, then the engine's own variables, then the manifest's ``env``."""
    return {**OFFLINE_ENV, **(extra or {}), **manifest.env}


def checked_flags(engine: EngineName, manifest: ModelManifest) -> tuple[str, ...]:
    """The manifest's ``runtime_flags``, only once every one passed the engine's allow-list."""
    from modelrunner.errors import EngineError
    from modelrunner.manifest.runtime_flags import check_runtime_flags, engine_flags

    problems = check_runtime_flags(engine, manifest.runtime_flags)
    if problems:
        details = "; ".join(f"runtime_flags[{i}]: {message}" for i, message in problems)
        raise EngineError(f"model {manifest.name!r}: refusing its runtime_flags: {details}")
    return engine_flags(engine, manifest.runtime_flags)


def check_format(engine: EngineSpec, manifest: ModelManifest, files: ModelFiles) -> None:
    from modelrunner.errors import EngineError

    if files.format not in engine.formats:
        wanted = " or ".join(engine.formats)
        raise EngineError(
            f"model {manifest.name!r}: engine {engine.name} loads {wanted} weights, "
            f"but {files.path} is {files.format}"
        )
