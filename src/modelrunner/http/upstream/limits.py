"""A model's ``limits``, applied to one call to its engine, on every route that reaches one
(the proxied OpenAI routes and the translated Ollama, Anthropic and Responses routes).

- ``deadline(model)``: ``limits.request_timeout`` counted from now (the request's arrival),
  on the loop's clock; None without a timeout.
- ``async with limited(model, deadline)``: holds one of the model's slots
  (``max_concurrent_requests``: a bounded FIFO queue, then ``Overloaded``, 429) for as long
  as the call runs; a turn that does not come before the deadline is ``RequestTimedOut``.
- ``async with timed(deadline, model, where)``: cancels what runs inside (the engine's
  request: its connection is closed, so the engine stops generating) at the deadline and
  says so as ``RequestTimedOut`` (504).

The model's gate and timeout come with its registry entry, so a changed limit applies to
the next request, in place.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from modelrunner.errors import RequestTimedOut
from modelrunner.registry import ServedModel


def deadline(model: ServedModel) -> float | None:
    """The loop time past which the model's ``request_timeout`` cuts a request arriving now."""
    if model.request_timeout is None:
        return None
    return asyncio.get_running_loop().time() + model.request_timeout


@asynccontextmanager
async def limited(model: ServedModel, deadline: float | None) -> AsyncIterator[None]:
    """Hold one of the model's slots (``max_concurrent_requests``) for the whole answer."""
    gate = model.gate
    if gate is None or gate.limit is None:
        yield
        return
    slot = gate.slot(model.name)
    try:
        async with asyncio.timeout_at(deadline):
            await slot.__aenter__()
    except TimeoutError:
        raise RequestTimedOut(
            f"The request for model '{model.name}' waited in its queue for longer than "
            f"limits.request_timeout ({model.request_timeout:g}s)"
        ) from None
    try:
        yield
    finally:
        await slot.__aexit__(None, None, None)


@asynccontextmanager
async def timed(deadline: float | None, model: ServedModel, where: str) -> AsyncIterator[None]:
    """``limits.request_timeout``: cancel what runs inside at the deadline (504)."""
    try:
        async with asyncio.timeout_at(deadline):
            yield
    except TimeoutError:
        raise timed_out(model, where) from None


def timed_out(model: ServedModel, where: str) -> RequestTimedOut:
    return RequestTimedOut(
        f"{where} ran longer than limits.request_timeout ({model.request_timeout:g}s); "
        "the engine's request was cancelled"
    )
