"""The scalar key/value pairs of a GGUF header, read in milliseconds.

``gguf.GGUFReader`` parses the whole file, tokenizer vocabulary included: 12 s for the
98 MB SmolLM2 on a busy 2-core host, too slow on the way to every engine start (memory
admission needs the attention counts). This reads the header only, skipping arrays of
more than ``max_array`` items without decoding them. Values are strings as
``store/gguf_meta.py`` gives them (arrays joined with ", "), so ``estimate.kv_shape`` reads
either.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import BinaryIO, Final

from modelrunner.errors import StoreError

_SCALARS: Final[dict[int, str]] = {
    0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i",
    6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d",
}  # fmt: skip
_STRING: Final = 8
_ARRAY: Final = 9
_MAX_KEYS: Final = 100_000


def _unpack(f: BinaryIO, fmt: str) -> int | float | bool:
    size = struct.calcsize(fmt)
    data = f.read(size)
    if len(data) != size:
        raise ValueError("truncated header")
    value: int | float | bool = struct.unpack(fmt, data)[0]
    return value


def _string(f: BinaryIO) -> str:
    length = int(_unpack(f, "<Q"))
    data = f.read(length)
    if len(data) != length:
        raise ValueError("truncated string")
    return data.decode("utf-8", "replace")


def _text(value: int | float | bool | str) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:f}"
    return str(value)


def _value(f: BinaryIO, kind: int, max_array: int) -> str | None:
    if kind in _SCALARS:
        return _text(_unpack(f, _SCALARS[kind]))
    if kind == _STRING:
        return _string(f)
    if kind != _ARRAY:
        raise ValueError(f"unknown value type {kind}")
    item, count = int(_unpack(f, "<I")), int(_unpack(f, "<Q"))
    if count <= max_array:
        values = [_value(f, item, max_array) for _ in range(count)]
        return ", ".join(v for v in values if v is not None)
    if item in _SCALARS:  # a long array of numbers: skip it whole
        f.seek(struct.calcsize(_SCALARS[item]) * count, 1)
    elif item == _STRING:  # the vocabulary: skip string by string
        for _ in range(count):
            f.seek(int(_unpack(f, "<Q")), 1)
    else:
        for _ in range(count):
            _value(f, item, 0)
    return None


def read_header(path: Path, max_array: int = 50) -> dict[str, str]:
    """Header key -> value; arrays longer than ``max_array`` are left out."""
    try:
        with path.open("rb") as f:
            if f.read(4) != b"GGUF":
                raise ValueError("not a GGUF file")
            version = int(_unpack(f, "<I"))
            if version < 2:
                raise ValueError(f"GGUF version {version} is not supported")
            _unpack(f, "<Q")  # tensor count
            count = int(_unpack(f, "<Q"))
            if count > _MAX_KEYS:
                raise ValueError(f"{count} header keys")
            fields: dict[str, str] = {}
            for _ in range(count):
                key = _string(f)
                value = _value(f, int(_unpack(f, "<I")), max_array)
                if value is not None:
                    fields[key] = value
            return fields
    except (OSError, ValueError, struct.error) as exc:
        raise StoreError(f"{path}: not a readable GGUF header ({exc})") from None
