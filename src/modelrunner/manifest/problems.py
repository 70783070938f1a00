"""A located problem in a manifest: what is wrong and exactly where."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import msgspec

Severity = Literal["error", "warning"]
PathItem = str | int
Path = tuple[PathItem, ...]


class Problem(msgspec.Struct, frozen=True, kw_only=True):
    file: str
    line: int
    column: int
    path: str
    message: str
    severity: Severity = "error"
    rule: str = "schema"

    def __str__(self) -> str:
        prefix = "warning: " if self.severity == "warning" else ""
        return f"{self.file}:{self.line}:{self.column}: {self.path}: {prefix}{self.message}"


def json_path(path: Sequence[PathItem]) -> str:
    """``$.vllm.hf_overrides.x``; keys that are not plain words go in brackets.

    ``("llama.cpp", "threads")`` -> ``$['llama.cpp'].threads``
    """
    out = "$"
    for item in path:
        if isinstance(item, int):
            out += f"[{item}]"
        elif item.isidentifier():
            out += f".{item}"
        else:
            out += "[" + repr(item) + "]"
    return out
