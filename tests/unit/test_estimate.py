"""estimate.py: memory need per model and the host's budget, one table row per rule."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from modelrunner.estimate import (
    LLAMA_CONTEXT_COMPUTE,
    PROCESS_OVERHEAD,
    Budget,
    Estimate,
    HostMemory,
    KvShape,
    ModelFacts,
    admission,
    budget,
    estimate,
    fit,
    format_bytes,
    kv_shape,
    parse_meminfo,
    parse_nvidia_smi,
    parse_size,
)
from modelrunner.manifest.spec import ModelManifest

GiB, MiB = 1024**3, 1024**2
LLAMA = PROCESS_OVERHEAD["llama.cpp"]

# SmolLM2-135M's header fields, as store/gguf_meta.py reads them.
SMOLLM2_META = {
    "general.architecture": "llama",
    "llama.block_count": "30",
    "llama.embedding_length": "576",
    "llama.attention.head_count": "9",
    "llama.attention.head_count_kv": "3",
}
SMOLLM2 = KvShape(layers=30, heads=9, kv_heads=(3,), embedding=576)
# 2 (K, V) x 30 layers x 3 KV heads x 64 per head x 2 bytes
SMOLLM2_PER_TOKEN = 2 * 30 * 3 * 64 * 2


def spec(**fields: Any) -> ModelManifest:
    doc = {"apiVersion": "modelrunner/v1", "name": "m", "model": "ai/m", **fields}
    return msgspec.convert(doc, ModelManifest)


@pytest.mark.parametrize(
    ("metadata", "expected"),
    [
        (SMOLLM2_META, SMOLLM2),
        ({**SMOLLM2_META, "llama.attention.head_count_kv": "9"}, KvShape(30, 9, (9,), 576)),
        # no KV head count: multi-head attention, as many KV heads as heads
        (
            {k: v for k, v in SMOLLM2_META.items() if "kv" not in k},
            KvShape(30, 9, (9,), 576),
        ),
        # explicit key/value lengths (head size not embedding / heads)
        (
            {
                **SMOLLM2_META,
                "llama.attention.key_length": "128",
                "llama.attention.value_length": "96",
            },
            KvShape(30, 9, (3,), 576, 128, 96),
        ),
        # per-layer KV heads, as an array field reads
        (
            {**SMOLLM2_META, "llama.block_count": "3", "llama.attention.head_count_kv": "1, 0, 2"},
            KvShape(3, 9, (1, 0, 2), 576),
        ),
        ({**SMOLLM2_META, "general.architecture": "qwen2"}, None),  # counts under another arch
        ({k: v for k, v in SMOLLM2_META.items() if "block" not in k}, None),
        ({**SMOLLM2_META, "llama.attention.head_count": "0"}, None),
        ({**SMOLLM2_META, "llama.embedding_length": "lots"}, None),
    ],
)
def test_kv_shape_from_gguf_fields(metadata: dict[str, str], expected: KvShape | None) -> None:
    assert kv_shape(metadata) == expected


@pytest.mark.parametrize(
    ("shape", "per_token"),
    [
        (SMOLLM2, SMOLLM2_PER_TOKEN),
        (KvShape(30, 9, (3,), 576, 128, 96), 30 * 3 * (128 + 96) * 2),
        (KvShape(3, 9, (1, 0, 2), 576), (1 + 0 + 2) * 128 * 2),
    ],
)
def test_kv_bytes_per_token(shape: KvShape, per_token: int) -> None:
    assert shape.bytes_per_token() == per_token


GGUF = ModelFacts("gguf", 98 * MiB, SMOLLM2)
W, C = 98 * MiB, LLAMA_CONTEXT_COMPUTE


@pytest.mark.parametrize(
    ("fields", "facts", "gpus", "need", "device"),
    [
        # default context 4096, one slot
        ({}, GGUF, (), W + SMOLLM2_PER_TOKEN * 4096 + C + LLAMA, "ram"),
        # the weights once, a KV cache of context_size per slot, one context's compute
        (
            {"context_size": 2048, "llama.cpp": {"parallel": 4}},
            GGUF,
            (),
            W + 4 * SMOLLM2_PER_TOKEN * 2048 + C + LLAMA,
            "ram",
        ),
        # the artifact's own context size when the manifest names none
        (
            {},
            ModelFacts("gguf", 98 * MiB, SMOLLM2, context_size=1024),
            (),
            W + SMOLLM2_PER_TOKEN * 1024 + C + LLAMA,
            "ram",
        ),
        # GGUF without attention counts: weights and process only
        ({}, ModelFacts("gguf", 98 * MiB), (), W + C + LLAMA, "ram"),
        # embeddings: one more context (its KV cache and compute), the weights still once
        (
            {"context_size": 1024, "llama.cpp": {"embeddings": True}},
            GGUF,
            (),
            W + 2 * (SMOLLM2_PER_TOKEN * 1024 + C) + LLAMA,
            "ram",
        ),
        # offloaded layers on a GPU host count against the GPU
        (
            {"context_size": 1024, "llama.cpp": {"n_gpu_layers": -1}},
            GGUF,
            (8 * GiB,),
            W + SMOLLM2_PER_TOKEN * 1024 + C + LLAMA,
            "gpu",
        ),
        # ... but on a host without a GPU they stay in RAM
        (
            {"context_size": 1024, "llama.cpp": {"n_gpu_layers": -1}},
            GGUF,
            (),
            W + SMOLLM2_PER_TOKEN * 1024 + C + LLAMA,
            "ram",
        ),
        # vLLM on GPUs: utilisation of the GPUs it takes
        ({"vllm": {"gpu_memory_utilization": 0.5}}, None, (16 * GiB,), 8 * GiB, "gpu"),
        (
            {"vllm": {"tensor_parallel_size": 2}},
            None,
            (10 * GiB, 10 * GiB, 10 * GiB),
            int(20 * GiB * 0.9),
            "gpu",
        ),
        # vLLM on CPU: weights + KV space (env) + process
        (
            {"engine": "vllm", "env": {"VLLM_CPU_KVCACHE_SPACE": "1"}},
            ModelFacts("safetensors", 10 * MiB),
            (),
            10 * MiB + GiB + PROCESS_OVERHEAD["vllm"],
            "ram",
        ),
        # engine from the format when the manifest names none
        (
            {},
            ModelFacts("dduf", 9 * MiB),
            (),
            9 * MiB + PROCESS_OVERHEAD["diffusers"],
            "ram",
        ),
        ({}, None, (), None, "ram"),  # files not here: unknown
        ({"engine": "vllm"}, None, (), None, "ram"),
    ],
)
def test_estimate(
    fields: dict[str, Any],
    facts: ModelFacts | None,
    gpus: tuple[int, ...],
    need: int | None,
    device: str,
) -> None:
    got = estimate(spec(**fields), facts, gpus)
    assert (got.need, got.device) == (need, device)
    assert got.detail


def test_estimate_detail_names_the_parts() -> None:
    got = estimate(spec(context_size=2048, **{"llama.cpp": {"parallel": 2}}), GGUF)
    assert got.detail == (
        "weights 98 MiB + 2 slots x KV cache 45 MiB for 2048 tokens + compute 17 MiB "
        "+ process 54 MiB"
    )


@pytest.mark.parametrize(
    ("text", "ram", "expected"),
    [
        ("16GiB", None, 16 * GiB),
        ("16G", None, 16 * GiB),
        ("16 gb", None, 16 * GiB),
        ("512M", None, 512 * MiB),
        ("1.5GiB", None, int(1.5 * GiB)),
        ("1024", None, 1024),
        ("2T", None, 2 * 1024 * GiB),
        ("50%", 8 * GiB, 4 * GiB),
        ("100%", 8 * GiB, 8 * GiB),
    ],
)
def test_parse_size(text: str, ram: int | None, expected: int) -> None:
    assert parse_size(text, ram) == expected


@pytest.mark.parametrize(
    ("text", "ram", "message"),
    [
        ("lots", None, "not a size"),
        ("16 PiB", None, "not a size"),
        ("0", None, "more than 0"),
        ("-1G", None, "not a size"),
        ("50%", None, "needs the host's RAM"),
        ("150%", GiB, "at most 100"),
        ("x%", GiB, "not a percentage"),
    ],
)
def test_parse_size_refuses(text: str, ram: int | None, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_size(text, ram)


@pytest.mark.parametrize(
    ("host", "setting", "expected"),
    [
        (HostMemory(10 * GiB), None, Budget(9 * GiB, None, "90% of RAM")),
        (HostMemory(10 * GiB), "4G", Budget(4 * GiB, None, "MR_MEMORY_BUDGET=4G")),
        (HostMemory(10 * GiB), "50%", Budget(5 * GiB, None, "MR_MEMORY_BUDGET=50%")),
        (
            HostMemory(10 * GiB, (8 * GiB, 8 * GiB)),
            None,
            Budget(9 * GiB, 16 * GiB, "90% of RAM"),
        ),
    ],
)
def test_budget(host: HostMemory, setting: str | None, expected: Budget) -> None:
    assert budget(host, setting) == expected


def test_parse_meminfo_and_nvidia_smi() -> None:
    meminfo = "MemTotal:       24567892 kB\nMemFree:  1 kB\n"
    assert parse_meminfo(meminfo) == 24567892 * 1024
    with pytest.raises(ValueError, match="MemTotal"):
        parse_meminfo("MemFree: 1 kB\n")
    assert parse_nvidia_smi("81559\n81559\n") == (81559 * MiB, 81559 * MiB)
    assert parse_nvidia_smi("") == ()


def test_fit_per_device() -> None:
    estimates = {
        "a": Estimate(3 * GiB, "ram", ""),
        "b": Estimate(2 * GiB, "ram", ""),
        "c": Estimate(None, "ram", "unknown"),
        "g": Estimate(10 * GiB, "gpu", ""),
    }
    ram, gpu = fit(estimates, Budget(4 * GiB, 16 * GiB, "test"))
    assert (ram.device, ram.need, ram.budget, ram.unknown, ram.fits) == (
        "ram",
        5 * GiB,
        4 * GiB,
        ("c",),
        False,
    )
    assert (gpu.device, gpu.need, gpu.fits) == ("gpu", 10 * GiB, True)
    # no GPU model: only the RAM row; a GPU model on a host without GPUs does not fit
    assert [f.device for f in fit({"a": estimates["a"]}, Budget(GiB, None, "t"))] == ["ram"]
    (_, no_gpu) = fit({"g": estimates["g"]}, Budget(GiB, None, "t"))
    assert not no_gpu.fits


@pytest.mark.parametrize(
    ("need", "in_use", "reason"),
    [
        (Estimate(2 * GiB, "ram", ""), 1 * GiB, None),
        (Estimate(4 * GiB, "ram", ""), 0, None),  # exactly the budget fits
        (
            Estimate(int(5.1 * GiB), "ram", ""),
            int(0.8 * GiB),
            "needs 5.1 GiB, 3.2 GiB free of a 4.0 GiB budget",
        ),
        (Estimate(GiB, "ram", ""), 5 * GiB, "needs 1.0 GiB, 0 MiB free of a 4.0 GiB budget"),
        (Estimate(None, "ram", ""), 5 * GiB, None),
        (Estimate(GiB, "gpu", ""), 0, "needs 1.0 GiB, 0 MiB free of a 0 MiB GPU budget"),
    ],
)
def test_admission(need: Estimate, in_use: int, reason: str | None) -> None:
    assert admission(need, in_use, Budget(4 * GiB, None, "t")) == reason


@pytest.mark.parametrize(
    ("value", "text"), [(5476083302, "5.1 GiB"), (98 * MiB, "98 MiB"), (GiB, "1.0 GiB")]
)
def test_format_bytes(value: int, text: str) -> None:
    assert format_bytes(value) == text


def test_model_facts_of_the_real_smollm2(smollm2_gguf: Any) -> None:
    from modelrunner.estimate import model_facts
    from modelrunner.model_files import from_local_path

    facts = model_facts(from_local_path(smollm2_gguf))
    assert facts == ModelFacts("gguf", smollm2_gguf.stat().st_size, SMOLLM2)


def test_the_fast_header_reader_agrees_with_gguf(smollm2_gguf: Any) -> None:
    from modelrunner.store.gguf_header import read_header
    from modelrunner.store.gguf_meta import read_fields

    fields, _ = read_fields([smollm2_gguf])
    header = read_header(smollm2_gguf)
    # the same values, except string arrays, which the fast reader skips
    assert {k: v for k, v in fields["gguf"].items() if k in header} == header
    assert set(fields["gguf"]) - set(header) == {"general.languages"}


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"GGML" + bytes(20), "not a GGUF file"),
        (b"GGUF" + (3).to_bytes(4, "little") + bytes(4), "cut short"),
        (b"GGUF" + (1).to_bytes(4, "little") + bytes(16), "version 1"),
    ],
)
def test_the_fast_header_reader_refuses(tmp_path: Any, data: bytes, message: str) -> None:
    from modelrunner.errors import StoreError
    from modelrunner.store.gguf_header import read_header

    path = tmp_path / "m.gguf"
    path.write_bytes(data)
    with pytest.raises(StoreError, match=message):
        read_header(path)
