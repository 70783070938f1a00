"""The canary's decisions (pure): the weighted, deterministic split and the verdict."""

from __future__ import annotations

import pytest

from modelrunner.rollout import fits_twice, plan_note, session_to_canary, to_canary, verdict


@pytest.mark.parametrize("percent", [1, 10, 33, 50, 99, 100])
def test_the_split_gives_exactly_percent_of_every_hundred_spread_evenly(percent: int) -> None:
    picks = [to_canary(n, percent) for n in range(1000)]
    assert sum(picks) == 10 * percent
    for start in range(0, 1000, 100):
        assert sum(picks[start : start + 100]) == percent
    longest_wait = max(len(run) for run in "".join("c" if p else "." for p in picks).split("c"))
    assert longest_wait <= 100 // percent  # no long run on one revision


def test_the_split_is_deterministic() -> None:
    assert [to_canary(n, 50) for n in range(6)] == [False, True, False, True, False, True]
    assert [to_canary(n, 10) for n in range(10)] == [False] * 9 + [True]


def test_a_session_stays_on_one_revision_and_sessions_split_by_percent() -> None:
    assert len({session_to_canary("conversation-7", 50) for _ in range(20)}) == 1
    sessions = [session_to_canary(f"s{i}", 20) for i in range(5000)]
    assert 0.17 < sum(sessions) / len(sessions) < 0.23
    assert all(session_to_canary(f"s{i}", 100) for i in range(100))


@pytest.mark.parametrize(
    ("requests", "errors", "elapsed", "decision", "reason"),
    [
        (0, 0, 10.0, "continue", "canary: 0 of 0 requests failed (0%), 290s left"),
        (10, 0, 100.0, "continue", "canary: 0 of 10 requests failed (0%), 200s left"),
        (31, 4, 100.0, "rollback", "rolled back: 4 of 31 requests failed (13% > 2%)"),
        (5, 4, 100.0, "continue", "canary: 4 of 5 requests failed (80%), 200s left"),  # < min
        (19, 0, 300.0, "continue", "canary: 19 of 20 requests needed; window over"),
        (20, 0, 300.0, "promote", "promoted: 0 of 20 requests failed (0% <= 2%)"),
        (100, 2, 300.0, "promote", "promoted: 2 of 100 requests failed (2% <= 2%)"),
        (100, 3, 300.0, "rollback", "rolled back: 3 of 100 requests failed (3% > 2%)"),
        (1000, 15, 400.0, "promote", "promoted: 15 of 1000 requests failed (1.5% <= 2%)"),
    ],
)
def test_verdict(requests: int, errors: int, elapsed: float, decision: str, reason: str) -> None:
    found = verdict(requests, errors, elapsed, window=300.0, max_error_rate=0.02, min_requests=20)
    assert (found.decision, found.reason) == (decision, reason)


def test_a_strict_canary_rolls_back_at_the_first_failure() -> None:
    assert verdict(1, 1, 0.5, 300.0, 0.0, 1).decision == "rollback"
    assert verdict(3, 0, 300.0, 300.0, 0.0, 1).decision == "promote"


@pytest.mark.parametrize(
    ("needs", "budgets", "fits"),
    [
        ({"m": (100, "ram"), "o": (50, "ram")}, {"ram": 250}, True),  # 100 + 50 + 100
        ({"m": (100, "ram"), "o": (51, "ram")}, {"ram": 250}, False),
        ({"m": (100, "ram"), "o": (500, "gpu")}, {"ram": 200, "gpu": 500}, True),
        ({"m": (None, "ram")}, {"ram": 1}, True),  # unknown need: not refused
        ({"m": (100, "gpu")}, {"ram": 1000, "gpu": None}, True),  # no GPU budget known
    ],
)
def test_fits_twice(
    needs: dict[str, tuple[int | None, str]], budgets: dict[str, int | None], fits: bool
) -> None:
    assert fits_twice("m", needs, budgets) is fits


def test_plan_note() -> None:
    assert plan_note(10, "5m", True) == "canary: 10% of requests for 5m"
    assert plan_note(10, "5m", False) == (
        "rollout falls back to replace: memory does not allow two revisions"
    )
