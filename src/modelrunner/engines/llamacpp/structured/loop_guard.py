"""Ending a JSON answer's degenerate loop instead of letting it run to max_tokens.

Under a grammar a small model often falls into writing the same few characters again and
again: inside a string (``"1234567890123456789...``, ``"test_test_test_...``), as array
items (``"nil", "nil", ...``) or as ever deeper objects. The grammar allows every step, so
the answer runs until max_tokens cuts it, and a cut answer is not JSON at all.

The guard watches the answer's text. When its last bytes are one short stretch repeated
(``repeating_period``), it finds the container the repetition runs in (the innermost string,
array or object opened before the repetition began and still open) and, until that one is
closed, prefers at each step a token that closes the innermost open container: among the
tokens the grammar allows there, the ones made only of closing characters and whitespace
that start with the expected one (``"``, ``]`` or ``}``). Where the grammar allows none
(after a comma, inside a pattern, before a required property), the model goes on as it
would. The grammar still decides every token, so the answer stays valid against the
schema; only the repeated stretch is cut short.

Every grammar the engine builds leaves no free text, so the nesting read here is the
answer's own: ``response_format`` answers, calls forced by ``tool_choice`` (the call markup
around the JSON holds no quotes or brackets but Mistral's, which open and close), and
``auto`` beside a ``response_format`` (a call or the answer). ``tool_choice: auto`` alone
has no grammar: the model may write prose, and it is left alone.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

import numpy as np

# A loop: the last MIN_SPAN bytes or more are at least MIN_COPIES copies of a stretch of at
# most MAX_PERIOD bytes (so "1234567890" x 7, "_test" x 13 or 64 times "1").
MAX_PERIOD: Final = 64
MIN_COPIES: Final = 4
MIN_SPAN: Final = 64
KEPT: Final = MAX_PERIOD * MIN_COPIES  # bytes of text the test needs

CLOSES: Final = {ord('"'): ord('"'), ord("["): ord("]"), ord("{"): ord("}")}  # opener: closer
CLOSING_BYTES: Final = frozenset(b'"]}') | frozenset(b" \t\r\n")


def repeating_period(text: bytes) -> int | None:
    """The shortest period the end of ``text`` repeats with, if it is a loop (see above)."""
    for period in range(1, MAX_PERIOD + 1):
        span = loop_span(period)
        if len(text) < span:
            return None  # spans only grow with the period
        if text[len(text) - span + period :] == text[len(text) - span : len(text) - period]:
            return period
    return None


def loop_span(period: int) -> int:
    """How many bytes a loop of ``period`` was found over (where it began)."""
    return max(MIN_COPIES * period, MIN_SPAN)


class Nesting:
    """The open strings, arrays and objects of a JSON text read so far, with the offset
    each was opened at."""

    def __init__(self) -> None:
        self.open: list[tuple[int, int]] = []  # (closing byte, offset opened at)
        self.length = 0
        self._escaped = False

    def feed(self, data: bytes) -> None:
        for byte in data:
            top = self.open[-1][0] if self.open else None
            if top == ord('"'):
                if self._escaped:
                    self._escaped = False
                elif byte == ord("\\"):
                    self._escaped = True
                elif byte == ord('"'):
                    self.open.pop()
            elif byte in CLOSES:
                self.open.append((CLOSES[byte], self.length))
            elif self.open and byte == top:
                self.open.pop()
            self.length += 1

    def container_at(self, offset: int) -> int | None:
        """The depth (index in ``open``) of the innermost container opened at or before
        ``offset`` and still open, or None when every open one began after it."""
        found = None
        for depth, (_, opened) in enumerate(self.open):
            if opened <= offset:
                found = depth
        return found


def closing_tokens(pieces: list[bytes]) -> dict[int, Any]:
    """For each closing byte, one boolean per token: the token starts with that byte and
    holds only closing bytes and whitespace (``"]``, ``}\\n``, but not ``",``)."""
    table = {}
    for close in CLOSES.values():
        table[close] = np.array(
            [bool(p) and p[0] == close and set(p) <= CLOSING_BYTES for p in pieces], dtype=bool
        )
    return table


class LoopGuard:
    """One answer's loop watch: ``closing`` before each token, ``feed`` after it."""

    def __init__(self, closers: dict[int, Any], piece: Callable[[int], bytes]) -> None:
        self._closers = closers
        self._piece = piece
        self._nesting = Nesting()
        self._text = b""  # the last KEPT bytes watched
        self._target: int | None = None  # the depth to close while breaking a loop

    def closing(self) -> Any:
        """While breaking a loop: the tokens that close the innermost open container (one
        boolean per token); else None."""
        if self._target is None or not self._nesting.open:
            return None
        return self._closers[self._nesting.open[-1][0]]

    def feed(self, token: int) -> None:
        piece = self._piece(token)
        self._nesting.feed(piece)
        self._text = (self._text + piece)[-KEPT:]
        if self._target is not None:
            if len(self._nesting.open) <= self._target:
                self._target = None
                self._text = b""  # a new loop must show itself again in full
            return
        period = repeating_period(self._text)
        if period is not None:
            began = self._nesting.length - loop_span(period)
            self._target = self._nesting.container_at(began)
            if self._target is None and self._nesting.open:
                self._target = 0
