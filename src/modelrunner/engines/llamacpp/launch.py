"""llama.cpp through llama-cpp-python: manifest -> launch of the project's own server.

llama-cpp-python's bundled server has no batching (and a new request cancels the running
one unless told otherwise); :mod:`.main` runs the project's own engine: one context with
``parallel`` slots and continuous batching.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Final

from modelrunner.engines.launch import Launch, Probe, checked_flags, engine_env, server_argv
from modelrunner.manifest.spec import ModelManifest
from modelrunner.model_files import ModelFiles
from modelrunner.settings import Settings

DEFAULT_CONTEXT: Final = 4096  # Docker Model Runner's default; the GGUF's own may be far larger
SERVER_MODULE: Final = "modelrunner.engines.llamacpp.main"


def build_launch(
    manifest: ModelManifest, files: ModelFiles, port: int, settings: Settings, python: str
) -> Launch:
    section = manifest.llama_cpp
    argv = [
        *server_argv(python, SERVER_MODULE, files, port),
        "--served-name",
        manifest.name,
        "--n_ctx",
        str(manifest.context_size or files.context_size or DEFAULT_CONTEXT),
    ]
    argv += ["--n_threads", str(threads_in_effect(manifest))]
    if section is not None and section.parallel is not None:
        argv += ["--parallel", str(section.parallel)]
    if section is not None and section.n_gpu_layers is not None:
        argv += ["--n_gpu_layers", str(section.n_gpu_layers)]
    if section is not None and section.embeddings:
        argv.append("--embedding")
    if files.chat_template is not None:
        argv += ["--chat-template-file", str(files.chat_template)]
    argv += checked_flags("llama.cpp", manifest)
    return Launch(
        argv=tuple(argv),
        env=engine_env(manifest),
        health_path="/health",
        probe=Probe(
            "POST",
            "/v1/chat/completions",
            {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 1},
        ),
        startup_timeout=120.0,
        handoff=True,
    )


def threads_in_effect(manifest: ModelManifest) -> int:
    """``llama.cpp.threads``, or else this host's physical cores (``mr plan`` and ``mr
    status`` show it)."""
    section = manifest.llama_cpp
    if section is not None and section.threads is not None:
        return section.threads
    return default_threads()


def default_threads() -> int:
    """The physical cores this process may run on, as llama-server picks its threads: one
    compute thread per core is the fastest setting measured (docs/design/engines.md);
    hyperthread siblings share a core's arithmetic units and only add contention."""
    siblings = []
    for cpu in sorted(os.sched_getaffinity(0)):
        topology = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology/thread_siblings_list")
        try:
            siblings.append(topology.read_text().strip())
        except OSError:  # no topology (a container may hide it): a CPU is a core
            siblings.append(str(cpu))
    return physical_cores(siblings)


def physical_cores(siblings: Iterable[str]) -> int:
    """How many cores the CPUs span, from each CPU's ``thread_siblings_list`` (the CPUs
    sharing its core, as ``0,4`` or ``0-1``): one core per distinct list."""
    return max(1, len(set(siblings)))
