"""Manifest files -> validated specs plus every located problem.

``load_file`` reads one file (size limit, UTF-8, YAML, schema, Structs, per-manifest
checks); ``load_paths`` adds the cross-file checks for each folder. Nothing here raises
for bad input: every problem comes back as a ``Problem`` with file, line and column.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import msgspec

from modelrunner.manifest import checks, schema
from modelrunner.manifest.files import SUFFIXES, list_manifests
from modelrunner.manifest.problems import Path as JsonPath
from modelrunner.manifest.problems import Problem, Severity, json_path
from modelrunner.manifest.spec import ModelManifest
from modelrunner.manifest.yamldoc import (
    Position,
    YamlDocument,
    YamlSyntaxError,
    parse_documents,
)

MAX_FILE_BYTES: Final = 1024 * 1024


@dataclass(frozen=True)
class LoadedManifest:
    spec: ModelManifest
    file: str
    document: YamlDocument = field(repr=False, compare=False)

    @property
    def content_hash(self) -> str:
        return hashlib.sha256(msgspec.json.encode(self.spec)).hexdigest()

    def where(self, path: JsonPath) -> str:
        position = self.document.position(path)
        return f"{self.file}:{position.line}:{position.column}"


@dataclass
class LoadResult:
    manifests: list[LoadedManifest] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    files: list[str] = field(default_factory=list)

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "warning"]

    @property
    def failed_files(self) -> set[str]:
        """Files with at least one error: the server keeps their last good state."""
        return {p.file for p in self.errors}

    def extend(self, other: LoadResult) -> None:
        self.manifests.extend(other.manifests)
        self.problems.extend(other.problems)
        self.files.extend(other.files)


def located(
    file: str,
    at: Position,
    path: JsonPath,
    message: str,
    *,
    severity: Severity = "error",
    rule: str = "schema",
) -> Problem:
    return Problem(
        file=file,
        line=at.line,
        column=at.column,
        path=json_path(path),
        message=message,
        severity=severity,
        rule=rule,
    )


def read_text(path: Path, shown: str) -> tuple[str | None, Problem | None]:
    """The file's text, or the problem that stops us reading it."""
    start = Position(1, 1)
    try:
        with path.open("rb") as handle:
            raw = handle.read(MAX_FILE_BYTES + 1)
    except IsADirectoryError:
        return None, located(shown, start, (), "is a folder, not a manifest file", rule="io")
    except OSError as exc:
        return None, located(shown, start, (), f"cannot read: {exc.strerror}", rule="io")
    if len(raw) > MAX_FILE_BYTES:
        size = path.stat().st_size / (1024 * 1024)
        return None, located(
            shown,
            start,
            (),
            f"file is {size:.1f} MiB; a manifest file may hold at most 1 MiB",
            rule="file-size",
        )
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        before = raw[: exc.start]
        line = before.count(b"\n") + 1
        column = len(before[before.rfind(b"\n") + 1 :].decode("utf-8", "replace")) + 1
        return None, located(
            shown,
            Position(line, column),
            (),
            f"not UTF-8: byte 0x{raw[exc.start]:02x} cannot be decoded",
            rule="encoding",
        )
    return text, None


def load_file(path: Path, shown: str | None = None) -> LoadResult:
    shown = shown or str(path)
    text, problem = read_text(path, shown)
    if problem is not None or text is None:
        result = LoadResult(files=[shown])
        result.problems.append(problem or located(shown, Position(1, 1), (), "unreadable"))
        return result
    return load_text(text, shown, _stem(path.name))


def load_text(text: str, shown: str, stem: str | None = None) -> LoadResult:
    """Manifests of one file's text; ``stem`` names a lone manifest that has no ``name``."""
    result = LoadResult(files=[shown])
    try:
        documents = parse_documents(text)
    except YamlSyntaxError as exc:
        result.problems.append(located(shown, exc.position, (), exc.message, rule="yaml"))
        return result
    if not documents:
        result.problems.append(
            located(shown, Position(1, 1), (), "file holds no manifest (it is empty)", rule="empty")
        )
        return result
    for doc in documents:
        manifest, problems = load_document(doc, shown, stem if len(documents) == 1 else None)
        result.problems.extend(problems)
        if manifest is not None:
            result.manifests.append(manifest)
    return result


