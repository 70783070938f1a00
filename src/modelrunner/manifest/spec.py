"""The typed manifest: frozen msgspec Structs that mirror schema/model-manifest.schema.json.

The JSON Schema is the published contract and gives located messages; these Structs are
what the rest of the program reads. tests/unit/manifest/test_schema_agreement.py proves that the
two accept the same documents. One deliberate difference: a Struct reads an explicit
null as "not set", while the schema, which the loader runs first, refuses it.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Final, Literal

import msgspec
from msgspec import Meta

from modelrunner.manifest.engines import ENGINES, EngineName

API_VERSION: Final = "modelrunner/v1"

ModelName = Annotated[
    str, Meta(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:/@+-]*$")
]
Duration = (
    Annotated[int, Meta(ge=-1)] | Annotated[str, Meta(pattern=r"^(-1|0|([0-9]+(ms|s|m|h|d))+)$")]
)
PullPolicy = Literal["always", "if-not-present", "never"]
EnvName = Annotated[str, Meta(max_length=128, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]
# An existing Ray cluster's GCS address (host:port), or "auto" (the cluster of this node).
RayAddress = Annotated[
    str,
    Meta(
        max_length=256, pattern=r"^(auto|[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?:[0-9]{1,5})$(?!\n)"
    ),
]
# Kubernetes' label syntax, so node and pod labels can be used as they are. Python's `$`
# also matches before a final newline, JSON Schema's does not: `(?!\n)` makes them agree.
LABEL_KEY: Final = (
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$(?!\n)"
)
LABEL_VALUE: Final = r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$(?!\n)"
LabelKey = Annotated[str, Meta(max_length=317, pattern=LABEL_KEY)]
LabelValue = Annotated[str, Meta(max_length=63, pattern=LABEL_VALUE)]
HostName = Annotated[
    str,
    Meta(min_length=1, max_length=253, pattern=r"^[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?$(?!\n)"),
]
IDENTIFIER: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_DURATION_PART: Final = re.compile(r"([0-9]+)(ms|s|m|h|d)")
_SECONDS_PER_UNIT: Final = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


class LlamaCppSettings(
    msgspec.Struct,
    frozen=True,
    forbid_unknown_fields=True,
    kw_only=True,
    tag="llama.cpp",
    tag_field="engine",
):
    threads: Annotated[int, Meta(ge=1, le=1024)] | None = None
    parallel: Annotated[int, Meta(ge=1, le=256)] | None = None
    n_gpu_layers: Annotated[int, Meta(ge=-1, le=100000)] | None = None
    embeddings: bool | None = None


class VllmSettings(
    msgspec.Struct,
    frozen=True,
    forbid_unknown_fields=True,
    kw_only=True,
    tag="vllm",
    tag_field="engine",
):
    hf_overrides: dict[str, Any] | None = None
    gpu_memory_utilization: Annotated[float, Meta(gt=0, le=1)] | None = None
    tensor_parallel_size: Annotated[int, Meta(ge=1, le=1024)] | None = None
    max_num_seqs: Annotated[int, Meta(ge=1, le=65536)] | None = None
    pipeline_parallel_size: Annotated[int, Meta(ge=1, le=1024)] | None = None
    distributed_executor_backend: Literal["mp", "ray"] | None = None
    ray_address: RayAddress | None = None

    def __post_init__(self) -> None:
        if self.hf_overrides is not None:
            _check_identifier_keys(self.hf_overrides, "hf_overrides")
        if self.ray_address is not None and self.distributed_executor_backend != "ray":
            raise ValueError("ray_address needs distributed_executor_backend: ray")


class DiffusersSettings(
    msgspec.Struct,
    frozen=True,
    forbid_unknown_fields=True,
    kw_only=True,
    tag="diffusers",
    tag_field="engine",
):
    dtype: Literal["auto", "float32", "float16", "bfloat16"] | None = None
    size: Annotated[str, Meta(pattern=r"^[1-9][0-9]{0,4}x[1-9][0-9]{0,4}$")] | None = None
    steps: Annotated[int, Meta(ge=1, le=1000)] | None = None


# Tagged by engine name, so a section encodes and decodes as what it is.
EngineSettings = LlamaCppSettings | VllmSettings | DiffusersSettings


class Limits(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    max_concurrent_requests: Annotated[int, Meta(ge=1, le=65536)] | None = None
    request_timeout: Duration | None = None


class Placement(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Which hosts serve the model (see modelrunner.placement): both criteria must hold."""

    hosts: Annotated[tuple[HostName, ...], Meta(min_length=1, max_length=1024)] | None = None
    match_labels: (
        Annotated[dict[LabelKey, LabelValue], Meta(min_length=1, max_length=64)] | None
    ) = None

    def __post_init__(self) -> None:
        if self.hosts is None and self.match_labels is None:
            raise ValueError("placement needs hosts and/or match_labels")
        if self.hosts is not None and len(set(self.hosts)) != len(self.hosts):
            raise ValueError("placement.hosts must be unique")


