"""The one mutable map the router reads: served name or alias -> the instance serving it.

Only the reconciler writes it (``publish``, ``withdraw``), from each model's state
(``reconcile/views.py``); the HTTP layer reads it with
``acquire``, which counts requests in flight per endpoint so that a replaced or retired
instance can be drained before it is stopped. Everything runs on one asyncio loop, so
a switch of routing is a single assignment and needs no lock.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from modelrunner.errors import ModelUnavailable, UnknownModel
from modelrunner.gate import Gate
from modelrunner.rollout import session_to_canary, to_canary


@dataclass(eq=False)
class Endpoint:
    """One running engine instance as the router sees it."""

    instance_id: str
    engine: str
    base_url: str  # e.g. http://127.0.0.1:40123 ; requests go to base_url + "/v1/..."
    in_flight: int = 0
    last_used: float = field(default_factory=time.monotonic)  # when the last request ended
    served: int = 0  # requests that ended
    # A request's keep_alive (Ollama routes), seconds, replacing the manifest's for this
    # instance from then on; a new instance (manifest change, reload) starts without it,
    # unless a request sent one while there was no instance (``ServedModel.hold_keep_alive``).
    keep_alive: float | None = None
    revision: str = ""  # short id of the manifest it was started from (X-Model-Revision)
    errors: int = 0  # requests that ended in a 5xx, an engine failure or a timeout
    handoff: str | None = None  # the engine's hand-off socket (engines/handoff.py), if any
    _idle: asyncio.Event = field(default_factory=asyncio.Event, repr=False)

    def __post_init__(self) -> None:
        self._idle.set()

    def enter(self) -> None:
        self.in_flight += 1
        self._idle.clear()

    def leave(self) -> None:
        self.in_flight -= 1
        self.served += 1
        self.last_used = time.monotonic()
        if self.in_flight == 0:
            self._idle.set()

    async def drained(self, timeout: float) -> bool:
        """Wait until no request is in flight; False if ``timeout`` passed first."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except TimeoutError:
            return False
        return True


@dataclass(eq=False)
class Split:
    """A canary beside the serving instance: ``percent`` of the requests go to it."""

    canary: Endpoint
    percent: int
    routed: int = 0  # requests routed without a session since the canary began

    def pick(self, stable: Endpoint, session: str | None) -> Endpoint:
        if session:
            return self.canary if session_to_canary(session, self.percent) else stable
        n, self.routed = self.routed, self.routed + 1
        return self.canary if to_canary(n, self.percent) else stable


@dataclass(frozen=True)
class ServedModel:
    name: str
    engine: str
    aliases: tuple[str, ...] = ()
    endpoint: Endpoint | None = None  # None while pending, pulling, starting or failed
    unavailable_reason: str | None = None  # why there is no endpoint
    created: float = field(default_factory=time.time)
    embeddings: bool = False  # also serves embeddings (llama.cpp `embeddings: true`)
    # limits: the model's concurrency gate (kept across instances) and request timeout.
    gate: Gate | None = None
    request_timeout: float | None = None
    # Set for a model in standby (not loaded): a request calls it to have the model loaded.
    activate: Callable[[], None] | None = None
    split: Split | None = None  # a canary rollout in progress
    # Set while there is no endpoint (standby, starting): a request's keep_alive, kept for
    # the instance that starts next.
    hold_keep_alive: Callable[[float], None] | None = None


class Registry:
    def __init__(self) -> None:
        self._models: dict[str, ServedModel] = {}
        self._names: dict[str, str] = {}  # name or alias -> model name

    # -- the reconciler's side ------------------------------------------------
    def publish(self, model: ServedModel) -> None:
        """Add or replace a model; new requests go to its endpoint from now on."""
        old = self._models.get(model.name)
        if old is not None:
            for alias in old.aliases:
                # Only our own entries: another model may have taken the alias over.
                if self._names.get(alias) == model.name:
                    del self._names[alias]
        self._models[model.name] = model
        self._names[model.name] = model.name
        for alias in model.aliases:
            self._names[alias] = model.name

    def withdraw(self, name: str) -> ServedModel | None:
        model = self._models.pop(name, None)
        if model is not None:
            for served in (model.name, *model.aliases):
                if self._names.get(served) == name:
                    del self._names[served]
        return model

    # -- the router's side ----------------------------------------------------
    def lookup(self, name: str) -> ServedModel:
        canonical = self._names.get(name)
        if canonical is None:
            raise UnknownModel(f"The model '{name}' does not exist")
        return self._models[canonical]

    def models(self) -> list[ServedModel]:
        return sorted(self._models.values(), key=lambda m: m.name)

    @contextmanager
    def acquire(
        self, name: str, session: str | None = None
    ) -> Iterator[tuple[ServedModel, Endpoint]]:
        """The model and endpoint to send one request to, counted while in use; during a
        canary, the endpoint its split picks (``session``: X-Session-Id). An exception
        out of the block counts as a failed request of that endpoint, unless it stands for
        a 4xx answer."""
        model = self.lookup(name)
        endpoint = model.endpoint
        if endpoint is None:
            reason = model.unavailable_reason or "is not ready yet"
            if model.activate is not None:
                model.activate()  # load on demand; the client retries after Retry-After
            raise ModelUnavailable(f"The model '{model.name}' {reason}", retry_after=2.0)
        if model.split is not None:
            endpoint = model.split.pick(endpoint, session)
        endpoint.enter()
        try:
            yield model, endpoint
        except asyncio.CancelledError:
            raise  # the client went away: not the engine's failure
        except Exception as exc:
            if _status(exc) >= 500:  # a 4xx the engine gave back is the client's fault
                endpoint.errors += 1
            raise
        finally:
            endpoint.leave()


def _status(exc: Exception) -> int:
    """The HTTP status an exception will be answered with, as far as it says (the
    translated routes' ``EngineRejected`` carries its ``problem``); else a server error."""
    status = getattr(getattr(exc, "problem", None), "status", 500)
    return status if isinstance(status, int) else 500