def load_document(
    doc: YamlDocument, file: str, default_name: str | None
) -> tuple[LoadedManifest | None, list[Problem]]:
    problems = [
        located(file, issue.position, issue.path, issue.message, rule=issue.rule)
        for issue in doc.issues
    ]
    data = doc.data
    if data is None and problems:
        return None, problems  # the YAML could not be read; that problem says why
    if not isinstance(data, dict):
        got = "a list" if isinstance(data, list) else f"{type(data).__name__} {data!r}"[:80]
        problems.append(located(file, doc.start, (), f"a manifest must be a mapping, got {got}"))
        return None, problems
    data = prepare(data, default_name)
    if "name" not in data:
        problems.append(
            located(
                file,
                doc.start,
                (),
                "missing `name`: a file with several documents must name each model",
            )
        )
    for found in schema.check(data):
        if doc.is_unreadable(found.path):
            continue
        at = doc.position(found.path, at_key=found.at_key)
        problems.append(located(file, at, found.path, found.message))
    for finding in checks.check_manifest(data):
        at = doc.position(finding.path, at_key=finding.at_key)
        problems.append(
            located(
                file,
                at,
                finding.path,
                finding.message,
                severity=finding.severity,
                rule=finding.rule,
            )
        )
    if any(p.severity == "error" for p in problems):
        return None, problems
    try:
        spec = msgspec.convert(data, ModelManifest)
    except msgspec.ValidationError as exc:
        # The agreement test keeps this unreachable; if it ever happens, still say where.
        problems.append(located(file, doc.start, (), f"invalid manifest: {exc}", rule="spec"))
        return None, problems
    return LoadedManifest(spec=spec, file=file, document=doc), problems


def prepare(data: dict[str, Any], default_name: str | None) -> dict[str, Any]:
    """The document as the schema and the Structs see it: the name filled in from the file."""
    if "name" not in data and default_name is not None:
        return {**data, "name": default_name}
    return data


def _stem(filename: str) -> str:
    for suffix in SUFFIXES:
        if filename.endswith(suffix):
            return filename[: -len(suffix)]
    return filename


def cross_check(manifests: Sequence[LoadedManifest]) -> tuple[list[LoadedManifest], list[Problem]]:
    """Drop manifests whose served names collide with another's; report every collision."""
    uses = []
    for owner, loaded in enumerate(manifests):
        name_path: JsonPath = ("name",)
        uses.append(checks.NameUse(loaded.spec.name, owner, name_path, loaded.where(name_path)))
        for i, alias in enumerate(loaded.spec.aliases):
            alias_path: JsonPath = ("aliases", i)
            uses.append(checks.NameUse(alias, owner, alias_path, loaded.where(alias_path)))
    conflicts = checks.name_conflicts(uses)
    problems = []
    for conflict in conflicts:
        loaded = manifests[conflict.owner]
        at = loaded.document.position(conflict.path)
        problems.append(
            located(loaded.file, at, conflict.path, conflict.message, rule="duplicate-name")
        )
    bad = {c.owner for c in conflicts}
    return [m for i, m in enumerate(manifests) if i not in bad], problems


def load_folder(folder: Path) -> LoadResult:
    """Every manifest of one folder (the set a host serves), with cross-file checks."""
    return load_group([(p, str(p)) for p in list_manifests(folder)])


def load_group(files: Iterable[tuple[Path, str]]) -> LoadResult:
    result = LoadResult()
    for path, shown in files:
        result.extend(load_file(path, shown))
    result.manifests, conflicts = cross_check(result.manifests)
    result.problems.extend(conflicts)
    return result
