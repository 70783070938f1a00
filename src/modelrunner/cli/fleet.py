"""The memory side of ``mr plan``: this host's estimate and fit, and ``mr plan --fleet``.

Called from cli/status.py's ``mr plan``; the deciding is in modelrunner.estimate and
modelrunner.fleet, this module gathers the facts (model files, host memory) and prints.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from modelrunner.estimate import Budget, Estimate, ModelFacts
    from modelrunner.fleet import FleetPlan
    from modelrunner.manifest.load import LoadedManifest
    from modelrunner.settings import Settings


def gather_facts(
    loaded: Iterable[LoadedManifest], settings: Settings
) -> dict[str, ModelFacts | None]:
    """Each model's file facts, from a local path or the local store (None when absent)."""
    from modelrunner import reference
    from modelrunner.errors import ModelRunnerError
    from modelrunner.estimate import model_facts
    from modelrunner.model_files import from_local_path
    from modelrunner.store.store import Store

    store: Store | None = None
    out: dict[str, ModelFacts | None] = {}
    for item in loaded:
        spec = item.spec
        try:
            if reference.is_local_path(spec.model):
                path = Path(spec.model).expanduser()
                files = from_local_path(
                    path if path.is_absolute() else Path(item.file).parent / path
                )
            else:
                if not settings.store_dir.is_dir():
                    out[spec.name] = None  # no store here: nothing to look in (or create)
                    continue
                if store is None:
                    store = Store(settings.store_dir, settings.insecure_registries)
                if not store.has(spec.model):
                    out[spec.name] = None
                    continue
                files = store.resolve(spec.model)
            out[spec.name] = model_facts(files)
        except (ModelRunnerError, OSError):
            out[spec.name] = None
    return out


def _row(name: str, estimate: Estimate) -> str:
    from modelrunner.estimate import format_bytes

    need = format_bytes(estimate.need) if estimate.need is not None else "unknown"
    device = " (GPU)" if estimate.device == "gpu" else ""
    return f"  {name:<24} {need:>9}{device}  {estimate.detail}"


def host_memory_report(
    loaded: Iterable[LoadedManifest], settings: Settings, environ: Mapping[str, str]
) -> tuple[list[str], bool, dict[str, Any]]:
    """Lines for this host's models, whether they fit, and the same as JSON."""
    from modelrunner.estimate import budget, estimate, fit, format_bytes, read_host_memory

    loaded = list(loaded)
    host = read_host_memory()
    try:
        limit = budget(host, environ.get("MR_MEMORY_BUDGET"))
    except ValueError as exc:
        from modelrunner.errors import UsageError

        raise UsageError(f"MR_MEMORY_BUDGET: {exc}") from None
    facts = gather_facts(loaded, settings)
    estimates = {m.spec.name: estimate(m.spec, facts[m.spec.name], host.gpus) for m in loaded}
    fits = fit(estimates, limit)
    lines = [f"memory on this host (budget: {format_bytes(limit.ram)}, {limit.source}):"]
    lines += [_row(name, estimates[name]) for name in sorted(estimates)]
    lines += _fit_lines(fits, limit)
    ok = all(f.fits for f in fits)
    data = {
        "budget_bytes": limit.ram,
        "gpu_budget_bytes": limit.gpu,
        "models": {
            n: {"need_bytes": e.need, "device": e.device, "detail": e.detail}
            for n, e in estimates.items()
        },
        "fits": ok,
    }
    return lines, ok, data


def _fit_lines(fits: Iterable[Any], limit: Budget | None = None) -> list[str]:
    from modelrunner.estimate import format_bytes

    lines = []
    for f in fits:
        pool = "GPU memory" if f.device == "gpu" else "memory"
        verdict = "fits" if f.fits else "DOES NOT FIT"
        unknown = f" (not counted, files not here: {', '.join(f.unknown)})" if f.unknown else ""
        lines.append(
            f"  {pool}: {format_bytes(f.need)} of {format_bytes(f.budget)}: {verdict}{unknown}"
        )
    return lines


# ---- mr plan --fleet --------------------------------------------------------------------


def run_fleet(args: Any, folder: Path, settings: Settings) -> int:
    from modelrunner.fleet import plan_fleet, read_inventory, to_json
    from modelrunner.manifest.load import load_folder

    try:
        hosts = read_inventory(args.fleet)
    except ValueError as exc:
        print(f"mr plan: {exc}", file=sys.stderr)
        return 2
    result = load_folder(folder)
    specs = [m.spec for m in result.manifests]
    plan = plan_fleet(hosts, specs, gather_facts(result.manifests, settings))
    if args.format == "json":
        data = to_json(plan)
        data["problems"] = [str(p) for p in result.problems]
        print(json.dumps(data, indent=2))
    elif args.format == "github":
        for problem in result.errors:
            from modelrunner.cli.lint import _github

            print(_github(problem))
        for line in _github_lines(plan, str(args.fleet)):
            print(line)
    else:
        for problem in result.problems:
            print(problem, file=sys.stderr)
        print("\n".join(_text(plan, hosts)))
    failures = [f for h in plan.failing for f in h.failures()]
    for failure in failures:
        print(f"mr plan: {failure}", file=sys.stderr)
    summary = (
        f"{len(plan.hosts)} host(s), {len(specs)} model(s): {len(plan.failing)} failing host(s), "
        f"{len(plan.unplaced)} unplaced model(s), {len(plan.empty)} empty host(s)"
    )
    print(summary, file=sys.stderr)
    return 1 if failures or result.errors else 0


def _text(plan: FleetPlan, hosts: Iterable[Any]) -> list[str]:
    from modelrunner.estimate import format_bytes

    by_name = {h.host.name: h for h in hosts}
    lines: list[str] = []
    for host_plan in plan.hosts:
        info = by_name[host_plan.name]
        labels = ",".join(f"{k}={v}" for k, v in info.host.labels.items()) or "-"
        gpus = f", GPUs {len(info.gpus)}" if info.gpus else ""
        state = "ok" if host_plan.ok else "FAILS"
        lines.append(
            f"host {host_plan.name} [{state}] (labels {labels}; "
            f"budget {format_bytes(info.budget.ram)}{gpus})"
        )
        if not host_plan.models:
            lines.append("  (no models)")
        for name in host_plan.models:
            lines.append(_row(name, host_plan.estimates[name]))
            if name in host_plan.unplaceable:
                lines.append(f"    cannot run here: {host_plan.unplaceable[name]}")
        lines += _fit_lines(host_plan.fits)
    if plan.unplaced:
        lines.append(f"models that select no host: {', '.join(plan.unplaced)}")
    if plan.empty:
        lines.append(f"hosts left empty: {', '.join(plan.empty)}")
    return lines


def _github_lines(plan: FleetPlan, inventory: str) -> list[str]:
    def escape(value: str) -> str:
        return value.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")

    file = escape(inventory).replace(":", "%3A").replace(",", "%2C")
    lines = []
    for host_plan in plan.failing:
        for failure in host_plan.failures():
            lines.append(f"::error file={file},title=mr plan --fleet::{escape(failure)}")
    for model in plan.unplaced:
        lines.append(
            f"::warning file={file},title=mr plan --fleet::"
            f"{escape(f'model {model} selects no host of the inventory')}"
        )
    for host in plan.empty:
        lines.append(
            f"::warning file={file},title=mr plan --fleet::{escape(f'host {host} serves no model')}"
        )
    return lines
