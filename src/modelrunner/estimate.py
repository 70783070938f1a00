"""How much memory a model needs before it starts, and how much a host may give (pure).

    GGUF (llama.cpp)  weights' size + slots x KV cache + compute buffers per context + the
                      process. KV cache = 2 (K and V) x layers x KV heads x head size x 2
                      bytes (f16) x context_size. The engine loads the weights once and gives
                      one context ``llama.cpp.parallel`` slots of context_size tokens each;
                      with embeddings, a second context adds one slot's KV cache and compute
    vLLM              on a GPU host: gpu_memory_utilization (vLLM's default 0.9) of each of
                      the tensor x pipeline GPUs it takes on this host; without a GPU:
                      weights + VLLM_CPU_KVCACHE_SPACE + the engine process's overhead
    Diffusers         the DDUF's size + the engine process's overhead

The budget: ``MR_MEMORY_BUDGET`` (``16GiB``, ``12G``, ``80%`` of RAM...), by default 90% of
RAM; GPU memory is the sum of what ``nvidia-smi`` reports. Only :func:`read_host_memory` and
:func:`model_facts` do I/O (/proc/meminfo, nvidia-smi, file headers); everything else is a
function of its arguments.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

from modelrunner.manifest.spec import ModelManifest
from modelrunner.model_files import Format, ModelFiles

Device = Literal["ram", "gpu"]

GiB: Final = 1024**3
MiB: Final = 1024**2
DEFAULT_RAM_SHARE: Final = 0.9
DEFAULT_GPU_UTILIZATION: Final = 0.9  # vLLM's own default for --gpu-memory-utilization
DEFAULT_LLAMA_CONTEXT: Final = 4096  # engines/llamacpp.py's default, Docker Model Runner's
DEFAULT_VLLM_CPU_KV_GIB: Final = 4.0  # vLLM CPU's VLLM_CPU_KVCACHE_SPACE default
F16_BYTES: Final = 2
LLAMA_CONTEXT_COMPUTE: Final = 17 * MiB  # one llama.cpp context's compute buffers (n_ubatch 512)
# The engine process besides weights and cache: interpreter, libraries.
# Measured on this project's engines (docs/design/memory.md).
PROCESS_OVERHEAD: Final[Mapping[str, int]] = {
    "llama.cpp": 54 * MiB,
    "vllm": 2 * GiB,
    "diffusers": 600 * MiB,
}

_SIZE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([KMGT]?)(i?)B?\s*$", re.IGNORECASE)
_POWER = {"": 0, "K": 1, "M": 2, "G": 3, "T": 4}


# ---- model facts ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class KvShape:
    """The attention shape of a GGUF model, as far as the KV cache is concerned."""

    layers: int
    heads: int
    kv_heads: tuple[int, ...]  # per layer (GGUF may store one number for all)
    embedding: int
    key_length: int | None = None  # per head; embedding / heads when the GGUF omits it
    value_length: int | None = None

    def bytes_per_token(self, element_bytes: int = F16_BYTES) -> int:
        head = self.embedding // self.heads
        per_head = (self.key_length or head) + (self.value_length or head)
        kv = self.kv_heads if len(self.kv_heads) == self.layers else self.kv_heads[:1] * self.layers
        return sum(kv) * per_head * element_bytes


@dataclass(frozen=True, slots=True)
class ModelFacts:
    """What the estimate needs to know of a model's files (gathered by :func:`model_facts`)."""

    format: Format
    size: int  # bytes: the GGUF shards, the safetensors folder, the DDUF
    kv: KvShape | None = None  # GGUF only
    context_size: int | None = None  # the artifact's default, as ModelFiles has it


def _ints(text: str | None) -> tuple[int, ...] | None:
    if text is None:
        return None
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        return None
    return values if values and all(v >= 0 for v in values) else None


def kv_shape(metadata: Mapping[str, str]) -> KvShape | None:
    """The KV shape from GGUF header fields as strings (store/gguf_meta.py's ``gguf``)."""
    arch = metadata.get("general.architecture", "")

    def field(name: str) -> tuple[int, ...] | None:
        return _ints(metadata.get(f"{arch}.{name}"))

    layers, heads, embedding = (
        field("block_count"),
        field("attention.head_count"),
        field("embedding_length"),
    )
    if not (layers and heads and embedding) or not heads[0] or not layers[0]:
        return None
    kv_heads = field("attention.head_count_kv") or heads
    key, value = field("attention.key_length"), field("attention.value_length")
    return KvShape(
        layers=layers[0],
        heads=max(heads),
        kv_heads=kv_heads,
        embedding=embedding[0],
        key_length=key[0] if key else None,
        value_length=value[0] if value else None,
    )


