"""One repository of manifests, many hosts: which host serves what, and does it fit (pure).

An inventory names the hosts a ``models.d/`` is synced to:

    hosts:
      - name: gpu-1
        labels: {gpu: h100, zone: a}
        memory: 64GiB            # the host's memory budget (what MR_MEMORY_BUDGET says there)
        gpus: [80GiB, 80GiB]     # each GPU's memory; none for a CPU host

:func:`plan_fleet` places every manifest on the hosts its placement selects, estimates each
model's memory there (modelrunner.estimate) and says, per host, whether the set fits and
whether a model cannot run there at all. :func:`selector_findings` is what ``mr lint``
reports for selectors that match no host of the inventory.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import msgspec
from msgspec import Meta

from modelrunner.estimate import Budget, Estimate, Fit, ModelFacts, estimate, fit, format_bytes
from modelrunner.manifest.problems import Path as JsonPath
from modelrunner.manifest.spec import HostName, LabelKey, LabelValue, ModelManifest, Placement
from modelrunner.placement import Host, selects

Size = Annotated[str, Meta(min_length=1, max_length=32)]


class InventoryHost(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    name: HostName
    labels: Annotated[dict[LabelKey, LabelValue], Meta(max_length=64)] = msgspec.field(
        default_factory=dict
    )
    memory: Size
    gpus: Annotated[tuple[Size, ...], Meta(max_length=64)] = ()


class Inventory(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    hosts: Annotated[tuple[InventoryHost, ...], Meta(min_length=1, max_length=10000)]


@dataclass(frozen=True, slots=True)
class FleetHost:
    """An inventory host with its sizes read: what placement and the estimate need."""

    host: Host
    budget: Budget
    gpus: tuple[int, ...]


def fleet_hosts(inventory: Inventory, where: str) -> tuple[FleetHost, ...]:
    """Sizes parsed and names checked; raises ValueError naming the entry."""
    from modelrunner.estimate import parse_size

    out: list[FleetHost] = []
    seen: set[str] = set()
    for index, entry in enumerate(inventory.hosts):
        at = f"{where}: $.hosts[{index}]"
        if entry.name in seen:
            raise ValueError(f"{at}.name: host {entry.name!r} is listed twice")
        seen.add(entry.name)
        try:
            memory = parse_size(entry.memory)
            gpus = tuple(parse_size(g) for g in entry.gpus)
        except ValueError as exc:
            raise ValueError(f"{at}: {exc}") from None
        out.append(
            FleetHost(
                Host(entry.name, dict(entry.labels)),
                Budget(memory, sum(gpus) if gpus else None, f"inventory memory {entry.memory}"),
                gpus,
            )
        )
    return tuple(out)


@dataclass(frozen=True, slots=True)
class HostPlan:
    name: str
    models: tuple[str, ...]
    estimates: Mapping[str, Estimate]
    fits: tuple[Fit, ...]
    unplaceable: Mapping[str, str]  # model -> why it cannot run on this host

    @property
    def over_committed(self) -> tuple[Fit, ...]:
        return tuple(f for f in self.fits if not f.fits)

    @property
    def ok(self) -> bool:
        return not self.over_committed and not self.unplaceable

    def failures(self) -> list[str]:
        """One sentence per reason this host fails, each naming the host."""
        out = []
        for f in self.over_committed:
            pool = "GPU memory" if f.device == "gpu" else "memory"
            out.append(
                f"host {self.name} is over-committed: its models need {format_bytes(f.need)} "
                f"of {pool}, its budget is {format_bytes(f.budget)}"
            )
        for model, why in sorted(self.unplaceable.items()):
            out.append(f"host {self.name} cannot run {model}: {why}")
        return out


@dataclass(frozen=True, slots=True)
class FleetPlan:
    hosts: tuple[HostPlan, ...]
    unplaced: tuple[str, ...]  # models whose placement selects no host
    empty: tuple[str, ...]  # hosts that serve nothing

    @property
    def failing(self) -> tuple[HostPlan, ...]:
        return tuple(h for h in self.hosts if not h.ok)


def unplaceable(spec: ModelManifest, host: FleetHost) -> str | None:
    """Why ``spec`` cannot run on ``host`` at all, whatever else runs there."""
    from modelrunner.engines.vllm.launch import width_problem

    return width_problem(spec, len(host.gpus))


def plan_fleet(
    hosts: Sequence[FleetHost],
    specs: Sequence[ModelManifest],
    facts: Mapping[str, ModelFacts | None],
) -> FleetPlan:
    """Place each manifest, estimate per host, and judge each host."""
    plans: list[HostPlan] = []
    placed: set[str] = set()
    for fleet_host in hosts:
        mine = [s for s in specs if selects(s.placement, fleet_host.host)]
        placed.update(s.name for s in mine)
        estimates = {s.name: estimate(s, facts.get(s.name), fleet_host.gpus) for s in mine}
        reasons = {s.name: why for s in mine if (why := unplaceable(s, fleet_host))}
        plans.append(
            HostPlan(
                fleet_host.host.name,
                tuple(sorted(s.name for s in mine)),
                estimates,
                fit(estimates, fleet_host.budget) if mine else (),
                reasons,
            )
        )
    return FleetPlan(
        hosts=tuple(plans),
        unplaced=tuple(sorted(s.name for s in specs if s.name not in placed)),
        empty=tuple(p.name for p in plans if not p.models),
    )


def selector_findings(
    placement: Placement | None, hosts: Sequence[Host]
) -> list[tuple[JsonPath, str]]:
    """Selectors that match nothing in the inventory (lint warnings), located by path."""
    if placement is None:
        return []
    findings: list[tuple[JsonPath, str]] = []
    names = {h.name for h in hosts}
    for index, name in enumerate(placement.hosts or ()):
        if name not in names:
            findings.append((("placement", "hosts", index), f"no host {name!r} in the inventory"))
    for key, value in (placement.match_labels or {}).items():
        if not any(h.labels.get(key) == value for h in hosts):
            findings.append(
                (
                    ("placement", "match_labels", key),
                    f"no host of the inventory has the label {key}={value}",
                )
            )
    if not any(selects(placement, h) for h in hosts):
        findings.append((("placement",), "selects no host of the inventory"))
    return findings


def to_json(plan: FleetPlan) -> dict[str, Any]:
    return {
        "hosts": [
            {
                "name": h.name,
                "ok": h.ok,
                "models": [
                    {
                        "name": name,
                        "need_bytes": h.estimates[name].need,
                        "device": h.estimates[name].device,
                        "detail": h.estimates[name].detail,
                        "unplaceable": h.unplaceable.get(name),
                    }
                    for name in h.models
                ],
                "fit": [
                    {
                        "device": f.device,
                        "need_bytes": f.need,
                        "budget_bytes": f.budget,
                        "fits": f.fits,
                        "unknown": list(f.unknown),
                    }
                    for f in h.fits
                ],
                "failures": h.failures(),
            }
            for h in plan.hosts
        ],
        "unplaced_models": list(plan.unplaced),
        "empty_hosts": list(plan.empty),
    }


def read_inventory(path: Path) -> tuple[FleetHost, ...]:
    """The inventory file -> hosts; raises ValueError with a located message (I/O)."""
    from modelrunner.manifest.yamldoc import YamlSyntaxError, parse_documents

    where = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"{where}: cannot read the inventory: {exc}") from None
    try:
        documents = parse_documents(text)
    except YamlSyntaxError as exc:
        pos = exc.position
        raise ValueError(f"{where}:{pos.line}:{pos.column}: {exc.message}") from None
    if len(documents) != 1:
        raise ValueError(f"{where}: an inventory is one YAML document with a `hosts` list")
    doc = documents[0]
    if doc.issues:
        issue = doc.issues[0]
        pos = issue.position
        raise ValueError(f"{where}:{pos.line}:{pos.column}: {issue.message}")
    try:
        inventory = msgspec.convert(doc.data, Inventory)
    except msgspec.ValidationError as exc:
        message = str(exc)
        located = message.rpartition(" - at `")[2].rstrip("`") if " - at `" in message else ""
        pos = doc.position(_msgspec_path(located)) if located else doc.start
        raise ValueError(f"{where}:{pos.line}:{pos.column}: {message}") from None
    return fleet_hosts(inventory, where)


def _msgspec_path(located: str) -> JsonPath:
    """msgspec's ``$.hosts[0].memory`` -> ("hosts", 0, "memory")."""
    import re

    out: list[str | int] = []
    for key, index in re.findall(r"\.([^.\[]+)|\[(\d+)\]", located.removeprefix("$")):
        out.append(int(index) if index else key)
    return tuple(out)
