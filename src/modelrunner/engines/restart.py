"""The one retry policy of a model's life cycle (pure): the backoff between failed starts,
and when identical crashes stop being retried. ``reconcile/lifecycle.py`` applies it;
an engine process never restarts itself."""

from __future__ import annotations

from dataclasses import dataclass

from modelrunner.engines.exits import SAME_CRASH_LIMIT


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    backoff_base: float = 1.0  # seconds before the first retry; doubled each time after
    backoff_max: float = 60.0
    same_crash_limit: int = SAME_CRASH_LIMIT  # identical crashes in a row: a deterministic one


def backoff_delay(failures: int, policy: RetryPolicy) -> float:
    """Seconds to wait before the next start after ``failures`` consecutive failures (>= 1)."""
    exponent = max(0, failures - 1)
    return min(policy.backoff_max, policy.backoff_base * 2.0 ** min(exponent, 32))
