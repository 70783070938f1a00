"""Memory admission: which idle instances to unload, least recently used first (pure)."""

from __future__ import annotations

import pytest

from modelrunner.estimate import Budget, Estimate
from modelrunner.reconcile.admission import Resident, evictions

G = 1024**3
BUDGET = Budget(ram=16 * G, gpu=None, source="test")


def r(name: str, gib: int, *, idle: bool = True, used: float = 0.0) -> Resident:
    return Resident(name, gib * G, "ram", idle, used)


@pytest.mark.parametrize(
    ("need", "residents", "victims"),
    [
        (4, [], ()),
        (4, [r("a", 10)], ()),  # 14 of 16: fits
        (8, [r("a", 10, used=5), r("b", 4, used=1)], ("b", "a")),  # b used least recently
        (4, [r("a", 6, used=5), r("b", 4, used=1), r("c", 4, used=3)], ("b",)),
        (8, [r("a", 10, idle=False), r("b", 4)], None),  # a is busy: cannot make room
        (17, [], None),  # more than the whole budget
        (None, [r("a", 16, idle=False)], ()),  # unknown need: never refused
    ],
)
def test_evictions(
    need: int | None, residents: list[Resident], victims: tuple[str, ...] | None
) -> None:
    estimate = Estimate(need * G if need is not None else None, "ram", "test")
    assert evictions(estimate, residents, BUDGET) == victims


def test_gpu_residents_do_not_count_against_ram() -> None:
    gpu = Resident("g", 20 * G, "gpu", False, 0.0)
    assert evictions(Estimate(8 * G, "ram", "test"), [gpu], BUDGET) == ()
