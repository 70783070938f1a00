"""llama.cpp through llama-cpp-python: manifest -> launch of the project's own server.

llama-cpp-python's bundled server has no batching (and a new request cancels the running
one unless told otherwise); :mod:`.llamacpp_server` runs the project's own engine
(:mod:`.llamacpp_engine`): one context with ``parallel`` slots and continuous batching.
"""

from __future__ import annotations

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
    if section is not None and section.threads is not None:
        argv += ["--n_threads", str(section.threads)]
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
    )
