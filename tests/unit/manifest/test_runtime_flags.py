"""Values of the allow-listed runtime flags: each flag's type and range (pure)."""

from __future__ import annotations

import pytest

from modelrunner.manifest.runtime_flags import ALLOWED_FLAGS, check_runtime_flags, engine_flags


@pytest.mark.parametrize(
    ("engine", "flags", "message"),
    [("llama.cpp", ["--type_k", "9999"], "must be one of f32, f16"),
     ("llama.cpp", ["--type_v=4"], "must be one of"),  # a removed ggml type
     ("llama.cpp", ["--type_k", "q4_K"], "must be one of"),  # not a KV cache type
     ("llama.cpp", ["--n_batch", "0"], "at least 1"),
     ("llama.cpp", ["--n_ubatch", "-5"], "at least 1"),
     ("llama.cpp", ["--max_queue", "-1"], "at least 0"),
     ("llama.cpp", ["--flash_attn", "maybe"], "true or false"),
     ("llama.cpp", ["--use_mmap=2"], "true or false"),
     ("llama.cpp", ["--seed", "4294967296"], "at most 4294967295"),
     ("llama.cpp", ["--rope_freq_base", "-1"], "at least 0"),
     ("vllm", ["--dtype", "float8"], "must be one of auto, half"),
     ("vllm", ["--quantization", "awqq"], "must be one of awq"),
     ("vllm", ["--kv-cache-dtype", "int3"], "must be one of auto"),
     ("vllm", ["--max-num-batched-tokens", "0"], "at least 1"),
     ("vllm", ["--block-size", "1.5"], "must be an integer"),
     ("diffusers", ["--guidance-scale", "-2"], "at least 0"),
     ("diffusers", ["--seed", "-1"], "at least 0")],
)  # fmt: skip
def test_bad_values_are_refused(engine: str, flags: list[str], message: str) -> None:
    problems = check_runtime_flags(engine, flags)
    assert len(problems) == 1
    index, text = problems[0]
    assert index == len(flags) - 1  # located at the value
    assert message in text and flags[0].split("=")[0] in text


@pytest.mark.parametrize(
    ("engine", "flags"),
    [("llama.cpp", ["--type_k", "q8_0", "--type_v=8", "--n_batch", "1", "--flash_attn", "ON",
                    "--seed", "-1", "--rope_freq_scale", "0.5", "--use_mmap=false"]),
     ("vllm", ["--dtype", "bfloat16", "--quantization", "awq", "--kv-cache-dtype", "fp8",
               "--max-logprobs", "-1", "--swap-space", "0", "--enforce-eager"]),
     ("diffusers", ["--seed", "7", "--guidance-scale", "7.5"])],
)  # fmt: skip
def test_good_values_pass(engine: str, flags: list[str]) -> None:
    assert check_runtime_flags(engine, flags) == []


def test_every_allowed_flag_has_a_valid_example() -> None:
    for engine, allowed in ALLOWED_FLAGS.items():
        for name, value in allowed.items():
            flags = [name] if value.kind == "switch" else [name, value.example]
            assert check_runtime_flags(engine, flags) == [], (engine, name)


def test_cache_type_names_reach_the_engine_as_ggml_ids() -> None:
    flags = ["--type_k", "q8_0", "--type_v=f16", "--n_batch", "8", "--type_k", "2"]
    assert engine_flags("llama.cpp", flags) == (
        "--type_k", "8", "--type_v=1", "--n_batch", "8", "--type_k", "2",
    )  # fmt: skip
