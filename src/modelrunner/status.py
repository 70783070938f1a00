"""What the reconciler reports per model (``mr status``, ``GET /status``, ``/readyz``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal, Protocol

import msgspec

from modelrunner.manifest.problems import Problem

if TYPE_CHECKING:
    from modelrunner.store.store import Store

# standby: applied, but not loaded (preload: false, or unloaded after keep_alive idle time);
# the first request loads it. elsewhere: the manifest's placement selects other hosts.
Phase = Literal[
    "pending",
    "pulling",
    "starting",
    "ready",
    "standby",
    "draining",
    "failed",
    "retired",
    "elsewhere",
]


Role = Literal["stable", "canary"]
RolloutPhase = Literal["canary", "promoted", "rolled back", "replaced"]


class RevisionCounts(msgspec.Struct, frozen=True, kw_only=True):
    revision: str  # X-Model-Revision
    role: Role
    percent: int  # share of the model's requests it takes
    requests: int  # requests it answered since it started
    errors: int  # of which failed (5xx, engine failures, timeouts)


class RolloutView(msgspec.Struct, frozen=True, kw_only=True):
    phase: RolloutPhase
    detail: str | None = None  # the verdict so far, or how it ended
    revisions: tuple[RevisionCounts, ...] = ()


class ModelStatus(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    aliases: tuple[str, ...] = ()
    engine: str | None = None
    phase: Phase = "pending"
    file: str | None = None
    content_hash: str | None = None
    reference: str | None = None
    digest: str | None = None
    keep_alive: int | str | None = None  # the manifest's (GET /api/ps shows when it unloads)
    last_error: str | None = None
    instance: str | None = None  # id of the instance serving now
    # The applied manifest's change-class keys (see reconcile/changes.py), so `mr plan`
    # can tell what a reconcile would do against this server.
    in_place_key: str | None = None
    restart_key: str | None = None
    pull_key: str | None = None
    updated_at: float = 0.0  # unix time of the last phase change
    ready_at: float | None = None
    placement: str | None = None  # the hosts the manifest selects, when it has a placement
    cluster: str | None = None  # the Ray cluster a vLLM instance uses (vllm.ray_address)
    threads: int | None = None  # llama.cpp: the compute threads in effect
    # `mr rm --force` removed the model while it was served: it keeps serving from files
    # the store keeps until the instance stops (then they are deleted).
    removed_from_store: bool = False
    revision: str | None = None  # short id of the applied manifest (X-Model-Revision)
    rollout: RolloutView | None = None  # the manifest's canary rollout, when it has one


class StatusSource(Protocol):
    """Read-only view of the reconciler that the HTTP layer needs."""

    def snapshot(self) -> list[ModelStatus]: ...

    def problems(self) -> list[Problem]:
        """Every problem the last pass found in the manifests, located."""
        ...

    def is_ready(self, names: tuple[str, ...] = ()) -> bool:
        """True when every manifest (or each named model) is applied and serving."""
        ...


class StoreAwareStatus:
    """A StatusSource that marks models ``mr rm --force`` removed from the store while
    they are served (the store keeps their files until the instance stops)."""

    def __init__(self, source: StatusSource, store: Store) -> None:
        self._source = source
        self._store = store

    def snapshot(self) -> list[ModelStatus]:
        out = self._source.snapshot()
        if not any(s.digest and s.instance for s in out):
            return out
        return [
            msgspec.structs.replace(s, removed_from_store=True)
            if s.digest and s.instance and self._store.removed_while_served(s.digest)
            else s
            for s in out
        ]

    def problems(self) -> list[Problem]:
        return self._source.problems()

    def is_ready(self, names: tuple[str, ...] = ()) -> bool:
        return self._source.is_ready(names)