# ---- the estimate -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Estimate:
    need: int | None  # bytes; None when the files are not known here
    device: Device
    detail: str  # how the number was made, for `mr plan` and failure reasons


def format_bytes(value: float) -> str:
    """5476083302 -> '5.1 GiB' (one decimal; MiB below a GiB)."""
    if abs(value) >= GiB:
        return f"{value / GiB:.1f} GiB"
    return f"{value / MiB:.0f} MiB"


def llama_context(spec: ModelManifest, facts: ModelFacts | None) -> int:
    """The n_ctx llama.cpp gets, as engines/llamacpp.py chooses it."""
    return spec.context_size or (facts and facts.context_size) or DEFAULT_LLAMA_CONTEXT


def _engine(spec: ModelManifest, facts: ModelFacts | None) -> str:
    if spec.declared_engine is not None:
        return spec.declared_engine
    by_format = {"gguf": "llama.cpp", "safetensors": "vllm", "dduf": "diffusers"}
    return by_format[facts.format] if facts is not None else "llama.cpp"


def estimate(spec: ModelManifest, facts: ModelFacts | None, gpus: Iterable[int] = ()) -> Estimate:
    """The memory ``spec`` needs on a host with GPUs of ``gpus`` bytes each (none: CPU)."""
    gpu_sizes = tuple(gpus)
    engine = _engine(spec, facts)
    if engine == "vllm":
        return _estimate_vllm(spec, facts, gpu_sizes)
    if facts is None:
        return Estimate(None, "ram", "unknown: the model's files are not on this host")
    overhead = PROCESS_OVERHEAD[engine]
    if engine == "diffusers":
        return Estimate(
            facts.size + overhead,
            "ram",
            f"DDUF {format_bytes(facts.size)} + process {format_bytes(overhead)}",
        )
    section = spec.llama_cpp
    slots = section.parallel if section is not None and section.parallel else 1
    contexts = 1
    if section is not None and section.embeddings:
        slots, contexts = slots + 1, 2  # the embedding context beside the generating one
    context = llama_context(spec, facts)
    offloaded = section is not None and bool(section.n_gpu_layers) and bool(gpu_sizes)
    device: Device = "gpu" if offloaded else "ram"
    cache = facts.kv.bytes_per_token() * context if facts.kv is not None else 0
    compute = contexts * LLAMA_CONTEXT_COMPUTE
    unknown = "" if facts.kv is not None else " (KV cache unknown: no attention counts in the GGUF)"
    return Estimate(
        facts.size + slots * cache + compute + overhead,
        device,
        f"weights {format_bytes(facts.size)} + {slots} slot{'s' if slots > 1 else ''} x KV "
        f"cache {format_bytes(cache)} for {context} tokens + compute {format_bytes(compute)} "
        f"+ process {format_bytes(overhead)}{unknown}",
    )


def _estimate_vllm(
    spec: ModelManifest, facts: ModelFacts | None, gpus: tuple[int, ...]
) -> Estimate:
    section = spec.vllm
    if gpus:
        share = (section.gpu_memory_utilization if section else None) or DEFAULT_GPU_UTILIZATION
        width = (section.tensor_parallel_size if section else None) or 1
        taken = gpus[:width]
        return Estimate(
            int(sum(taken) * share),
            "gpu",
            f"gpu_memory_utilization {share:g} of {len(taken)} GPU(s) "
            f"of {format_bytes(sum(taken))}",
        )
    kv_text = spec.env.get("VLLM_CPU_KVCACHE_SPACE")
    try:
        kv_gib = float(kv_text) if kv_text else DEFAULT_VLLM_CPU_KV_GIB
    except ValueError:
        kv_gib = DEFAULT_VLLM_CPU_KV_GIB
    cache, overhead = int(kv_gib * GiB), PROCESS_OVERHEAD["vllm"]
    if facts is None:
        return Estimate(None, "ram", "unknown: the model's files are not on this host")
    return Estimate(
        facts.size + cache + overhead,
        "ram",
        f"weights {format_bytes(facts.size)} + VLLM_CPU_KVCACHE_SPACE {format_bytes(cache)} "
        f"+ process {format_bytes(overhead)}",
    )


# ---- the budget -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HostMemory:
    ram: int  # MemTotal, bytes
    gpus: tuple[int, ...] = ()  # each GPU's total memory, bytes


@dataclass(frozen=True, slots=True)
class Budget:
    ram: int
    gpu: int | None  # None: no GPU
    source: str  # where the RAM figure came from, for messages

    def of(self, device: Device) -> int:
        if device == "gpu":
            return self.gpu or 0
        return self.ram


