"""The loop guard's decisions, on byte strings and a vocabulary of one token per byte."""

from __future__ import annotations

import numpy as np
import pytest

from modelrunner.engines.llamacpp.structured.loop_guard import (
    MIN_SPAN,
    LoopGuard,
    Nesting,
    closing_tokens,
    repeating_period,
)


@pytest.mark.parametrize(
    ("text", "period"),
    [
        (b'{"id": "' + b"1234567890" * 7, 10),
        (b"x" * MIN_SPAN, 1),
        (b"x" * (MIN_SPAN - 1), None),  # too short to call a loop
        (b"_test" * 13, 5),
        (b"_test" * 12, None),  # 60 bytes
        (b'"nil",\n    ' * 6, 11),
        (b"abcdefghijklmnopqrstu" * 3, None),  # 3 copies are not a loop
        (b"0123456789abcdef" * 3 + b"0123456789abcdef" * 1, 16),  # 4 copies: one
        (b'{"name": "Ada", "age": 36, "tags": ["a", "b"], "city": "Paris", "x": 1}', None),
        (b"A." * 40 + b"A", 2),  # ends part-way through a period
    ],
)
def test_repeating_period(text: bytes, period: int | None) -> None:
    assert repeating_period(text) == period


@pytest.mark.parametrize(
    ("text", "open_"),
    [
        (b"", ""),
        (b'{"a": [1, "x', '{["'),
        (b'{"a": "x\\"y', '{"'),  # an escaped quote does not close the string
        (b'{"a": "x\\\\"', "{"),  # an escaped backslash does
        (b'{"a": "]}[{"', "{"),  # brackets inside a string are text
        (b'{"a": [[], {}]}', ""),
    ],
)
def test_nesting(text: bytes, open_: str) -> None:
    nesting = Nesting()
    nesting.feed(text[:3])
    nesting.feed(text[3:])
    opener = {ord('"'): '"', ord("]"): "[", ord("}"): "{"}
    assert "".join(opener[close] for close, _ in nesting.open) == open_
    assert nesting.length == len(text)


PIECES = [bytes([b]) for b in range(256)] + [b'"]', b'",', b"}\n", b'"}'] + [b""]


def closers_of(mask: np.ndarray) -> set[bytes]:
    return {PIECES[i] for i in np.flatnonzero(mask)}


def test_closing_tokens_hold_only_closing_bytes() -> None:
    table = closing_tokens(PIECES)
    assert closers_of(table[ord('"')]) == {b'"', b'"]', b'"}'}
    assert closers_of(table[ord("]")]) == {b"]"}
    assert closers_of(table[ord("}")]) == {b"}", b"}\n"}


def feed(guard: LoopGuard, text: bytes) -> None:
    for byte in text:
        guard.feed(byte)


def test_a_loop_in_a_string_closes_that_string() -> None:
    guard = LoopGuard(closing_tokens(PIECES), PIECES.__getitem__)
    feed(guard, b'{"id": "' + b"1234567890" * 5)
    assert guard.closing() is None  # 50 bytes: not yet a loop
    feed(guard, b"12345678901234")
    assert closers_of(guard.closing()) == {b'"', b'"]', b'"}'}
    feed(guard, b'"')
    assert guard.closing() is None  # closed: the guard lets go


def test_a_loop_of_array_items_closes_the_array() -> None:
    guard = LoopGuard(closing_tokens(PIECES), PIECES.__getitem__)
    feed(guard, b'{"tags": [')
    feed(guard, b'"nil", ' * 10 + b'"ni')
    assert closers_of(guard.closing()) == {b'"', b'"]', b'"}'}  # the item's string first
    feed(guard, b'"')
    assert closers_of(guard.closing()) == {b"]"}  # then the array it repeats in
    feed(guard, b", ")  # the grammar allows no ] here: the model writes an item
    assert closers_of(guard.closing()) == {b"]"}
    feed(guard, b'"x')
    assert closers_of(guard.closing()) == {b'"', b'"]', b'"}'}
    feed(guard, b'"]')
    assert guard.closing() is None


def test_a_loop_of_ever_deeper_objects_closes_them_all() -> None:
    guard = LoopGuard(closing_tokens(PIECES), PIECES.__getitem__)
    feed(guard, b'{"a": ' + b'{"type": ' * 8)
    assert closers_of(guard.closing()) == {b"}", b"}\n"}
    feed(guard, b"1" + b"}" * 8)
    assert closers_of(guard.closing()) == {b"}", b"}\n"}  # the root began before the loop
    feed(guard, b"}")
    assert guard.closing() is None


def test_varied_text_is_left_alone() -> None:
    guard = LoopGuard(closing_tokens(PIECES), PIECES.__getitem__)
    feed(guard, b'{"items": [' + b", ".join(b'{"n": %d}' % i for i in range(40)))
    assert guard.closing() is None
