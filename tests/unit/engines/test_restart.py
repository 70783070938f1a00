"""The one retry policy's backoff (pure)."""

from __future__ import annotations

import pytest

from modelrunner.engines.restart import RetryPolicy, backoff_delay

POLICY = RetryPolicy(backoff_base=0.5, backoff_max=3.0)


@pytest.mark.parametrize(
    ("failures", "delay"), [(1, 0.5), (2, 1.0), (3, 2.0), (4, 3.0), (50, 3.0), (10_000, 3.0)]
)
def test_backoff_doubles_up_to_the_cap(failures: int, delay: float) -> None:
    assert backoff_delay(failures, POLICY) == delay
