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
from typing import Final, Literal

FlagKind = Literal["switch", "int", "float", "word"]

ALLOWED_FLAGS: Final[dict[str, dict[str, FlagKind]]] = {
    # modelrunner's llama.cpp engine (python -m modelrunner.engines.llamacpp_server --help).
    "llama.cpp": {
        "--n_batch": "int",
        "--n_ubatch": "int",
        "--flash_attn": "word",
        "--rope_freq_base": "float",
        "--rope_freq_scale": "float",
        "--seed": "int",
        "--use_mmap": "word",
        "--use_mlock": "word",
        "--type_k": "int",
        "--type_v": "int",
        "--max_queue": "int",
        "--verbose": "word",
    },
    # vLLM's OpenAI server flags that are safe to pass through.
    "vllm": {
        "--dtype": "word",
        "--quantization": "word",
        "--enforce-eager": "switch",
        "--max-num-batched-tokens": "int",
        "--kv-cache-dtype": "word",
        "--seed": "int",
        "--block-size": "int",
        "--swap-space": "float",
        "--enable-prefix-caching": "switch",
        "--no-enable-prefix-caching": "switch",
        "--enable-chunked-prefill": "switch",
        "--max-logprobs": "int",
        "--reasoning-parser": "word",
        "--tool-call-parser": "word",
        "--enable-auto-tool-choice": "switch",
    },
    # modelrunner's own diffusers server.
    "diffusers": {
        "--seed": "int",
        "--attention-slicing": "switch",
        "--guidance-scale": "float",
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
        kind = allowed.get(name)
        if kind is None:
            known = ", ".join(sorted(allowed)) or "none"
            problems.append(
                (i, f"flag {name} is not allowed for engine {engine} (allowed: {known})")
            )
            i += 1
            continue
        if kind == "switch":
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
        message = _check_value(name, kind, value)
        if message:
            problems.append((value_index, message))
    return problems


def _check_value(name: str, kind: FlagKind, value: str) -> str | None:
    if "/" in value or "\\" in value:
        return f"value {value!r} of {name} contains a path separator"
    if any(ch.isspace() for ch in value):
        return f"value {value!r} of {name} contains white space"
    if len(value) > _MAX_VALUE_LENGTH:
        return f"value of {name} is longer than {_MAX_VALUE_LENGTH} characters"
    if not _VALUE[kind].fullmatch(value):
        expected = {"int": "an integer", "float": "a number", "word": "a plain word"}[kind]
        return f"value {value!r} of {name} must be {expected}"
    if value.startswith("-") and kind == "word":
        return f"value {value!r} of {name} looks like another flag"
    return None
