"""limits.max_concurrent_requests: the gate's FIFO queue, its bound, and a limit changed in
place (asyncio only: no server, no engine)."""

from __future__ import annotations

import asyncio

import pytest

from modelrunner.errors import Overloaded
from modelrunner.gate import Gate


async def hold(gate: Gate, name: str, order: list[str], release: asyncio.Event) -> None:
    async with gate.slot("m"):
        order.append(name)
        await release.wait()


def test_one_in_flight_then_fifo_then_429() -> None:
    async def run() -> None:
        gate, order, release = Gate(1), [], asyncio.Event()
        first = asyncio.create_task(hold(gate, "a", order, release))
        await asyncio.sleep(0)
        queued = [asyncio.create_task(hold(gate, n, order, release)) for n in "bc"]
        await asyncio.sleep(0)
        assert (gate.in_flight, gate.queued) == (1, 2)
        with pytest.raises(Overloaded, match="1 request\\(s\\) running") as refused:
            async with gate.slot("m"):
                pass
        assert refused.value.retry_after == 1.0
        release.set()
        await asyncio.gather(first, *queued)
        assert order == ["a", "b", "c"]
        assert (gate.in_flight, gate.queued) == (0, 0)

    asyncio.run(run())


def test_a_cancelled_waiter_leaves_the_queue() -> None:
    async def run() -> None:
        gate, order, release = Gate(1), [], asyncio.Event()
        first = asyncio.create_task(hold(gate, "a", order, release))
        await asyncio.sleep(0)
        gone = asyncio.create_task(hold(gate, "b", order, release))
        await asyncio.sleep(0)
        gone.cancel()
        await asyncio.gather(gone, return_exceptions=True)
        assert gate.queued == 0
        release.set()
        await first
        assert (order, gate.in_flight) == (["a"], 0)

    asyncio.run(run())


def test_a_waiter_cancelled_as_the_slot_frees_leaves_quietly() -> None:
    # A request's timeout and the release of the slot in the same loop turn: the release
    # pops the cancelled waiter before the waiter runs its own clean-up.
    async def run() -> None:
        gate, order, release = Gate(1), [], asyncio.Event()
        held = gate.slot("m")
        await held.__aenter__()
        gone = asyncio.create_task(hold(gate, "b", order, release))
        later = asyncio.create_task(hold(gate, "c", order, release))
        await asyncio.sleep(0)
        gone.cancel()
        await held.__aexit__(None, None, None)  # no suspension: before ``gone`` runs
        release.set()
        (refused,) = await asyncio.gather(gone, return_exceptions=True)
        assert isinstance(refused, asyncio.CancelledError)
        await later
        assert (order, gate.in_flight, gate.queued) == (["c"], 0, 0)

    asyncio.run(run())


def test_raising_the_limit_in_place_lets_waiters_in() -> None:
    async def run() -> None:
        gate, order, release = Gate(1), [], asyncio.Event()
        tasks = [asyncio.create_task(hold(gate, n, order, release)) for n in "abc"]
        await asyncio.sleep(0)
        assert gate.in_flight == 1
        gate.configure(3)
        await asyncio.sleep(0)
        assert (gate.in_flight, sorted(order)) == (3, ["a", "b", "c"])
        gate.configure(None)
        release.set()
        await asyncio.gather(*tasks)

    asyncio.run(run())


def test_no_limit_never_queues() -> None:
    async def run() -> None:
        gate, order, release = Gate(None), [], asyncio.Event()
        tasks = [asyncio.create_task(hold(gate, str(i), order, release)) for i in range(50)]
        await asyncio.sleep(0)
        assert len(order) == 50
        release.set()
        await asyncio.gather(*tasks)

    asyncio.run(run())
