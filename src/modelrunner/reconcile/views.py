"""What the outside sees of a model's state, computed from it in one place (pure): the
registry entry the router reads and the status record ``mr status`` shows. Neither is
ever written by hand, so the two cannot disagree with the state or with each other."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import msgspec

from modelrunner.engines.llamacpp.launch import threads_in_effect
from modelrunner.engines.vllm.launch import cluster_address
from modelrunner.gate import Gate
from modelrunner.manifest.spec import duration_seconds
from modelrunner.placement import describe
from modelrunner.reconcile.lifecycle import ModelState, applied
from modelrunner.registry import Endpoint, ServedModel, Split
from modelrunner.status import ModelStatus, Phase, RevisionCounts, Role, RolloutPhase, RolloutView


@dataclass(frozen=True, slots=True)
class Running:
    """The serving instance as the worker knows it (the state has only its attempt)."""

    instance_id: str
    engine: str
    endpoint: Endpoint


def status_phase(state: ModelState) -> Phase | None:
    """The phase operators see; None once the model is gone."""
    if state.phase == "absent":
        return None
    if state.serving is not None and state.target is not None:
        return "ready"  # a change on its way (or failing) does not stop the old instance
    if state.phase == "serving":
        return "ready"
    return state.phase


def last_error(state: ModelState) -> str | None:
    if state.problem is not None:
        return f"manifest invalid, last good state kept: {state.problem}"
    if state.error is None:
        return None
    if state.serving is not None and state.phase == "failed" and state.target is not None:
        return (
            f"change from {state.target.file} not applied: {state.error}; "
            "still serving the previous version"
        )
    return state.error


def status_view(
    state: ModelState, running: Running | None, previous: ModelStatus | None, now: float
) -> ModelStatus | None:
    phase = status_phase(state)
    desired = applied(state) or (state.draining[-1].desired if state.draining else None)
    if phase is None or desired is None:
        return None
    spec = desired.spec
    files = state.serving.files if state.serving is not None else state.files
    before = previous or ModelStatus(name=state.name, updated_at=now)
    instance = running.instance_id if running is not None else None
    engine = running.engine if running is not None else spec.declared_engine
    return msgspec.structs.replace(
        before,
        aliases=spec.aliases,
        engine=engine,
        phase=phase,
        file=desired.file,
        content_hash=desired.content_hash,
        reference=spec.model,
        revision=desired.content_hash[:12],
        keep_alive=spec.keep_alive,
        digest=files.digest if files is not None else None,
        last_error=last_error(state),
        instance=instance,
        in_place_key=desired.keys.in_place,
        restart_key=desired.keys.restart,
        pull_key=desired.keys.pull,
        placement=describe(spec.placement) if spec.placement else None,
        cluster=cluster_address(spec),
        threads=threads_in_effect(spec) if engine == "llama.cpp" else None,
        updated_at=now if phase != before.phase else before.updated_at,
        ready_at=now
        if instance is not None and instance != before.instance
        else (before.ready_at if instance is not None else None),
    )


def _unavailable(state: ModelState) -> str:
    match state.phase:
        case "standby":
            return "is not loaded; loading it now"
        case "pulling":
            return "is being pulled or resolved"
        case "starting":
            return "is starting"
        case "failed" if state.waiting == "memory":
            return f"does not fit in memory: {state.error}"
        case "failed":
            return f"failed to start: {state.error}"
    return "is not ready yet"


def served_view(
    state: ModelState,
    running: Running | None,
    *,
    gate: Gate,
    activate: Callable[[], None],
    hold_keep_alive: Callable[[float], None] | None = None,
    created: float,
    split: Split | None = None,
) -> ServedModel | None:
    """The registry entry; None withdraws the model (requests get 404)."""
    desired = applied(state)
    if state.target is None or desired is None:
        return None  # retired: draining or gone
    spec = desired.spec
    limits = spec.limits
    gate.configure(limits.max_concurrent_requests if limits is not None else None)
    timeout = duration_seconds(limits.request_timeout if limits is not None else None, 0.0)
    entry = ServedModel(
        name=spec.name,
        engine=spec.declared_engine or "unknown",
        aliases=spec.aliases,
        created=created,
        gate=gate,
        request_timeout=timeout if 0 < timeout < float("inf") else None,
        embeddings=bool(spec.llama_cpp and spec.llama_cpp.embeddings),
    )
    if running is not None:
        return replace(entry, engine=running.engine, endpoint=running.endpoint, split=split)
    return replace(
        entry,
        unavailable_reason=_unavailable(state),
        activate=activate if state.phase == "standby" else None,
        hold_keep_alive=hold_keep_alive,
    )


def rollout_view(
    state: ModelState, stable: Running | None, canary: Running | None, judgement: str | None
) -> RolloutView | None:
    """The rollout as ``mr status`` shows it: phase, the verdict so far (or how it ended),
    and per revision its share and counts."""
    if state.canary is not None and canary is not None:
        rollout = state.canary.desired.spec.rollout
        percent = rollout.canary_percent if rollout is not None else 0
        revisions = [_counts(canary, "canary", percent)]
        if stable is not None:
            revisions.insert(0, _counts(stable, "stable", 100 - percent))
        return RolloutView(phase="canary", detail=judgement, revisions=tuple(revisions))
    if state.rollout is None:
        return None
    ended = state.rollout
    phase: RolloutPhase = "replaced"
    if ended.startswith("promoted"):
        phase = "promoted"
    elif ended.startswith("rolled back"):
        phase = "rolled back"
    counts = (_counts(stable, "stable", 100),) if stable is not None else ()
    return RolloutView(phase=phase, detail=ended, revisions=counts)


def _counts(running: Running, role: Role, percent: int) -> RevisionCounts:
    endpoint = running.endpoint
    return RevisionCounts(
        revision=endpoint.revision,
        role=role,
        percent=percent,
        requests=endpoint.served,
        errors=endpoint.errors,
    )
