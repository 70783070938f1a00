"""Canary rollouts, the decisions (pure): which revision a request goes to, and whether a
canary is promoted, rolled back or goes on. The registry routes with ``Split``; the
reconciler's worker asks ``verdict`` about the canary's counts and acts on the answer.

The split is weighted and deterministic: without a session, request n goes to the canary
when ``floor((n + 1) * p / 100) > floor(n * p / 100)`` (exactly p of every 100 requests,
spread evenly, no randomness to test around); with an ``X-Session-Id`` its hash picks the
revision, so a conversation stays on one.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Literal

Decision = Literal["continue", "promote", "rollback"]


def to_canary(n: int, percent: int) -> bool:
    """Request number ``n`` (0, 1, 2 ...) of the window goes to the canary."""
    return (n + 1) * percent // 100 > n * percent // 100


def session_to_canary(session: str, percent: int) -> bool:
    bucket = int.from_bytes(hashlib.blake2b(session.encode(), digest_size=2).digest()) % 100
    return bucket < percent


@dataclass(frozen=True, slots=True)
class Verdict:
    decision: Decision
    reason: str


def verdict(
    requests: int,
    errors: int,
    elapsed: float,
    window: float,
    max_error_rate: float,
    min_requests: int,
) -> Verdict:
    """Judge a canary from its counts so far. With at least ``min_requests`` requests, an
    error rate above ``max_error_rate`` rolls it back at once, window or not; after the
    window, a rate within it promotes it; with fewer requests it goes on."""
    rate = errors / requests if requests else 0.0
    counts = f"{errors} of {requests} requests failed ({_percent(rate)}"
    if requests >= min_requests and rate > max_error_rate:
        return Verdict("rollback", f"rolled back: {counts} > {_percent(max_error_rate)})")
    if elapsed < window:
        return Verdict("continue", f"canary: {counts}), {window - elapsed:.0f}s left")
    if requests < min_requests:
        return Verdict(
            "continue", f"canary: {requests} of {min_requests} requests needed; window over"
        )
    return Verdict("promote", f"promoted: {counts} <= {_percent(max_error_rate)})")


def _percent(rate: float) -> str:
    value = rate * 100
    return f"{value:.0f}%" if value == round(value) or value >= 10 else f"{value:.1f}%"


def fits_twice(
    name: str, needs: dict[str, tuple[int | None, str]], budgets: dict[str, int | None]
) -> bool:
    """Whether model ``name`` can run two revisions at once beside the other models
    (``needs``: model -> (bytes or None, device); ``budgets``: device -> bytes). What is
    not known is not refused, as memory admission does."""
    need, device = needs[name]
    budget = budgets.get(device)
    if need is None or budget is None:
        return True
    total = sum(n or 0 for n, d in needs.values() if d == device)
    return total + need <= budget


def plan_note(percent: int, window: str, fits: bool) -> str:
    """What ``mr plan`` says about a restart-class change of a model with a rollout."""
    if fits:
        return f"canary: {percent}% of requests for {window}"
    return "rollout falls back to replace: memory does not allow two revisions"
