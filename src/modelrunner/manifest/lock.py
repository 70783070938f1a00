"""The lock file (``models.lock`` beside the manifests): one manifest digest per reference.

``mr lock`` writes it; ``mr serve`` pulls and serves the locked digest whatever the tag
points to now, so two hosts reconciling the same commit serve the same weights. It is
YAML, sorted and written the same way every time, so a change reads well in a diff::

    lockVersion: 1
    references:
      - reference: ai/smollm2:latest
        digest: sha256:...
        format: gguf

It is not a manifest (its name does not end in .yaml). Reading it is pure and never
raises for bad input: every problem is a located ``Problem``, like a manifest's.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from modelrunner.errors import InvalidReference
from modelrunner.manifest.engines import ENGINE_FOR_FORMAT
from modelrunner.manifest.load import located, read_text
from modelrunner.manifest.problems import Path as JsonPath
from modelrunner.manifest.problems import Problem
from modelrunner.manifest.yamldoc import Position, YamlDocument, YamlSyntaxError, parse_documents
from modelrunner.reference import Reference, is_local_path, parse

LOCK_FILE: Final = "models.lock"
LOCK_VERSION: Final = 1
FORMATS: Final = tuple(ENGINE_FOR_FORMAT)
# A lock file's problems are located like a manifest's, under their own rule.
_locked: Final = functools.partial(located, rule="lock")
_DIGEST: Final = re.compile(r"sha256:[a-f0-9]{64}")
_HEADER: Final = (
    "# Written by `mr lock`: the manifest digest `mr serve` pulls for each reference.\n"
    "# Review it like code; `mr lock --check` fails when it is out of date.\n"
)


@dataclass(frozen=True, slots=True)
class LockEntry:
    reference: str  # the familiar form of the reference, as `lock_key` gives it
    digest: str
    format: str


@dataclass(frozen=True, slots=True)
class Lock:
    entries: Mapping[str, LockEntry] = field(default_factory=dict)  # lock_key -> entry
    file: str | None = None
    positions: Mapping[str, Position] = field(default_factory=dict)  # lock_key -> its entry

    def entry(self, model: str) -> LockEntry | None:
        key = lock_key(model)
        return None if key is None else self.entries.get(key)

    def pinned(self, model: str) -> str | None:
        """The reference to pull for a manifest's ``model``: its locked digest, or None."""
        entry = self.entry(model)
        if entry is None:
            return None
        ref = parse(entry.reference)
        return str(Reference(ref.registry, ref.repository, ref.tag, entry.digest))


def lock_key(model: str) -> str | None:
    """How a manifest's ``model`` is listed in the lock: its normalised familiar form;
    None for a local path or an invalid reference (neither is locked)."""
    if is_local_path(model):
        return None
    try:
        return parse(model).familiar
    except InvalidReference:
        return None


def lockable(models: Iterable[str]) -> list[str]:
    """The distinct lock keys of these manifest references, sorted."""
    return sorted({k for k in (lock_key(m) for m in models) if k is not None})


def render(entries: Iterable[LockEntry]) -> str:
    """The lock file's text: sorted by reference, one key per line, nothing quoted that
    need not be (references and digests never need it)."""
    lines = [_HEADER, f"lockVersion: {LOCK_VERSION}\n"]
    ordered = sorted(entries, key=lambda e: e.reference)
    lines.append("references:\n" if ordered else "references: []\n")
    for e in ordered:
        lines.append(f"  - reference: {e.reference}\n")
        lines.append(f"    digest: {e.digest}\n")
        lines.append(f"    format: {e.format}\n")
    return "".join(lines)


def read_lock(folder: Path, shown: str | None = None) -> tuple[Lock | None, list[Problem]]:
    """The lock file of a manifest folder; (None, []) when there is none."""

    path = folder / LOCK_FILE
    shown = shown or str(path)
    if not path.exists():
        return None, []
    text, problem = read_text(path, shown)
    if problem is not None or text is None:
        return Lock(file=shown), [problem] if problem is not None else []
    return parse_lock(text, shown)


def parse_lock(text: str, shown: str) -> tuple[Lock, list[Problem]]:
    try:
        documents = parse_documents(text)
    except YamlSyntaxError as exc:
        return Lock(file=shown), [_locked(shown, exc.position, (), exc.message, rule="yaml")]
    if len(documents) != 1:
        found = "no document" if not documents else f"{len(documents)} documents"
        at = Position(1, 1) if not documents else documents[1].start
        return Lock(file=shown), [
            _locked(shown, at, (), f"a lock file holds one document, not {found}")
        ]
    doc = documents[0]
    problems = [_locked(shown, i.position, i.path, i.message, rule=i.rule) for i in doc.issues]
    data = doc.data
    if not isinstance(data, dict):
        problems.append(_locked(shown, doc.start, (), "a lock file must be a mapping"))
        return Lock(file=shown), problems
    for key in data:
        if key not in ("lockVersion", "references"):
            problems.append(
                _at(
                    doc,
                    shown,
                    (key,),
                    f"unknown key {key!r} (allowed: lockVersion, references)",
                    True,
                )
            )
    if data.get("lockVersion") != LOCK_VERSION:
        problems.append(
            _at(
                doc,
                shown,
                ("lockVersion",),
                f"lockVersion must be {LOCK_VERSION}, got {data.get('lockVersion')!r}",
                "lockVersion" not in data,
            )
        )
    refs = data.get("references")
    if not isinstance(refs, list):
        problems.append(_at(doc, shown, ("references",), "references must be a list of entries"))
        refs = []
    entries: dict[str, LockEntry] = {}
    positions: dict[str, Position] = {}
    for i, item in enumerate(refs):
        entry, issues = _entry(doc, shown, i, item)
        problems.extend(issues)
        if entry is None:
            continue
        if entry.reference in entries:
            problems.append(
                _at(
                    doc,
                    shown,
                    ("references", i, "reference"),
                    f"{entry.reference} is locked twice (first at line "
                    f"{positions[entry.reference].line})",
                )
            )
            continue
        entries[entry.reference] = entry
        positions[entry.reference] = doc.position(("references", i))
    return Lock(entries, shown, positions), problems


