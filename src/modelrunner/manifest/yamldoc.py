"""YAML text -> plain data, remembering where every key and value stands.

PyYAML's composer gives nodes with marks; we build the Python data ourselves so that
each JSON path maps to a line and column, duplicate keys are reported instead of silently
overwritten, and anchor/alias bombs (billion laughs) stop at a node budget instead of
eating memory.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Final

import yaml
from yaml.constructor import ConstructorError, SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from modelrunner.manifest.problems import Path, PathItem

MAX_NODES: Final = 20_000  # after alias expansion; a real manifest has a few dozen
MAX_DEPTH: Final = 64
_MERGE_TAG: Final = "tag:yaml.org,2002:merge"


@dataclass(frozen=True, slots=True)
class Position:
    line: int  # 1-based
    column: int  # 1-based


@dataclass(slots=True)
class YamlIssue:
    position: Position
    path: Path
    message: str
    rule: str = "yaml"


@dataclass
class YamlDocument:
    index: int
    data: Any
    start: Position
    values: dict[Path, Position] = field(default_factory=dict)
    keys: dict[Path, Position] = field(default_factory=dict)
    issues: list[YamlIssue] = field(default_factory=list)
    # Values that could not be read (bad tags); their issue says why, so the schema's
    # complaint about the placeholder left there would only repeat it.
    unreadable: set[Path] = field(default_factory=set)

    def is_unreadable(self, path: Path) -> bool:
        return any(path[: len(bad)] == bad for bad in self.unreadable)

    def value_at(self, path: Path) -> Position:
        """Where the value at ``path`` (or its nearest located parent) starts."""
        while path not in self.values and path:
            path = path[:-1]
        return self.values.get(path, self.start)

    def key_at(self, path: Path) -> Position:
        """Where the key of the entry at ``path`` stands (falls back to its value)."""
        return self.keys.get(path) or self.value_at(path)

    def position(self, path: Path, *, at_key: bool = False) -> Position:
        """Where a problem at ``path`` is reported. A value the document does not hold (a
        name taken from the file name, a missing key) is placed at its nearest parent."""
        return self.key_at(path) if at_key else self.value_at(path)


class YamlSyntaxError(Exception):
    def __init__(self, message: str, position: Position) -> None:
        super().__init__(message)
        self.message = message
        self.position = position


def _position(node: Node) -> Position:
    return Position(node.start_mark.line + 1, node.start_mark.column + 1)


def parse_documents(text: str) -> list[YamlDocument]:
    """Every non-empty document of ``text``; raise YamlSyntaxError on malformed YAML."""
    documents: list[YamlDocument] = []
    try:
        for index, node in enumerate(_compose_all(text)):
            if node is None or (isinstance(node, ScalarNode) and node.tag.endswith(":null")):
                continue
            doc = YamlDocument(index=index, data=None, start=_position(node))
            builder = _Builder(doc)
            doc.data = builder.build(node, (), 0)
            documents.append(doc)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        position = Position(mark.line + 1, mark.column + 1) if mark else Position(1, 1)
        problem = exc.problem or exc.context or "malformed YAML"
        if exc.problem and exc.context and exc.context_mark and exc.context_mark is not mark:
            problem += f" ({exc.context} at line {exc.context_mark.line + 1})"
        raise YamlSyntaxError(f"YAML syntax error: {problem}", position) from None
    except yaml.reader.ReaderError as exc:
        char = exc.character if isinstance(exc.character, int) else ord(exc.character)
        raise YamlSyntaxError(
            f"control character U+{char:04X} is not allowed in YAML",
            _offset_position(text, exc.position),
        ) from None
    except RecursionError:
        raise YamlSyntaxError("YAML nesting is too deep", Position(1, 1)) from None
    except yaml.YAMLError as exc:
        raise YamlSyntaxError(f"YAML error: {exc}", Position(1, 1)) from None
    return documents


def _compose_all(text: str) -> Iterator[Node | None]:
    loader = yaml.SafeLoader(text)
    try:
        while loader.check_node():
            yield loader.get_node()
    finally:
        loader.dispose()


def _offset_position(text: str, offset: int) -> Position:
    before = text[:offset]
    line = before.count("\n") + 1
    return Position(line, offset - (before.rfind("\n") + 1) + 1)


class _Budget(Exception):
    def __init__(self, message: str, position: Position) -> None:
        super().__init__(message)
        self.position = position


_PLAIN_TAGS: Final = {"tag:yaml.org,2002:map", "tag:yaml.org,2002:seq"}


class _Builder:
    def __init__(self, doc: YamlDocument) -> None:
        self.doc = doc
        self.nodes = 0
        self.constructor = SafeConstructor()

    def build(self, node: Node, path: Path, depth: int) -> Any:
        try:
            return self._build(node, path, depth)
        except _Budget as exc:
            self.doc.issues.append(YamlIssue(exc.position, (), str(exc), rule="yaml-limits"))
            return None

    def _build(self, node: Node, path: Path, depth: int) -> Any:
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise _Budget(
                f"document expands to more than {MAX_NODES} YAML nodes "
                "(an anchor/alias bomb?); manifests are small",
                _position(node),
            )
        if depth > MAX_DEPTH:
            raise _Budget(f"YAML nesting is deeper than {MAX_DEPTH} levels", _position(node))
        if not isinstance(node, ScalarNode) and node.tag not in _PLAIN_TAGS:
            self.doc.issues.append(
                YamlIssue(_position(node), path, f"unsupported YAML tag {node.tag!r}")
            )
            self.doc.unreadable.add(path)
            return None
        self.doc.values.setdefault(path, _position(node))
        if isinstance(node, MappingNode):
            return self._mapping(node, path, depth)
        if isinstance(node, SequenceNode):
            return [self._build(item, (*path, i), depth + 1) for i, item in enumerate(node.value)]
        return self._scalar(node, path)

    def _scalar(self, node: Node, path: Path) -> Any:
        try:
            return self.constructor.construct_object(node, deep=True)
        except (ConstructorError, ValueError, TypeError) as exc:
            problem = getattr(exc, "problem", None) or str(exc)
            self.doc.issues.append(
                YamlIssue(_position(node), path, f"cannot read value: {problem}", rule="yaml")
            )
            self.doc.unreadable.add(path)
            return None

    def _mapping(self, node: MappingNode, path: Path, depth: int) -> dict[str, Any]:
        out: dict[str, Any] = {}
        explicit: set[str] = set()
        merged: list[tuple[Node, Node]] = []
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG:
                merged.extend(self._merge_sources(value_node))
                continue
            key = self._key(key_node, path)
            if key is None:
                continue
            child: Path = (*path, key)
            if key in explicit:
                first = self.doc.keys[child]
                self.doc.issues.append(
                    YamlIssue(
                        _position(key_node),
                        child,
                        f"duplicate key {key!r} (first at line {first.line})",
                        rule="duplicate-key",
                    )
                )
                continue
            explicit.add(key)
            self.doc.keys[child] = _position(key_node)
            out[key] = self._build(value_node, child, depth + 1)
        # Merge keys (<<: *base) fill in what the mapping does not set itself.
        for key_node, value_node in merged:
            key = self._key(key_node, path)
            if key is None or key in out:
                continue
            child = (*path, key)
            self.doc.keys.setdefault(child, _position(key_node))
            out[key] = self._build(value_node, child, depth + 1)
        return out

    def _merge_sources(self, value_node: Node) -> list[tuple[Node, Node]]:
        sources = value_node.value if isinstance(value_node, SequenceNode) else [value_node]
        pairs: list[tuple[Node, Node]] = []
        for source in sources:
            if isinstance(source, MappingNode):
                pairs.extend(source.value)
            else:
                self.doc.issues.append(
                    YamlIssue(_position(source), (), "a merge key (<<) needs a mapping")
                )
        return pairs

    def _key(self, key_node: Node, path: Path) -> str | None:
        if isinstance(key_node, ScalarNode):
            key = self._scalar(key_node, path)
            if isinstance(key, str):
                return key
        shown: PathItem = (
            getattr(key_node, "value", "?") if isinstance(key_node, ScalarNode) else "?"
        )
        self.doc.issues.append(
            YamlIssue(
                _position(key_node), path, f"keys must be strings, got {shown!r}", rule="yaml"
            )
        )
        return None
