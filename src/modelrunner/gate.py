"""``limits.max_concurrent_requests``: at most that many requests of one model at its
engine; the next ones wait in a bounded FIFO queue, and past the queue they are refused
(HTTP 429 with Retry-After). One gate per model, kept across instances and reconfigured in
place, so changing the limit needs no restart and requests already waiting keep their turn.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator
from typing import Final

from modelrunner.errors import Overloaded

QUEUE_PER_SLOT: Final = 2  # requests allowed to wait per allowed in flight
RETRY_AFTER: Final = 1.0


class Gate:
    def __init__(self, limit: int | None = None) -> None:
        self.limit = limit
        self.in_flight = 0
        self._waiting: deque[asyncio.Future[None]] = deque()

    @property
    def queue_bound(self) -> int:
        return QUEUE_PER_SLOT * self.limit if self.limit is not None else 0

    @property
    def queued(self) -> int:
        return len(self._waiting)

    def configure(self, limit: int | None) -> None:
        """A new limit, at once: a raised (or removed) one lets waiting requests in."""
        if limit == self.limit:
            return
        self.limit = limit
        self._admit_waiting()

    @contextlib.asynccontextmanager
    async def slot(self, model: str) -> AsyncIterator[None]:
        """Hold one of the model's slots while the request runs (waits in the queue)."""
        if self.limit is not None and (self.in_flight >= self.limit or self._waiting):
            if len(self._waiting) >= self.queue_bound:
                raise Overloaded(
                    f"The model '{model}' is busy: {self.in_flight} request(s) running "
                    f"(limits.max_concurrent_requests: {self.limit}) and {len(self._waiting)} "
                    "waiting; retry later",
                    retry_after=RETRY_AFTER,
                )
            turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiting.append(turn)
            try:
                await turn  # the releasing request counted us in already
            except BaseException:
                if turn.done() and not turn.cancelled():
                    self._release()  # our turn came as we were cancelled: pass it on
                elif turn in self._waiting:  # (a release in the same loop turn popped it)
                    self._waiting.remove(turn)
                raise
        else:
            self.in_flight += 1
        try:
            yield
        finally:
            self._release()

    def _release(self) -> None:
        self.in_flight -= 1
        self._admit_waiting()

    def _admit_waiting(self) -> None:
        while self._waiting and (self.limit is None or self.in_flight < self.limit):
            turn = self._waiting.popleft()
            if not turn.done():
                self.in_flight += 1
                turn.set_result(None)
