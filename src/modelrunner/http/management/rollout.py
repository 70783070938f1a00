"""Ending a canary by hand: ``POST /rollout/promote/{name}`` (the canary takes every
request, the old revision drains) and ``POST /rollout/abort/{name}`` (the canary is
rolled back). ``mr rollout promote|abort NAME`` calls them."""

from __future__ import annotations

from typing import Any, Literal, Protocol, runtime_checkable

import msgspec
from litestar import Response, post
from litestar.handlers import HTTPRouteHandler

from modelrunner.errors import UnknownModel
from modelrunner.http.errors import from_exception, problem, to_response
from modelrunner.registry import Registry


@runtime_checkable
class RolloutControl(Protocol):
    def end_rollout(self, name: str, promote: bool) -> bool:
        """Promote or roll back the model's canary; False when it has none now."""
        ...


class RolloutEnded(msgspec.Struct, frozen=True):
    model: str
    rollout: Literal["promoted", "rolled back"]


def rollout_handlers(registry: Registry, control: RolloutControl | None) -> list[HTTPRouteHandler]:
    def end(name: str, promote: bool) -> Response[Any]:
        where = f"POST /rollout/{'promote' if promote else 'abort'}/{name}"
        try:
            model = registry.lookup(name).name
        except UnknownModel as exc:
            return to_response(from_exception(exc, where))
        if control is None or not control.end_rollout(model, promote):
            return to_response(
                problem(409, f"{where}: model '{model}' has no canary rollout in progress")
            )
        ended = RolloutEnded(model, "promoted" if promote else "rolled back")
        return Response(ended, status_code=200)

    @post("/rollout/promote/{name:path}", tags=["Rollouts"], status_code=200)
    async def promote(name: str) -> Response[Any]:
        """End the model's canary now: the new revision takes every request."""
        return end(name.lstrip("/"), True)

    @post("/rollout/abort/{name:path}", tags=["Rollouts"], status_code=200)
    async def abort(name: str) -> Response[Any]:
        """Roll the model's canary back now: the serving revision keeps every request."""
        return end(name.lstrip("/"), False)

    return [promote, abort]
