"""Incremental detokenization that never splits a multi-byte UTF-8 character (pure).

A token is a byte string, and one emoji or CJK character may span two or three tokens.
The incremental decoder keeps an unfinished character's bytes until the rest arrives.
"""

from __future__ import annotations

import codecs


class Utf8Stream:
    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def push(self, piece: bytes) -> str:
        """The text that ``piece`` completes (possibly empty)."""
        return self._decoder.decode(piece)

    def flush(self) -> str:
        """What is left at the end: an unfinished character becomes U+FFFD."""
        return self._decoder.decode(b"", final=True)
