"""``mr lock``: resolve every manifest's reference in its registry and write the lock file
(``models.lock`` beside the manifests); ``--check`` says whether it is up to date (for CI)."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelrunner.errors import UsageError

if TYPE_CHECKING:
    from modelrunner.manifest.lock import LockEntry
    from modelrunner.store.store import Store


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "lock",
        help="pin every manifest's reference to its registry digest (models.lock)",
        description="Resolve the reference of every manifest in --models-dir in its registry "
        "and write models.lock there: one entry per reference (reference, manifest digest, "
        "weight format), sorted. `mr serve` then serves the locked digests, whatever the tags "
        "point to later. With --check, write nothing: exit 1 when an entry is missing, no "
        "longer used, or no longer what the registry says (a moved tag).",
    )
    parser.add_argument("folder", nargs="?", type=Path, help="manifest folder (as --models-dir)")
    parser.add_argument("--models-dir", type=Path, help="manifest folder (default models.d)")
    parser.add_argument("--check", action="store_true", help="check the lock, write nothing")
    parser.set_defaults(run=run)


def open_store() -> Store:
    from modelrunner.settings import from_env
    from modelrunner.store.store import Store

    settings = from_env()
    return Store(settings.store_dir, settings.insecure_registries)


def resolve_all(store: Store, keys: Iterable[str]) -> tuple[dict[str, LockEntry], dict[str, str]]:
    """Per lock key, what its registry holds now (an entry), or why it could not be asked."""
    from modelrunner.errors import ModelRunnerError
    from modelrunner.manifest.lock import LockEntry

    entries: dict[str, LockEntry] = {}
    failures: dict[str, str] = {}
    for key in keys:
        try:
            digest, fmt = store.remote_digest(key)
        except ModelRunnerError as exc:
            failures[key] = str(exc)
            continue
        entries[key] = LockEntry(key, digest, fmt)
    return entries, failures


def run(args: argparse.Namespace) -> int:
    from modelrunner.manifest import lock as lockfile
    from modelrunner.manifest.load import load_folder
    from modelrunner.settings import from_env

    folder = from_env(models_dir=args.folder or args.models_dir).models_dir
    if not folder.is_dir():
        raise UsageError(f"mr lock: {folder}: no such folder")
    result = load_folder(folder)
    if result.errors:
        for problem in result.errors:
            print(problem, file=sys.stderr)
        print("mr lock: fix the manifests first (mr lint)", file=sys.stderr)
        return 1
    path = folder / lockfile.LOCK_FILE
    old, problems = lockfile.read_lock(folder)
    for problem in problems:
        print(problem, file=sys.stderr)
    keys = lockfile.lockable(m.spec.model for m in result.manifests)
    entries, failures = resolve_all(open_store(), keys)
    for key, error in failures.items():
        print(f"mr lock: {key}: {error}", file=sys.stderr)
    if failures:
        return 1
    text = lockfile.render(entries.values())
    changes = lockfile.diff(old, {k: e.digest for k, e in entries.items()})
    if args.check:
        for line in changes.lines(str(path)):
            print(line)
        current = path.read_text(encoding="utf-8") if path.is_file() else None
        if changes or problems or current != text:
            if not changes and not problems:
                print(f"{path}: not as `mr lock` writes it (order or layout); run `mr lock`")
            return 1
        print(f"{path}: up to date ({len(entries)} reference(s))")
        return 0
    _write(path, text)
    for line in _summary(changes, entries):
        print(line)
    print(f"{path}: {len(entries)} reference(s) locked")
    return 0


def _summary(changes: Any, entries: dict[str, LockEntry]) -> list[str]:
    from modelrunner.manifest.lock import short

    out = [f"+ {k} {short(entries[k].digest)}" for k in changes.missing]
    out += [f"~ {k} {short(old)} -> {short(new)}" for k, old, new in changes.moved]
    out += [f"- {k}" for k in changes.unused]
    return out


def _write(path: Path, text: str) -> None:
    """Atomically: a reconcile pass never reads half a lock file."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def gather_drift(
    folder: Path, models: list[dict[str, Any]], desired_files: dict[str, str]
) -> list[Any]:
    """``mr plan``'s drift: asks the registry for every locked tag, and the local store
    (when this is the server's host) about every served digest; then ``reconcile.drift``
    compares. ``models``: the server's status records."""
    from modelrunner.errors import DigestMismatch, ModelRunnerError
    from modelrunner.manifest.lock import read_lock
    from modelrunner.reconcile.drift import Served, drift
    from modelrunner.reference import Reference, is_local_path, parse

    lock, _ = read_lock(folder)  # its problems are `mr lint`'s (and shown by the server)
    store = open_store()
    remote: dict[str, str] = {}
    for key in sorted(lock.entries) if lock is not None else []:
        if parse(key).digest is not None:
            continue  # a digest cannot move
        try:
            remote[key], _ = store.remote_digest(key)
        except ModelRunnerError as exc:
            print(f"mr plan: {key}: cannot ask its registry: {exc}", file=sys.stderr)
    served = [
        Served(
            m["name"],
            m.get("reference"),
            m.get("digest"),
            m.get("file"),
            m.get("phase") or "",
            m.get("last_error"),
        )
        for m in models
        if m.get("phase") != "elsewhere"
    ]
    corrupted: dict[str, str] = {}
    for model in served:
        if not model.digest or not model.reference or is_local_path(model.reference):
            continue
        try:
            ref = parse(model.reference)
            store.check_intact(Reference(ref.registry, ref.repository, None, model.digest))
        except DigestMismatch as exc:
            corrupted[model.name] = str(exc)
        except ModelRunnerError:
            continue  # not in this store: the server runs elsewhere
    return drift(lock, remote, served, desired_files, corrupted)
