"""The scalar metadata of a GGUF file's header, read in milliseconds.

``gguf.GGUFReader`` (store/gguf_meta.py) builds every field, tokenizer vocabularies
included, which takes seconds; the memory estimate needs a handful of counts before each
start. This walks the key/value section once, keeps scalars and short integer arrays, and
skips the rest by length. Format: https://github.com/ggml-org/ggml/blob/master/docs/gguf.md
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import BinaryIO, Final

from modelrunner.errors import StoreError

_MAGIC: Final = b"GGUF"
# value type -> struct format (little-endian) of one element
_SCALAR: Final = {
    0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?",
    10: "<Q", 11: "<q", 12: "<d",
}  # fmt: skip
_STRING: Final = 8
_ARRAY: Final = 9
_MAX_KEEP: Final = 4096  # integer arrays up to this many items are kept (per-layer counts)
_MAX_STRING: Final = 1 << 20


class _Truncated(Exception):
    pass


def _read(handle: BinaryIO, size: int) -> bytes:
    data = handle.read(size)
    if len(data) != size:
        raise _Truncated
    return data


def _u(handle: BinaryIO, fmt: str) -> int:
    value: int = struct.unpack(fmt, _read(handle, struct.calcsize(fmt)))[0]
    return value


def _string(handle: BinaryIO) -> str:
    length = _u(handle, "<Q")
    if length > _MAX_STRING:
        raise StoreError(f"a GGUF string of {length} bytes")
    return _read(handle, length).decode("utf-8", "replace")


def _text(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:f}"
    return str(value)


def _value(handle: BinaryIO, kind: int) -> str | None:
    """The value as gguf_meta writes it (arrays joined by ', '), or None when skipped."""
    if kind == _STRING:
        return _string(handle)
    if kind in _SCALAR:
        return _text(struct.unpack(_SCALAR[kind], _read(handle, struct.calcsize(_SCALAR[kind])))[0])
    if kind != _ARRAY:
        raise StoreError(f"unknown GGUF value type {kind}")
    item, count = _u(handle, "<I"), _u(handle, "<Q")
    if item in _SCALAR:
        size = struct.calcsize(_SCALAR[item])
        if count > _MAX_KEEP:
            handle.seek(size * count, 1)
            return None
        values = struct.unpack(f"<{count}{_SCALAR[item][1]}", _read(handle, size * count))
        return ", ".join(_text(v) for v in values)
    if item == _STRING:
        for _ in range(count):
            handle.seek(_u(handle, "<Q"), 1)
        return None
    for _ in range(count):  # arrays of arrays: walk them
        _value(handle, item)
    return None


def read_header(path: Path) -> dict[str, str]:
    """Every scalar (and short numeric array) of the header, values as strings."""
    try:
        with path.open("rb") as handle:
            if _read(handle, 4) != _MAGIC:
                raise StoreError(f"{path}: not a GGUF file (no GGUF magic)")
            version = _u(handle, "<I")
            if version < 2:
                raise StoreError(f"{path}: GGUF version {version} is not supported")
            _u(handle, "<Q")  # tensor count
            fields: dict[str, str] = {}
            for _ in range(_u(handle, "<Q")):
                key = _string(handle)
                value = _value(handle, _u(handle, "<I"))
                if value is not None:
                    fields[key] = value
            return fields
    except _Truncated:
        raise StoreError(f"{path}: GGUF header is cut short") from None
    except OSError as exc:
        raise StoreError(f"{path}: cannot read: {exc.strerror}") from None
