"""``mr status`` and ``mr plan``: what the server runs, and what a reconcile would change."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def register(subparsers: Any) -> None:
    status = subparsers.add_parser(
        "status",
        help="per-model status of the running server",
        description="Ask the "
        "running server (MR_HOST, MR_PORT) for each model's phase, instance and last error.",
    )
    status.add_argument("--json", action="store_true", help="print JSON")
    status.add_argument("--url", help="server URL (default http://$MR_HOST:$MR_PORT)")
    status.set_defaults(run=run_status)

    plan = subparsers.add_parser(
        "plan",
        help="what a reconcile would do now (dry run)",
        description="Compare the manifests of --models-dir with what the running server "
        "applied, like `terraform plan`, and estimate the memory of the models this host "
        "(MR_HOST_NAME, MR_HOST_LABELS) serves against its budget (MR_MEMORY_BUDGET). "
        "Drift is named too (a locked tag that moved in its registry, a served digest that is "
        "not the locked one, a model failing on the host, a stored blob that no longer "
        "matches its digest). Exit 0: nothing to do; 2: changes pending or drift; "
        "1: manifests have errors or the models "
        "do not fit. With --fleet INVENTORY: per inventory host, the models it would serve "
        "and whether they fit; exit 1 when a host is over-committed or cannot run a model.",
    )
    plan.add_argument("folder", nargs="?", type=Path, help="manifest folder (as --models-dir)")
    plan.add_argument("--models-dir", type=Path, help="manifest folder (default models.d)")
    plan.add_argument("--url", help="server URL (default http://$MR_HOST:$MR_PORT)")
    plan.add_argument("--json", action="store_true", help="print JSON (as --format json)")
    plan.add_argument(
        "--fleet",
        type=Path,
        metavar="INVENTORY",
        help="plan every host of an inventory (hosts.yaml) instead of asking a server",
    )
    plan.add_argument(
        "--format", choices=("text", "json", "github"), default=None, help="output format"
    )
    plan.set_defaults(run=run_plan)

    logs = subparsers.add_parser(
        "logs",
        help="an engine instance's log",
        description="Print the log of the instance serving MODEL (a name or alias, asked of "
        "the running server), or of an instance id. Logs live in MR_LOG_DIR.",
    )
    logs.add_argument("model", metavar="MODEL", help="a served model, or an instance id")
    logs.add_argument("-n", "--lines", type=int, default=50, help="last N lines (0: all)")
    logs.add_argument("-f", "--follow", action="store_true", help="keep printing new lines")
    logs.add_argument("--url", help="server URL (default http://$MR_HOST:$MR_PORT)")
    logs.set_defaults(run=run_logs)


def _get(base: str, path: str) -> tuple[list[dict[str, Any]] | None, str | None]:
    """The list the server answers at ``path`` (with MR_API_KEY), or why there is none."""
    import os

    import httpx

    from modelrunner.cli.run import api_key

    key = api_key(os.environ)
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    try:
        response = httpx.get(f"{base}{path}", headers=headers, timeout=10.0)
    except httpx.HTTPError as exc:
        return None, f"no server at {base}: {exc}"
    if response.status_code != 200:
        return None, f"{base}{path} answered {response.status_code}: {response.text[:200]}"
    try:
        data: list[dict[str, Any]] = response.json()
    except ValueError:
        return None, f"{base}{path} did not answer JSON: {response.text[:200]}"
    return data, None


def _fetch_status(url: str | None) -> tuple[str, list[dict[str, Any]] | None, str | None]:
    import os

    from modelrunner.cli.run import server_url

    base = url or server_url(os.environ)
    models, error = _get(base, "/status")
    return base, models, error


def run_status(args: argparse.Namespace) -> int:
    base, models, error = _fetch_status(args.url)
    if models is None:
        print(f"mr status: {error}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(models, indent=2))
        return 0
    if not models:
        print(f"{base}: no models")
    rows = [("MODEL", "PHASE", "ENGINE", "THREADS", "INSTANCE", "FILE")]
    rows += [
        (
            m["name"],
            m.get("phase") or "",
            m.get("engine") or "",
            str(m.get("threads") or ""),
            m.get("instance") or "",
            m.get("file") or "",
        )
        for m in models
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows if models else []:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    for m in models:
        if m.get("phase") == "elsewhere" and m.get("placement"):
            print(f"\n{m['name']}: placed on {m['placement']}")
        if m.get("cluster"):
            print(f"\n{m['name']}: uses the Ray cluster at {m['cluster']}")
        if m.get("rollout"):
            print(f"\n{m['name']}: {_rollout_lines(m['rollout'])}")
        if m.get("last_error"):
            print(f"\n{m['name']}: {m['last_error']}")
        if m.get("removed_from_store"):
            print(
                f"\n{m['name']}: removed from the store (mr rm --force) while served; "
                "its files are kept until this instance stops"
            )
    problems, _ = _get(base, "/problems")
    if problems:
        print("\nmanifest problems:")
        for p in problems:
            where = f"{p['file']}:{p['line']}:{p['column']}: {p['path']}"
            print(f"  {where}: {p['severity']}: {p['message']}")
    return 0


def _rollout_notes(actions: Any, state: Any, memory: dict[str, Any]) -> dict[str, str]:
    """Per replaced model with a rollout: a canary, or a plain replace when this host's
    memory cannot hold both revisions (said before it happens)."""
    from modelrunner.rollout import fits_twice, plan_note

    needs = {n: (m["need_bytes"], m["device"]) for n, m in memory["models"].items()}
    budgets = {"ram": memory["budget_bytes"], "gpu": memory["gpu_budget_bytes"]}
    notes = {}
    for action in actions:
        desired = state.models.get(action.name)
        rollout = desired.spec.rollout if desired is not None else None
        if action.kind == "replace" and rollout is not None and action.name in needs:
            fits = fits_twice(action.name, needs, budgets)
            notes[action.name] = plan_note(rollout.canary_percent, rollout.window, fits)
    return notes


def _threads(actions: Any, state: Any) -> dict[str, int]:
    """The llama.cpp threads each started model will run with (the default: this host's
    physical cores), said before it starts."""
    from modelrunner.engines.llamacpp.launch import threads_in_effect

    found = {}
    for action in actions:
        desired = state.models.get(action.name)
        starts = action.kind in ("create", "replace", "retry")
        if starts and desired is not None and desired.spec.declared_engine == "llama.cpp":
            found[action.name] = threads_in_effect(desired.spec)
    return found


def _rollout_lines(rollout: dict[str, Any]) -> str:
    """``canary (canary: 3 of 40 requests failed ...)`` and a line per revision."""
    detail = f" ({rollout['detail']})" if rollout.get("detail") else ""
    lines = [f"rollout {rollout['phase']}{detail}"]
    for r in rollout.get("revisions") or []:
        lines.append(
            f"  {r['role']:<6} {r['revision']}  {r['percent']:>3}%  "
            f"{r['requests']} requests, {r['errors']} failed"
        )
    return "\n".join(lines)


_SYMBOL = {"create": "+", "replace": "~", "update": "~", "retire": "-", "hold": "!", "retry": "~"}


def run_plan(args: argparse.Namespace) -> int:
    import os

    from modelrunner.cli.fleet import host_memory_report, run_fleet
    from modelrunner.cli.lock import gather_drift
    from modelrunner.manifest.load import load_folder
    from modelrunner.manifest.lock import read_lock
    from modelrunner.placement import host_from_env
    from modelrunner.reconcile.changes import Keys
    from modelrunner.reconcile.desired import desired_state
    from modelrunner.reconcile.plan import Observed, plan
    from modelrunner.settings import from_env

    settings = from_env(models_dir=args.folder or args.models_dir)
    folder = settings.models_dir
    if not folder.is_dir():
        print(f"mr plan: {folder}: no such folder", file=sys.stderr)
        return 2
    args.format = args.format or ("json" if args.json else "text")
    if args.fleet is not None:
        return run_fleet(args, folder, settings)
    base, models, error = _fetch_status(args.url)
    if models is None:
        print(f"mr plan: {error}; planning against an empty host", file=sys.stderr)
        models = []
    observed = {
        m["name"]: Observed(
            m["name"],
            Keys(m.get("in_place_key") or "", m.get("restart_key") or "", m.get("pull_key") or ""),
            m.get("file") or "",
            failed=m.get("phase") == "failed",
        )
        for m in models
        if m.get("phase") != "elsewhere"  # listed there, but not applied there
    }
    result = load_folder(folder)
    lock, _ = read_lock(folder)
    applied = {name: o.file for name, o in observed.items()}
    state = desired_state(result, applied, host_from_env(), lock)
    actions = [a for a in plan(state, observed) if a.kind != "noop"]
    pending = [a for a in actions if a.kind != "hold"]
    here = [m for m in result.manifests if m.spec.name in state.models]
    memory_lines, fits, memory = host_memory_report(here, settings, os.environ)
    drifts = gather_drift(folder, models, {n: d.file for n, d in state.models.items()})
    notes = _rollout_notes(actions, state, memory)
    threads = _threads(actions, state)
    if args.format == "json":
        print(
            json.dumps(
                {
                    "actions": [
                        {
                            "model": a.name,
                            "action": a.kind,
                            "reason": a.reason,
                            "rollout": notes.get(a.name),
                            "threads": threads.get(a.name),
                        }
                        for a in actions
                    ],
                    "problems": [str(p) for p in result.problems],
                    "elsewhere": sorted(state.elsewhere),
                    "memory": memory,
                    "drift": [d.as_json() for d in drifts],
                },
                indent=2,
            )
        )
    else:
        for problem in result.problems:
            print(problem, file=sys.stderr)
        for action in actions:
            note = notes.get(action.name)
            reason = f"{action.reason}; {note}" if note else action.reason
            if action.name in threads:
                reason += f"; llama.cpp threads: {threads[action.name]}"
            print(f"{_SYMBOL.get(action.kind, '?')} {action.kind:<8} {action.name}  ({reason})")
        for found in drifts:
            print(f"! drift    {found.message}")
        print(f"{len(pending)} change(s) pending against {base}" if pending else "no changes")
        if drifts:
            print(f"{len(drifts)} drift(s) from what the repository says")
        if state.elsewhere:
            print(f"placed on other hosts: {', '.join(sorted(state.elsewhere))}")
        print("\n".join(memory_lines))
    if not fits:
        print("mr plan: the models of this host do not fit its memory budget", file=sys.stderr)
    if result.errors or not fits:
        return 1
    return 2 if pending or drifts else 0


def run_logs(args: argparse.Namespace) -> int:
    import time

    from modelrunner.settings import from_env

    log_dir = from_env().log_dir
    instance = args.model
    _, models, _ = _fetch_status(args.url)
    for model in models or []:
        if args.model == model["name"] or args.model in (model.get("aliases") or []):
            instance = model.get("instance")
            if not instance:
                print(f"mr logs: {model['name']} has no instance now ({model['phase']})")
                return 1
    path = log_dir / f"{instance}.log"
    if not path.is_file():
        known = sorted(p.stem for p in log_dir.glob("*.log")) if log_dir.is_dir() else []
        hint = f"; instances with logs: {', '.join(known)}" if known else ""
        print(f"mr logs: no log for {args.model!r} in {log_dir}{hint}", file=sys.stderr)
        return 1
    with path.open(encoding="utf-8", errors="replace") as handle:
        lines = handle.readlines()
        shown = lines[-args.lines :] if args.lines > 0 else lines
        sys.stdout.writelines(shown)
        while args.follow:
            line = handle.readline()
            if line:
                sys.stdout.write(line)
                sys.stdout.flush()
            else:
                time.sleep(0.2)
    return 0
