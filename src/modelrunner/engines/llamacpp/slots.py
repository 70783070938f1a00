"""Pure scheduling decisions: which slot takes a request, what goes into the next batch.

No llama.cpp and no I/O here, so the rules are table-tested in tests/unit.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """Number of leading tokens ``a`` and ``b`` share."""
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


class SlotChoice(NamedTuple):
    slot: int
    reused: int  # prompt tokens whose KV cache the slot already holds


def choose_slot(free: Sequence[tuple[int, Sequence[int]]], prompt: Sequence[int]) -> SlotChoice:
    """The free slot whose cached tokens share the longest prefix with ``prompt``.

    ``free`` lists (slot, cached tokens), least recently used first; ties go to the earlier
    one, so a slot with nothing to offer is taken from the longest-idle. At least the last
    prompt token is always decoded again, because its logits give the first new token.
    """
    if not free:
        raise ValueError("no free slot")
    best = SlotChoice(free[0][0], -1)
    for slot, cached in free:
        shared = common_prefix(cached, prompt)
        if shared > best.reused:
            best = SlotChoice(slot, shared)
    return SlotChoice(best.slot, min(max(best.reused, 0), max(len(prompt) - 1, 0)))


class Placement(NamedTuple):
    first: SlotChoice  # choice 0: decodes the prompt, reusing what its slot holds
    others: list[int]  # choices 1..n-1: start from a copy of choice 0's cache


def choose_slots(
    free: Sequence[tuple[int, Sequence[int]]], prompt: Sequence[int], n: int
) -> Placement:
    """Slots for a request with ``n`` choices: choice 0 where ``choose_slot`` puts it, the
    others on the least recently used of the rest (their caches are overwritten by the
    copy, so the longest-idle ones are given up)."""
    if n > len(free):
        raise ValueError(f"{n} choices need {n} free slots, {len(free)} are free")
    first = choose_slot(free, prompt)
    others = [slot for slot, _ in free if slot != first.slot][: n - 1]
    return Placement(first, others)


class Chunk(NamedTuple):
    slot: int
    tokens: int  # how many of its pending tokens go into this batch


def plan_batch(
    decoding: Sequence[int], prefilling: Sequence[tuple[int, int]], n_batch: int
) -> list[Chunk]:
    """One batch: a token for every decoding slot, then prompt chunks in arrival order.

    ``prefilling`` lists (slot, prompt tokens still to decode), oldest request first. The
    prompts share what ``n_batch`` leaves after the decoding slots, so a long prompt stalls
    the running streams for at most one chunk per step.
    """
    plan = [Chunk(slot, 1) for slot in decoding]
    budget = n_batch - len(plan)
    for slot, remaining in prefilling:
        if budget <= 0:
            break
        take = min(remaining, budget)
        if take > 0:
            plan.append(Chunk(slot, take))
            budget -= take
    return plan
