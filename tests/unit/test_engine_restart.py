"""Restart backoff (pure)."""

from __future__ import annotations

import pytest

from modelrunner.engines.restart import RestartPolicy, backoff_delay, gives_up

POLICY = RestartPolicy(max_restarts=3, backoff_base=0.5, backoff_max=3.0)


@pytest.mark.parametrize(
    ("failures", "delay"), [(1, 0.5), (2, 1.0), (3, 2.0), (4, 3.0), (50, 3.0), (10_000, 3.0)]
)
def test_backoff_doubles_up_to_the_cap(failures: int, delay: float) -> None:
    assert backoff_delay(failures, POLICY) == delay


@pytest.mark.parametrize(("failures", "give_up"), [(1, False), (3, False), (4, True)])
def test_gives_up_after_max_restarts(failures: int, give_up: bool) -> None:
    assert gives_up(failures, POLICY) is give_up