def parse_size(text: str, ram: int | None = None) -> int:
    """'16GiB', '16G', '512M', '2.5GB', '1073741824', or '80%' (of ``ram``) -> bytes.

    K/M/G/T are binary (1024) with or without ``i``, as memory is counted.
    """
    stripped = text.strip()
    if stripped.endswith("%"):
        if ram is None:
            raise ValueError(f"{text!r}: a percentage needs the host's RAM")
        try:
            share = float(stripped[:-1])
        except ValueError:
            raise ValueError(f"{text!r}: not a percentage") from None
        if not 0 < share <= 100:
            raise ValueError(f"{text!r}: a percentage must be above 0 and at most 100")
        return int(ram * share / 100)
    match = _SIZE.match(stripped)
    if not match:
        raise ValueError(f"{text!r}: not a size (examples: 16GiB, 512M, 80%)")
    number, unit = float(match[1]), match[2].upper()
    value = int(number * 1024 ** _POWER[unit])
    if value <= 0:
        raise ValueError(f"{text!r}: a budget must be more than 0 bytes")
    return value


def budget(host: HostMemory, setting: str | None) -> Budget:
    """The host's budget: ``setting`` (MR_MEMORY_BUDGET) or 90% of RAM, and all GPU memory."""
    gpu = sum(host.gpus) if host.gpus else None
    if setting:
        return Budget(parse_size(setting, host.ram), gpu, f"MR_MEMORY_BUDGET={setting}")
    return Budget(int(host.ram * DEFAULT_RAM_SHARE), gpu, "90% of RAM")


def parse_meminfo(text: str) -> int:
    """MemTotal of /proc/meminfo, in bytes."""
    for line in text.splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) * 1024
    raise ValueError("/proc/meminfo has no MemTotal line")


def parse_nvidia_smi(text: str) -> tuple[int, ...]:
    """``nvidia-smi --query-gpu=memory.total --format=csv,noheader,nounits`` (MiB) -> bytes."""
    return tuple(int(float(line.strip())) * MiB for line in text.splitlines() if line.strip())


@dataclass(frozen=True, slots=True)
class Fit:
    device: Device
    need: int  # the sum of the known estimates
    budget: int
    unknown: tuple[str, ...]  # models whose need is not known

    @property
    def fits(self) -> bool:
        return self.need <= self.budget


def fit(estimates: Mapping[str, Estimate], budget_: Budget) -> tuple[Fit, ...]:
    """Whether the set fits, per device (GPU only when some model wants one)."""
    out = []
    for device in ("ram", "gpu"):
        mine = {n: e for n, e in estimates.items() if e.device == device}
        if device == "gpu" and not mine:
            continue
        out.append(
            Fit(
                device,
                sum(e.need for e in mine.values() if e.need is not None),
                budget_.of(device),
                tuple(sorted(n for n, e in mine.items() if e.need is None)),
            )
        )
    return tuple(out)


def admission(need: Estimate, in_use: int, budget_: Budget) -> str | None:
    """None when ``need`` fits beside ``in_use`` bytes already taken; else the reason."""
    if need.need is None:
        return None  # nothing known to refuse on
    total = budget_.of(need.device)
    free = max(0, total - in_use)
    if need.need <= free:
        return None
    where = "GPU budget" if need.device == "gpu" else "budget"
    return (
        f"needs {format_bytes(need.need)}, {format_bytes(free)} free of a "
        f"{format_bytes(total)} {where}"
    )


# ---- I/O: kept thin, everything it reads goes to the pure parts above --------------------


def read_host_memory(
    meminfo: Path = Path("/proc/meminfo"), nvidia_smi: str = "nvidia-smi"
) -> HostMemory:
    """RAM from /proc/meminfo; GPUs from nvidia-smi when it is installed and answers."""
    ram = parse_meminfo(meminfo.read_text())
    try:
        done = subprocess.run(
            [nvidia_smi, "--query-gpu=memory.total", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return HostMemory(ram)
    if done.returncode != 0:
        return HostMemory(ram)
    try:
        return HostMemory(ram, parse_nvidia_smi(done.stdout))
    except ValueError:
        return HostMemory(ram)


def _size_of(path: Path) -> int:
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size


def model_facts(files: ModelFiles) -> ModelFacts:
    """Sizes from the disk and, for a GGUF, the attention counts from its header (ms)."""
    if files.format != "gguf":
        return ModelFacts(files.format, _size_of(files.path), context_size=files.context_size)
    from modelrunner.store.gguf_header import read_header
    from modelrunner.store.gguf_meta import discover_shards

    shards = discover_shards(files.path)
    return ModelFacts(
        "gguf",
        sum(s.stat().st_size for s in shards),
        kv_shape(read_header(shards[0])),
        files.context_size,
    )