# frozen: a spec is a value; forbid_unknown_fields: a typo is an error, never ignored.
class ModelManifest(
    msgspec.Struct,
    frozen=True,
    forbid_unknown_fields=True,
    kw_only=True,
    rename={
        "api_version": "apiVersion",
        "llama_cpp": "llama.cpp",
    },
):
    api_version: Literal["modelrunner/v1"]
    name: ModelName
    model: Annotated[str, Meta(min_length=1, max_length=1024, pattern=r"^\S+$")]
    aliases: Annotated[tuple[ModelName, ...], Meta(max_length=32)] = ()
    description: Annotated[str, Meta(max_length=1024)] | None = None
    engine: EngineName | None = None
    context_size: Annotated[int, Meta(ge=1, le=16777216)] | None = None
    pull_policy: PullPolicy | None = None
    preload: bool | None = None
    keep_alive: Duration | None = None
    limits: Limits | None = None
    placement: Placement | None = None
    runtime_flags: Annotated[
        tuple[Annotated[str, Meta(min_length=1, max_length=256)], ...], Meta(max_length=64)
    ] = ()
    env: Annotated[dict[EnvName, Annotated[str, Meta(max_length=4096)]], Meta(max_length=64)] = (
        msgspec.field(default_factory=dict)
    )
    llama_cpp: LlamaCppSettings | None = None
    vllm: VllmSettings | None = None
    diffusers: DiffusersSettings | None = None

    def __post_init__(self) -> None:
        if len(set(self.aliases)) != len(self.aliases):
            raise ValueError("aliases must be unique")
        present = self.sections_present()
        if self.engine is not None:
            for other in present:
                if other != self.engine:
                    raise ValueError(f"settings for {other} under engine {self.engine}")
        elif len(present) > 1:
            raise ValueError(f"settings for several engines ({', '.join(present)})")

    def sections_present(self) -> tuple[EngineName, ...]:
        sections = {"llama.cpp": self.llama_cpp, "vllm": self.vllm, "diffusers": self.diffusers}
        return tuple(e for e in ENGINES if sections[e] is not None)

    @property
    def declared_engine(self) -> EngineName | None:
        """The engine the manifest names, directly or through its one engine section."""
        if self.engine is not None:
            return self.engine
        present = self.sections_present()
        return present[0] if present else None

    @property
    def served_names(self) -> tuple[str, ...]:
        return (self.name, *self.aliases)


def duration_seconds(value: int | str | None, default: float) -> float:
    """Seconds for a manifest duration; -1 (forever) is ``float('inf')``."""
    if value is None:
        return default
    if isinstance(value, int):
        return float("inf") if value == -1 else float(value)
    if value in ("-1",):
        return float("inf")
    return sum(int(n) * _SECONDS_PER_UNIT[unit] for n, unit in _DURATION_PART.findall(value))


def _check_identifier_keys(value: Any, where: str) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str) or not IDENTIFIER.fullmatch(key):
                raise ValueError(f"key {key!r} in {where} is not an identifier")
            _check_identifier_keys(item, f"{where}.{key}")
    elif isinstance(value, list):
        for item in value:
            _check_identifier_keys(item, where)
