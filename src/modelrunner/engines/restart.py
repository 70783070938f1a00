"""When to restart a crashed engine process, and when to give up (pure)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RestartPolicy:
    max_restarts: int = 5  # consecutive failed starts or crashes before the instance is failed
    backoff_base: float = 1.0  # seconds before the first restart; doubled each time after
    backoff_max: float = 60.0
    stable_after: float = 120.0  # ready this long and the failure count starts again from 0
    # Liveness while ready: a process that is alive but stops answering its health check
    # (a hang, a deadlock, SIGSTOP) is killed and restarted like a crash.
    health_interval: float = 10.0
    health_timeout: float = 5.0
    health_failures: int = 3  # consecutive failed checks before the process counts as hung


def backoff_delay(failures: int, policy: RestartPolicy) -> float:
    """Seconds to wait before the next start after ``failures`` consecutive failures (>= 1)."""
    exponent = max(0, failures - 1)
    return min(policy.backoff_max, policy.backoff_base * 2.0 ** min(exponent, 32))


def gives_up(failures: int, policy: RestartPolicy) -> bool:
    return failures > policy.max_restarts
