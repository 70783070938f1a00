"""Engines: one package per engine. Heavy engine packages are imported only inside
their own engine process, never here, so ``mr lint`` and the CLI start fast.

    catalog.py     the engines by name (formats, packages, launch builder)
    llamacpp/      launch.py: manifest -> launch (pure, light); main.py: the engine process
                   (``python -m modelrunner.engines.llamacpp.main``); build.py; structured/
    vllm/          launch.py: manifest -> launch of vLLM's own server
    diffusers/     launch.py, and main.py: the project's own image server
    process.py     EngineProcess: one owner per engine process (spawn, probe, watch)
    exits.py       how a process ended, in words, and what to do about repeated crashes
    serving.py     the HTTP plumbing the project's own engine servers share

Engine names (``EngineName``) live in :mod:`modelrunner.manifest.engines`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from modelrunner.manifest.engines import ENGINE_FOR_FORMAT, EngineName

if TYPE_CHECKING:
    from modelrunner.engines.launch import Launch
    from modelrunner.engines.process import EngineProcess, ExitCallback, Liveness
    from modelrunner.manifest.spec import ModelManifest
    from modelrunner.model_files import ModelFiles
    from modelrunner.settings import Settings


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
        from modelrunner.engines.vllm.launch import preflight

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
