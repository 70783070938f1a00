"""Checks the JSON Schema cannot express (pure functions: spec in, findings out).

- ``runtime_flags`` against the engine's allow-list;
- ``model`` as an OCI reference, and a warning for floating tags;
- vLLM's Ray backend: a placement (one host runs the server), no second RAY_ADDRESS;
- across files: duplicate names and aliases that collide.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from modelrunner import reference
from modelrunner.errors import InvalidReference
from modelrunner.manifest.engines import ENGINES
from modelrunner.manifest.problems import Path, Severity
from modelrunner.manifest.runtime_flags import check_runtime_flags


@dataclass(frozen=True, slots=True)
class Finding:
    path: Path
    message: str
    severity: Severity = "error"
    rule: str = "semantic"
    at_key: bool = False


def check_manifest(data: Mapping[str, Any]) -> list[Finding]:
    """Checks on a raw document; they run even when the schema found problems elsewhere,
    so lint reports everything at once. Fields of the wrong type are left to the schema."""
    findings: list[Finding] = []
    flags = data.get("runtime_flags")
    if isinstance(flags, list) and flags and all(isinstance(f, str) for f in flags):
        engine = declared_engine(data)
        if engine is None:
            findings.append(
                Finding(
                    ("runtime_flags",),
                    "runtime_flags need an explicit `engine` (flags differ per engine)",
                    rule="runtime-flags",
                    at_key=True,
                )
            )
        else:
            for index, message in check_runtime_flags(engine, flags):
                findings.append(Finding(("runtime_flags", index), message, rule="runtime-flags"))
    name, aliases = data.get("name"), data.get("aliases")
    if isinstance(aliases, list) and isinstance(name, str) and name in aliases:
        findings.append(
            Finding(
                ("aliases", aliases.index(name)), f"alias {name!r} repeats the model's own name"
            )
        )
    findings += _ray_findings(data)
    model = data.get("model")
    well_formed = isinstance(model, str) and model and not any(c.isspace() for c in model)
    if well_formed and isinstance(model, str) and not reference.is_local_path(model):
        try:
            ref = reference.parse(model)
        except InvalidReference as exc:
            findings.append(Finding(("model",), str(exc), rule="reference"))
        else:
            if ref.is_floating:
                findings.append(
                    Finding(
                        ("model",),
                        f"{model!r} is a floating tag ({ref.tag}): pin a digest "
                        f"({ref.familiar.split(':')[0]}@sha256:...) "
                        "so every host serves the same bytes",
                        severity="warning",
                        rule="floating-tag",
                    )
                )
    return findings


def _ray_findings(data: Mapping[str, Any]) -> list[Finding]:
    """vLLM's Ray backend in a fleet: one host runs the server, and the address is a field."""
    section = data.get("vllm")
    if not isinstance(section, dict) or section.get("distributed_executor_backend") != "ray":
        return []
    findings = []
    if "placement" not in data:
        findings.append(
            Finding(
                ("vllm", "distributed_executor_backend"),
                "a Ray-backed model without placement starts a vLLM server on every host that "
                "syncs this folder; give it a placement that selects the Ray head host",
                severity="warning",
                rule="ray-placement",
            )
        )
    env = data.get("env")
    if isinstance(env, dict) and "RAY_ADDRESS" in env and "ray_address" in section:
        findings.append(
            Finding(
                ("env", "RAY_ADDRESS"),
                "vllm.ray_address sets RAY_ADDRESS; this value would be ignored",
                rule="ray-address",
                at_key=True,
            )
        )
    return findings


def declared_engine(data: Mapping[str, Any]) -> str | None:
    """The engine a document names, directly or through its only engine section."""
    engine = data.get("engine")
    if engine in ENGINES:
        return str(engine)
    sections = [e for e in ENGINES if e in data]
    return sections[0] if len(sections) == 1 else None


@dataclass(frozen=True, slots=True)
class NameUse:
    """One place a served name is declared: a manifest's name or one of its aliases."""

    name: str
    owner: int  # index of the manifest in the checked sequence
    path: Path
    where: str  # "file:line:column", for messages pointing at the other place


@dataclass(frozen=True, slots=True)
class Conflict:
    owner: int
    path: Path
    message: str


def name_conflicts(uses: Sequence[NameUse]) -> list[Conflict]:
    """Every use of a served name that another manifest also uses (reported at each use)."""
    by_name: dict[str, list[NameUse]] = {}
    for use in uses:
        by_name.setdefault(use.name, []).append(use)
    conflicts: list[Conflict] = []
    for name, group in by_name.items():
        owners = {use.owner for use in group}
        if len(owners) < 2:
            continue
        for use in group:
            others = [o for o in group if o.owner != use.owner]
            kind = "model name" if use.path == ("name",) else "alias"
            conflicts.append(
                Conflict(
                    use.owner,
                    use.path,
                    f"{kind} {name!r} is also declared at {_places(others)}",
                )
            )
    return conflicts


def _places(uses: Iterable[NameUse]) -> str:
    return ", ".join(use.where for use in uses)
