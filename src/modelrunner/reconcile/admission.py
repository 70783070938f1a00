"""Memory admission (pure): does a model fit beside what runs, and which idle instances to
unload first when it does not. The estimates and the budget come from ``estimate.py``."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from modelrunner.estimate import Budget, Estimate


@dataclass(frozen=True, slots=True)
class Resident:
    """An instance that holds memory (running or starting), as admission sees it."""

    name: str
    need: int  # its estimate, bytes
    device: str
    evictable: bool  # idle (nothing in flight) and has a keep_alive: it may be unloaded
    last_used: float  # monotonic time its last request ended


def evictions(
    need: Estimate, residents: Iterable[Resident], budget: Budget
) -> tuple[str, ...] | None:
    """The models to unload, least recently used first, so that ``need`` fits: ``()`` when
    it fits as things are, None when it cannot fit even with every idle one unloaded."""
    if need.need is None:
        return ()
    mine = [r for r in residents if r.device == need.device]
    total = budget.of(need.device)
    in_use = sum(r.need for r in mine)
    chosen: list[str] = []
    for resident in sorted((r for r in mine if r.evictable), key=lambda r: r.last_used):
        if in_use + need.need <= total:
            break
        chosen.append(resident.name)
        in_use -= resident.need
    return tuple(chosen) if in_use + need.need <= total else None
