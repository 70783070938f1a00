"""Diffusers: manifest -> launch of the project's own image server (:mod:`.diffusers_server`)."""

from __future__ import annotations

from typing import Final

from modelrunner.engines.launch import Launch, Probe, checked_flags, engine_env, server_argv
from modelrunner.manifest.spec import ModelManifest
from modelrunner.model_files import ModelFiles
from modelrunner.settings import Settings

SERVER_MODULE: Final = "modelrunner.engines.diffusers.main"


def build_launch(
    manifest: ModelManifest, files: ModelFiles, port: int, settings: Settings, python: str
) -> Launch:
    section = manifest.diffusers
    argv = [
        *server_argv(python, SERVER_MODULE, files, port),
        "--served-name",
        manifest.name,
    ]
    if section is not None:
        if section.dtype is not None:
            argv += ["--dtype", section.dtype]
        if section.size is not None:
            argv += ["--size", section.size]
        if section.steps is not None:
            argv += ["--steps", str(section.steps)]
    argv += checked_flags("diffusers", manifest)
    return Launch(
        argv=tuple(argv),
        env=engine_env(manifest),
        health_path="/health",
        # The smallest image the VAE can make, in one step: proves the whole pipeline runs.
        probe=Probe(
            "POST",
            "/v1/images/generations",
            {"prompt": "a", "size": "64x64", "n": 1, "steps": 1, "response_format": "b64_json"},
        ),
        startup_timeout=300.0,
    )
