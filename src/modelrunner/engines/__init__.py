"""Engines: one module per engine. Heavy engine packages are imported only inside
their own engine process, never here, so ``mr lint`` and the CLI start fast.

    catalog.py     the engines by name (formats, packages, launch builder)
    llamacpp.py    manifest -> launch (pure), likewise vllm.py, diffusers.py
    process.py     EngineProcess: one owner per engine process (spawn, probe, watch)
    exits.py       how a process ended, in words, and what to do about repeated crashes
    *_server.py    the project's own engine servers (run as ``python -m``)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final, Literal

if TYPE_CHECKING:
    from modelrunner.engines.launch import Launch
    from modelrunner.engines.process import EngineProcess, ExitCallback, Liveness
    from modelrunner.manifest.spec import ModelManifest
    from modelrunner.model_files import ModelFiles
    from modelrunner.settings import Settings

EngineName = Literal["llama.cpp", "vllm", "diffusers"]
ENGINES: Final[tuple[EngineName, ...]] = ("llama.cpp", "vllm", "diffusers")

# Docker Model Runner's rule: the artifact's weight format picks the engine.
ENGINE_FOR_FORMAT: Final[dict[str, EngineName]] = {
    "gguf": "llama.cpp",
    "safetensors": "vllm",
    "dduf": "diffusers",
}


def engine_for(manifest: ModelManifest, files: ModelFiles) -> EngineName:
    """The manifest's engine, or the one the weight format picks."""
    return manifest.declared_engine or ENGINE_FOR_FORMAT[files.format]


def create_instance(
    manifest: ModelManifest,
    files: ModelFiles,
    settings: Settings,
    *,
    instance_id: str | None = None,
    liveness: Liveness | None = None,
    on_exit: ExitCallback | None = None,
) -> EngineProcess:
    """A stopped engine instance for ``manifest`` (call ``await instance.start()``).

    Everything that can be checked without a process is checked here: the engine matches the
    weight format, the runtime_flags pass the allow-list, the engine's interpreter exists,
    and for vLLM's Ray backend, ray is installed there and the cluster's address answers.
    Raises :class:`~modelrunner.errors.EngineError` (or ``EngineNotInstalled``) otherwise.
    """
    import secrets

    from modelrunner.engines.catalog import CATALOG, interpreter
    from modelrunner.engines.launch import check_format
    from modelrunner.engines.process import EngineProcess

    spec = CATALOG[engine_for(manifest, files)]
    check_format(spec, manifest, files)
    python = interpreter(spec, settings)

    def build(port: int) -> Launch:
        return spec.build(manifest, files, port, settings, python)

    build(0)  # refuses bad runtime_flags now, not later in the supervisor
    if spec.name == "vllm":
        from modelrunner.engines.vllm import preflight

        preflight(manifest, python)  # the Ray backend: ray installed, its cluster reachable
    safe_name = "".join(c if c.isalnum() or c in "._-" else "_" for c in manifest.name)
    return EngineProcess(
        instance_id or f"{safe_name}-{secrets.token_hex(4)}",
        spec.name,
        build,
        log_dir=settings.log_dir,
        liveness=liveness,
        on_exit=on_exit,
    )


def installed(settings: Settings | None = None) -> dict[EngineName, str | None]:
    """Engine name -> installed version (None when missing), without importing engines.

    vLLM is asked through its own interpreter (``settings.vllm_python``; without settings,
    the ``MR_*`` environment decides).
    """
    from modelrunner.engines.versions import installed as versions
    from modelrunner.settings import from_env

    return versions(settings if settings is not None else from_env())
