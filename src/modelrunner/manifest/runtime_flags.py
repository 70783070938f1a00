"""Per-engine allow-lists for a manifest's ``runtime_flags`` (pure; shared by lint and the engines).

A flag is either a switch (no value) or takes exactly one value, written as the next item
or as ``--flag=value``. Values may not contain path separators or white space and may
not start with ``-`` (unless they are a negative number), so no value can smuggle in a
file path or another flag. Flags that a typed manifest field already sets are refused
with a pointer to that field, so there is one place for each setting.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, Literal

FlagKind = Literal["switch", "int", "float", "word", "bool", "choice"]


@dataclass(frozen=True, slots=True)
class Value:
    """What a flag takes: nothing (a switch), or one value of a kind, within ``low`` and
    ``high`` (numbers) or among ``choices`` (names; for ``int`` also accepted as numbers)."""

    kind: FlagKind
    low: float | None = None
    high: float | None = None
    choices: tuple[str, ...] = ()
    numbers: tuple[int, ...] = ()  # the numbers ``choices`` stand for (ggml type ids)

    @property
    def example(self) -> str:
        """A valid value (tests pass one of each to the engine servers)."""
        if self.choices:
            return self.choices[0]
        if self.kind == "bool":
            return "true"
        low = self.low if self.low is not None else 0
        return str(int(low) + 1) if self.kind == "int" else str(low + 0.5)


SWITCH: Final = Value("switch")
BOOL: Final = Value("bool")
WORD: Final = Value("word")
POSITIVE_INT: Final = Value("int", low=1)
SEED: Final = Value("int", low=-1, high=2**32 - 1)

# llama.cpp's KV cache types (its server's --cache-type-k/-v list), by ggml type id.
GGML_CACHE_TYPES: Final = {"f32": 0, "f16": 1, "q4_0": 2, "q4_1": 3, "q5_0": 6, "q5_1": 7,
                           "q8_0": 8, "iq4_nl": 20, "bf16": 30}  # fmt: skip
GGML_CACHE_TYPE: Final = Value(
    "choice", choices=tuple(GGML_CACHE_TYPES), numbers=tuple(GGML_CACHE_TYPES.values())
)

# vLLM 0.32's names (vllm.model_executor.layers.quantization, vllm.config.cache).
VLLM_QUANTIZATIONS: Final = (
    "awq", "auto_awq", "fp8", "fbgemm_fp8", "fp_quant", "modelopt", "modelopt_fp4",
    "modelopt_mxfp8", "modelopt_mixed", "auto_gptq", "gptq", "gptq_marlin", "awq_marlin",
    "humming", "compressed-tensors", "experts_int8", "quark", "moe_wna16", "torchao", "inc",
    "mxfp4", "gpt_oss_mxfp4", "deepseek_v4_fp8", "online", "fp8_per_tensor", "fp8_per_block",
    "fp8_per_channel", "int8_per_channel_weight_only", "nvfp4_per_token", "mxfp8",
    "bitsandbytes", "gguf",
)  # fmt: skip
VLLM_CACHE_DTYPES: Final = (
    "auto", "float16", "bfloat16", "fp8", "fp8_e4m3", "fp8_e5m2", "fp8_inc", "fp8_ds_mla",
    "nvfp4_ds_mla", "int8_per_token_head", "fp8_per_token_head", "nvfp4",
)  # fmt: skip

ALLOWED_FLAGS: Final[dict[str, dict[str, Value]]] = {
    # modelrunner's llama.cpp engine (python -m modelrunner.engines.llamacpp.main --help).
    "llama.cpp": {
        "--n_batch": POSITIVE_INT,
        "--n_ubatch": POSITIVE_INT,
        "--flash_attn": BOOL,
        "--rope_freq_base": Value("float", low=0),
        "--rope_freq_scale": Value("float", low=0),
        "--seed": SEED,
        "--use_mmap": BOOL,
        "--use_mlock": BOOL,
        "--type_k": GGML_CACHE_TYPE,
        "--type_v": GGML_CACHE_TYPE,
        "--max_queue": Value("int", low=0),
        "--verbose": BOOL,
    },
    # vLLM's OpenAI server flags that are safe to pass through.
    "vllm": {
        "--dtype": Value(
            "choice", choices=("auto", "half", "float16", "bfloat16", "float", "float32")
        ),
        "--quantization": Value("choice", choices=VLLM_QUANTIZATIONS),
        "--enforce-eager": SWITCH,
        "--max-num-batched-tokens": POSITIVE_INT,
        "--kv-cache-dtype": Value("choice", choices=VLLM_CACHE_DTYPES),
        "--seed": Value("int", low=0, high=2**32 - 1),
        "--block-size": POSITIVE_INT,
        "--swap-space": Value("float", low=0),
        "--enable-prefix-caching": SWITCH,
        "--no-enable-prefix-caching": SWITCH,
        "--enable-chunked-prefill": SWITCH,
        "--max-logprobs": Value("int", low=-1),
        "--reasoning-parser": WORD,
        "--tool-call-parser": WORD,
        "--enable-auto-tool-choice": SWITCH,
    },
    # modelrunner's own diffusers server.
    "diffusers": {
        "--seed": Value("int", low=0, high=2**32 - 1),
        "--attention-slicing": SWITCH,
        "--guidance-scale": Value("float", low=0),
    },
}

# Flags that a typed manifest field owns: the message names the field to use.
FIELD_FOR_FLAG: Final[dict[str, dict[str, str]]] = {
    "llama.cpp": {
        "--n_ctx": "context_size",
        "--n_threads": "llama.cpp.threads",
        "--n_gpu_layers": "llama.cpp.n_gpu_layers",
        "--embedding": "llama.cpp.embeddings",
        "--model": "model",
    },
    "vllm": {
        "--max-model-len": "context_size",
        "--gpu-memory-utilization": "vllm.gpu_memory_utilization",
        "--hf-overrides": "vllm.hf_overrides",
        "--tensor-parallel-size": "vllm.tensor_parallel_size",
        "--max-num-seqs": "vllm.max_num_seqs",
        "--pipeline-parallel-size": "vllm.pipeline_parallel_size",
        "--distributed-executor-backend": "vllm.distributed_executor_backend",
        "--served-model-name": "name",
        "--model": "model",
    },
    "diffusers": {
        "--dtype": "diffusers.dtype",
        "--model": "model",
    },
}

_VALUE: Final = {
    "int": re.compile(r"-?[0-9]+"),
    "float": re.compile(r"-?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?"),
    "word": re.compile(r"[A-Za-z0-9_.:+-]+"),
    "bool": re.compile(r"(?i:true|false|yes|no|on|off|1|0)"),
    "choice": re.compile(r"[A-Za-z0-9_.:+-]+"),
}
_MAX_VALUE_LENGTH: Final = 128


def check_runtime_flags(engine: str, flags: Sequence[str]) -> list[tuple[int, str]]:
    """Return ``(index, message)`` for every problem in ``flags``; empty when they are fine."""
    allowed = ALLOWED_FLAGS.get(engine, {})
    owned = FIELD_FOR_FLAG.get(engine, {})
    problems: list[tuple[int, str]] = []
    i = 0
    while i < len(flags):
        token = flags[i]
        name, eq, inline_value = token.partition("=")
        if not name.startswith("--"):
            problems.append((i, f"expected a flag starting with '--', got {token!r}"))
            i += 1
            continue
        if name in owned:
            problems.append((i, f"{name} is set by the manifest field `{owned[name]}`; use that"))
            i += 1 if eq or i + 1 >= len(flags) or flags[i + 1].startswith("--") else 2
            continue
        spec = allowed.get(name)
        if spec is None:
            known = ", ".join(sorted(allowed)) or "none"
            problems.append(
                (i, f"flag {name} is not allowed for engine {engine} (allowed: {known})")
            )
            i += 1
            continue
        if spec.kind == "switch":
            if eq:
                problems.append((i, f"{name} is a switch and takes no value"))
            i += 1
            continue
        if eq:
            value, value_index = inline_value, i
            i += 1
        elif i + 1 < len(flags):
            value, value_index = flags[i + 1], i + 1
            i += 2
        else:
            problems.append((i, f"{name} needs a value"))
            break
        message = _check_value(name, spec, value)
        if message:
            problems.append((value_index, message))
    return problems


def _check_value(name: str, spec: Value, value: str) -> str | None:
    if "/" in value or "\\" in value:
        return f"value {value!r} of {name} contains a path separator"
    if any(ch.isspace() for ch in value):
        return f"value {value!r} of {name} contains white space"
    if len(value) > _MAX_VALUE_LENGTH:
        return f"value of {name} is longer than {_MAX_VALUE_LENGTH} characters"
    if value.startswith("-") and spec.kind in ("word", "choice"):
        return f"value {value!r} of {name} looks like another flag"
    if not _VALUE[spec.kind].fullmatch(value):
        expected = {"int": "an integer", "float": "a number", "word": "a plain word",
                    "bool": "true or false", "choice": "a plain word"}[spec.kind]  # fmt: skip
        return f"value {value!r} of {name} must be {expected}"
    if spec.kind == "choice":
        if value in spec.choices or (value.isdigit() and int(value) in spec.numbers):
            return None
        numbers = f" (or their numbers {', '.join(map(str, spec.numbers))})" if spec.numbers else ""
        return f"value {value!r} of {name} must be one of {', '.join(spec.choices)}{numbers}"
    if spec.kind in ("int", "float"):
        return _check_range(name, spec, float(value), value)
    return None


def _check_range(name: str, spec: Value, number: float, text: str) -> str | None:
    def shown(bound: float) -> str:
        return str(int(bound)) if spec.kind == "int" else f"{bound:g}"

    if spec.low is not None and number < spec.low:
        return f"value {text!r} of {name} must be at least {shown(spec.low)}"
    if spec.high is not None and number > spec.high:
        return f"value {text!r} of {name} must be at most {shown(spec.high)}"
    return None


def engine_flags(engine: str, flags: Sequence[str]) -> tuple[str, ...]:
    """``flags`` as the engine reads them (checked flags only): a ggml cache type given by
    name becomes its number, since llama-cpp-python takes numbers."""
    out = list(flags)
    allowed = ALLOWED_FLAGS.get(engine, {})
    for i, token in enumerate(out):
        name, eq, inline = token.partition("=")
        spec = allowed.get(name)
        if spec is None or not spec.numbers:
            continue
        if eq and inline in spec.choices:
            out[i] = f"{name}={spec.numbers[spec.choices.index(inline)]}"
        elif not eq and i + 1 < len(out) and out[i + 1] in spec.choices:
            out[i + 1] = str(spec.numbers[spec.choices.index(out[i + 1])])
    return tuple(out)
