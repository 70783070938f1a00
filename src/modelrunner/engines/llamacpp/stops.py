"""Stop strings, matched on the decoded text even when a stop is split across tokens (pure).

Text that could still be the start of a stop string is held back until the next token
settles it, so a client never sees the beginning of a stop string it asked to cut.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple


class StopScan(NamedTuple):
    emit: str  # text safe to send now
    held: str  # text kept back: it may be the start of a stop string
    stopped: bool  # a stop string was found; ``emit`` ends right before it
    matched: str = ""  # which one (the earliest in the text)


def scan_stops(held: str, new: str, stops: Sequence[str]) -> StopScan:
    """Append ``new`` to the ``held`` text and split it into what can be sent and what not."""
    text = held + new
    if not stops:
        return StopScan(text, "", False)
    found = [(i, stop) for stop in stops if stop and (i := text.find(stop)) >= 0]
    if found:
        at, stop = min(found, key=lambda f: f[0])
        return StopScan(text[:at], "", True, stop)
    keep = partial_stop_length(text, stops)
    return StopScan(text[: len(text) - keep], text[len(text) - keep :], False)


def partial_stop_length(text: str, stops: Sequence[str]) -> int:
    """Length of the longest end of ``text`` that is a proper beginning of a stop string."""
    longest = 0
    for stop in stops:
        for n in range(min(len(stop) - 1, len(text)), longest, -1):
            if text.endswith(stop[:n]):
                longest = n
                break
    return longest