def _entry(
    doc: YamlDocument, shown: str, i: int, item: Any
) -> tuple[LockEntry | None, list[Problem]]:
    here: JsonPath = ("references", i)
    if not isinstance(item, dict):
        return None, [
            _at(doc, shown, here, "an entry must be a mapping of reference, digest, format")
        ]
    problems = []
    for key in item:
        if key not in ("reference", "digest", "format"):
            problems.append(
                _at(
                    doc,
                    shown,
                    (*here, key),
                    f"unknown key {key!r} (allowed: reference, digest, format)",
                    True,
                )
            )
    for key in ("reference", "digest", "format"):
        if not isinstance(item.get(key), str):
            problems.append(_at(doc, shown, here, f"missing `{key}` (a string)", False))
    if problems:
        return None, problems
    reference, digest, fmt = item["reference"], item["digest"], item["format"]
    try:
        ref = parse(reference)
    except InvalidReference as exc:
        return None, [_at(doc, shown, (*here, "reference"), str(exc))]
    if ref.familiar != reference:
        problems.append(
            _at(
                doc,
                shown,
                (*here, "reference"),
                f"write the reference as {ref.familiar!r} "
                "(its normalised form, as `mr lock` writes it)",
            )
        )
    if not _DIGEST.fullmatch(digest):
        problems.append(
            _at(
                doc,
                shown,
                (*here, "digest"),
                f"digest must be sha256: and 64 lowercase hex digits, got {digest!r}",
            )
        )
    elif ref.digest is not None and ref.digest != digest:
        problems.append(
            _at(
                doc,
                shown,
                (*here, "digest"),
                f"the reference pins {ref.digest}, the entry locks {digest}",
            )
        )
    if fmt not in FORMATS:
        problems.append(
            _at(
                doc,
                shown,
                (*here, "format"),
                f"format must be one of {', '.join(FORMATS)}, got {fmt!r}",
            )
        )
    if problems:
        return None, problems
    return LockEntry(reference, digest, fmt), []


@dataclass(frozen=True, slots=True)
class LockDiff:
    """How a lock differs from what it should hold."""

    missing: tuple[str, ...] = ()  # references the manifests use that have no entry
    unused: tuple[str, ...] = ()  # entries no manifest uses
    moved: tuple[tuple[str, str, str], ...] = ()  # (reference, locked, now)

    def __bool__(self) -> bool:
        return bool(self.missing or self.unused or self.moved)

    def lines(self, file: str) -> list[str]:
        out = [f"{file}: {ref} is not locked; run `mr lock`" for ref in self.missing]
        out += [
            f"{file}: {ref} is locked but no manifest uses it; run `mr lock`" for ref in self.unused
        ]
        out += [moved_message(ref, old, new) for ref, old, new in self.moved]
        return out


def moved_message(reference: str, locked: str, now: str) -> str:
    return f"{reference} moved: {short(locked)} -> {short(now)}; run `mr lock` to take it"


def short(digest: str) -> str:
    """``sha256:`` and 12 hex digits, then an ellipsis: enough to tell digests apart."""
    return f"{digest[:19]}…"


def diff(lock: Lock | None, wanted: Mapping[str, str | None]) -> LockDiff:
    """``wanted``: lock key -> the digest it resolves to now (None: not asked)."""
    entries = lock.entries if lock is not None else {}
    missing = tuple(sorted(k for k in wanted if k not in entries))
    unused = tuple(sorted(k for k in entries if k not in wanted))
    moved = tuple(
        (k, entries[k].digest, now)
        for k, now in sorted(wanted.items())
        if k in entries and now is not None and now != entries[k].digest
    )
    return LockDiff(missing, unused, moved)


def folder_problems(lock: Lock, uses: Mapping[str, tuple[str, int, int]]) -> list[Problem]:
    """Warnings for ``mr lint``: references a manifest uses that the lock lacks (at the
    manifest's ``model``), and entries no manifest uses (at the entry).
    ``uses``: lock key -> (file, line, column) of a manifest's ``model``."""
    problems = []
    for key, (file, line, column) in sorted(uses.items()):
        if key not in lock.entries:
            problems.append(
                Problem(
                    file=file,
                    line=line,
                    column=column,
                    path="$.model",
                    message=f"{key} is not in {lock.file}; run `mr lock`",
                    severity="warning",
                    rule="lock",
                )
            )
    for key, entry in sorted(lock.entries.items()):
        if key not in uses:
            at = lock.positions.get(key, Position(1, 1))
            problems.append(
                _locked(
                    lock.file or LOCK_FILE,
                    at,
                    ("references",),
                    f"{entry.reference} is locked but no manifest uses it; run `mr lock`",
                    severity="warning",
                    rule="lock",
                )
            )
    return problems


def _at(
    doc: YamlDocument, shown: str, path: JsonPath, message: str, at_key: bool = False
) -> Problem:
    return _locked(shown, doc.position(path, at_key=at_key), path, message)
