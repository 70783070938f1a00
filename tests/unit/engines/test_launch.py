"""Engine launch descriptions: manifest + files -> argv/env/probe, pure, as tables."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import msgspec
import pytest

from modelrunner.engines.catalog import CATALOG
from modelrunner.engines.launch import check_format
from modelrunner.engines.llamacpp.launch import default_threads
from modelrunner.errors import EngineError
from modelrunner.manifest.engines import EngineName
from modelrunner.manifest.spec import ModelManifest
from modelrunner.model_files import ModelFiles
from modelrunner.settings import Settings

PY = "/venv/bin/python"
SETTINGS = Settings()


def manifest(**fields: Any) -> ModelManifest:
    doc = {"apiVersion": "modelrunner/v1", "name": "m", "model": "ai/m", **fields}
    return msgspec.convert(doc, ModelManifest)


def argv_of(engine: EngineName, m: ModelManifest, files: ModelFiles, port: int = 4000) -> list[str]:
    return list(CATALOG[engine].build(m, files, port, SETTINGS, PY).argv)


GGUF = ModelFiles("gguf", Path("/store/m.gguf"))
SAFETENSORS = ModelFiles("safetensors", Path("/store/m"))
DDUF = ModelFiles("dduf", Path("/store/m.dduf"))


def flag(argv: list[str], name: str) -> str | None:
    return argv[argv.index(name) + 1] if name in argv else None


@pytest.mark.parametrize(
    ("fields", "files", "expected"),
    [
        ({}, GGUF, {"--n_ctx": "4096", "--n_threads": str(default_threads()), "--parallel": None}),
        ({}, ModelFiles("gguf", Path("/m.gguf"), context_size=2048), {"--n_ctx": "2048"}),
        (
            {"context_size": 1024, "llama.cpp": {"threads": 3, "parallel": 2, "n_gpu_layers": -1}},
            GGUF,
            {"--n_ctx": "1024", "--n_threads": "3", "--parallel": "2", "--n_gpu_layers": "-1"},
        ),
        (
            {},
            ModelFiles("gguf", Path("/m.gguf"), chat_template=Path("/t.jinja")),
            {"--chat-template-file": "/t.jinja"},
        ),
    ],
)
def test_llamacpp_flags(
    fields: dict[str, Any], files: ModelFiles, expected: dict[str, Any]
) -> None:
    argv = argv_of("llama.cpp", manifest(**fields), files)
    assert argv[:3] == [PY, "-m", "modelrunner.engines.llamacpp.main"]
    assert flag(argv, "--model") == str(files.path)
    assert flag(argv, "--port") == "4000"
    assert flag(argv, "--host") == "127.0.0.1"
    for name, value in expected.items():
        assert flag(argv, name) == value, name


@pytest.mark.parametrize(("embeddings", "present"), [(None, False), (False, False), (True, True)])
def test_llamacpp_embeddings_only_when_asked(embeddings: bool | None, present: bool) -> None:
    section = {} if embeddings is None else {"embeddings": embeddings}
    argv = argv_of("llama.cpp", manifest(**{"llama.cpp": section}), GGUF)
    assert ("--embedding" in argv) is present


def test_llamacpp_runtime_flags_come_last_and_checked() -> None:
    m = manifest(runtime_flags=["--n_batch", "256", "--flash_attn=true"])
    assert argv_of("llama.cpp", m, GGUF)[-3:] == ["--n_batch", "256", "--flash_attn=true"]


@pytest.mark.parametrize(
    ("engine", "files", "flags", "message"),
    [
        ("llama.cpp", GGUF, ["--flash_attn", "../etc"], "path separator"),
        ("llama.cpp", GGUF, ["--n_batch", "--model"], "must be an integer"),
        ("llama.cpp", GGUF, ["--n_ctx", "9"], "context_size"),
        ("llama.cpp", GGUF, ["--lora_path", "x"], "not allowed"),
        ("vllm", SAFETENSORS, ["--dtype", "--trust-remote-code"], "looks like another flag"),
        ("vllm", SAFETENSORS, ["--enforce-eager=1"], "takes no value"),
        ("diffusers", DDUF, ["--seed", "1 --x"], "white space"),
        ("llama.cpp", GGUF, ["--type_k", "9999"], "must be one of f32"),  # SIGABRT otherwise
        ("vllm", SAFETENSORS, ["--quantization", "awqq"], "must be one of"),
    ],
)
def test_bad_runtime_flags_are_refused(
    engine: EngineName, files: ModelFiles, flags: list[str], message: str
) -> None:
    with pytest.raises(EngineError, match=message) as info:
        argv_of(engine, manifest(runtime_flags=flags), files)
    assert "'m'" in str(info.value)  # names the model


def test_vllm_argv() -> None:
    m = manifest(
        aliases=["alias-a"],
        context_size=256,
        vllm={
            "gpu_memory_utilization": 0.5,
            "hf_overrides": {"rope_scaling": {"factor": 2}},
            "tensor_parallel_size": 2,
            "max_num_seqs": 8,
        },
        runtime_flags=["--enforce-eager", "--dtype", "float32"],
        env={"VLLM_CPU_KVCACHE_SPACE": "1"},
    )
    launch = CATALOG["vllm"].build(m, SAFETENSORS, 4100, SETTINGS, PY)
    argv = list(launch.argv)
    assert argv[:3] == [PY, "-m", "vllm.entrypoints.openai.api_server"]
    i = argv.index("--served-model-name")
    assert argv[i + 1 : i + 3] == ["m", "alias-a"]
    assert flag(argv, "--max-model-len") == "256"
    assert flag(argv, "--gpu-memory-utilization") == "0.5"
    assert json.loads(flag(argv, "--hf-overrides") or "") == {"rope_scaling": {"factor": 2}}
    assert flag(argv, "--tensor-parallel-size") == "2"
    assert flag(argv, "--max-num-seqs") == "8"
    assert argv[-3:] == ["--enforce-eager", "--dtype", "float32"]
    assert launch.env["VLLM_CPU_KVCACHE_SPACE"] == "1"
    assert launch.env["HF_HUB_OFFLINE"] == "1"
    assert launch.probe.body["model"] == "m"


def test_vllm_without_context_size_lets_the_model_decide() -> None:
    assert "--max-model-len" not in argv_of("vllm", manifest(), SAFETENSORS)


def test_diffusers_argv() -> None:
    m = manifest(
        diffusers={"dtype": "float32", "size": "64x64", "steps": 2}, runtime_flags=["--seed=3"]
    )
    launch = CATALOG["diffusers"].build(m, DDUF, 4200, SETTINGS, PY)
    argv = list(launch.argv)
    assert argv[:3] == [PY, "-m", "modelrunner.engines.diffusers.main"]
    assert (flag(argv, "--dtype"), flag(argv, "--size"), flag(argv, "--steps")) == (
        "float32",
        "64x64",
        "2",
    )
    assert argv[-1] == "--seed=3"
    assert launch.probe.path == "/v1/images/generations"


def test_manifest_env_overrides_defaults() -> None:
    launch = CATALOG["llama.cpp"].build(
        manifest(env={"HF_HUB_OFFLINE": "0", "X": "y"}), GGUF, 1, SETTINGS, PY
    )
    assert launch.env["HF_HUB_OFFLINE"] == "0"
    assert launch.env["X"] == "y"


@pytest.mark.parametrize(
    ("engine", "files", "ok"),
    [
        ("llama.cpp", GGUF, True),
        ("llama.cpp", SAFETENSORS, False),
        ("vllm", SAFETENSORS, True),
        ("vllm", DDUF, False),
        ("diffusers", DDUF, True),
        ("diffusers", GGUF, False),
    ],
)
def test_format_must_match_engine(engine: EngineName, files: ModelFiles, ok: bool) -> None:
    spec = CATALOG[engine]
    if ok:
        check_format(spec, manifest(), files)
    else:
        with pytest.raises(EngineError, match=f"engine {engine} loads"):
            check_format(spec, manifest(), files)
