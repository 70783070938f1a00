"""``mr lint [PATH...]``: check manifests before they reach a host."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from modelrunner.errors import UsageError


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "lint",
        help="check manifests (files or folders; default models.d/)",
        description="Check model manifests against the schema and each other. "
        "Exit 0 when clean, 1 when problems were found, 2 on usage errors.",
    )
    parser.add_argument("paths", nargs="*", metavar="PATH", help="manifest files or folders")
    parser.add_argument(
        "--format", choices=("text", "json", "github"), default="text", help="output format"
    )
    parser.add_argument("--strict", action="store_true", help="treat warnings as errors")
    parser.add_argument(
        "--inventory",
        type=Path,
        metavar="HOSTS",
        help="a fleet inventory (hosts.yaml): warn on placements that match none of its hosts",
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from modelrunner.manifest.files import list_manifests
    from modelrunner.manifest.load import LoadResult, load_group
    from modelrunner.manifest.lock import LOCK_FILE

    paths = [Path(p) for p in args.paths] or [Path("models.d")]
    # Names must be unique per folder (the set one host serves), so group by folder.
    groups: dict[Path, list[tuple[Path, str]]] = {}
    locks: dict[Path, Path] = {}  # folder -> the lock file beside its manifests, as shown
    for path in paths:
        if path.is_dir():
            try:
                listed = list_manifests(path)
            except OSError as exc:
                raise UsageError(f"mr lint: {path}: cannot list folder: {exc.strerror}") from None
            groups.setdefault(path.resolve(), []).extend((f, str(f)) for f in listed)
            if (path / LOCK_FILE).exists():
                locks[path.resolve()] = path
        elif path.name == LOCK_FILE and path.exists():
            locks[path.resolve().parent] = path.parent  # a lock file is checked, not loaded
        elif path.exists():
            groups.setdefault(path.resolve().parent, []).append((path, str(path)))
        else:
            raise UsageError(f"mr lint: {path}: no such file or folder")

    result = LoadResult()
    for folder, files in groups.items():
        loaded = load_group(files)
        result.extend(loaded)
        if folder in locks:
            result.problems.extend(_lock_problems(locks.pop(folder), loaded))
    for shown in locks.values():  # lock files named without their folder's manifests
        result.problems.extend(_lock_problems(shown, None))
    if args.inventory is not None:
        result.problems.extend(_inventory_problems(result, args.inventory))
    problems = sorted(result.problems, key=lambda p: (p.file, p.line, p.column, p.message))
    if args.strict:
        problems = [_as_error(p) for p in problems]
    errors = sum(p.severity == "error" for p in problems)
    warnings = len(problems) - errors

    if args.format == "json":
        print(json.dumps([_to_json(p) for p in problems], indent=2))
    else:
        for problem in problems:
            print(_github(problem) if args.format == "github" else str(problem))
    summary = (
        f"{len(result.files)} file(s), {len(result.manifests)} valid manifest(s): "
        f"{errors} error(s), {warnings} warning(s)"
    )
    print(summary, file=sys.stderr)
    return 1 if errors else 0


def _lock_problems(folder: Path, loaded: Any) -> list[Any]:
    """The lock file's own problems, located; with the folder's manifests, also the
    references it lacks (at the manifest's `model`) and the entries no manifest uses."""
    from modelrunner.manifest.lock import folder_problems, lock_key, read_lock

    lock, problems = read_lock(folder)
    if lock is None or loaded is None or any(p.severity == "error" for p in problems):
        return problems
    uses: dict[str, tuple[str, int, int]] = {}
    for manifest in loaded.manifests:
        key = lock_key(manifest.spec.model)
        if key is not None and key not in uses:
            at = manifest.document.position(("model",))
            uses[key] = (manifest.file, at.line, at.column)
    return [*problems, *folder_problems(lock, uses)]


def _inventory_problems(result: Any, inventory: Path) -> list[Any]:
    """Warnings for placements that select nothing in the inventory, located."""
    from modelrunner.fleet import read_inventory, selector_findings
    from modelrunner.manifest.problems import Problem, json_path

    try:
        hosts = [h.host for h in read_inventory(inventory)]
    except ValueError as exc:
        raise UsageError(f"mr lint: {exc}") from None
    problems = []
    for loaded in result.manifests:
        for path, message in selector_findings(loaded.spec.placement, hosts):
            at = loaded.document.position(path, at_key=isinstance(path[-1], str))
            problems.append(
                Problem(
                    file=loaded.file,
                    line=at.line,
                    column=at.column,
                    path=json_path(path),
                    message=message,
                    severity="warning",
                    rule="placement-inventory",
                )
            )
    return problems


def _as_error(problem: Any) -> Any:
    import msgspec

    return msgspec.structs.replace(problem, severity="error")


def _to_json(problem: Any) -> dict[str, Any]:
    import msgspec

    data: dict[str, Any] = msgspec.to_builtins(problem)
    return data


def _github(problem: Any) -> str:
    # Workflow commands: properties escape %, \r, \n, ',' and ':'; the message escapes %, \r, \n.
    def prop(value: str) -> str:
        return (
            value.replace("%", "%25")
            .replace("\r", "%0D")
            .replace("\n", "%0A")
            .replace(":", "%3A")
            .replace(",", "%2C")
        )

    def data(value: str) -> str:
        return value.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")

    return (
        f"::{problem.severity} file={prop(problem.file)},line={problem.line},"
        f"col={problem.column},title={prop('mr lint ' + problem.rule)}::"
        f"{data(problem.path + ': ' + problem.message)}"
    )
