"""plan(desired, observed) -> what to do, per model. Pure: no I/O, no logging.

create    not running: pull (if an OCI reference), start, route to it
replace   restart- or re-pull-class change: start the new instance, switch routing,
          drain the old one, stop it
update    in-place change only: new aliases/limits on the running instance
retire    no manifest any more, or its placement selects other hosts: stop routing,
          drain, stop
hold      the manifest file has errors: keep the last good state
retry     unchanged, but the last attempt failed (retried on SIGHUP or resync)
noop      nothing to do
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from modelrunner.reconcile.changes import Keys
from modelrunner.reconcile.desired import Desired, DesiredState

ActionKind = Literal["create", "replace", "update", "retire", "hold", "retry", "noop"]


@dataclass(frozen=True, slots=True)
class Observed:
    """What runs (or last failed) for one model, as the reconciler recorded it."""

    name: str
    keys: Keys
    file: str
    failed: bool = False  # the last apply failed and nothing serves the current keys


@dataclass(frozen=True, slots=True)
class Action:
    name: str
    kind: ActionKind
    pull: bool = False  # replace/create: the artifact has to be resolved again
    reason: str = ""


def plan_one(
    name: str,
    desired: Desired | None,
    observed: Observed | None,
    *,
    held: bool = False,
    retry_failed: bool = False,
    elsewhere: bool = False,
) -> Action:
    if held:
        return Action(name, "hold", reason="its manifest file has errors; last good state kept")
    if desired is None:
        if observed is None:
            return Action(name, "noop")
        if elsewhere:
            return Action(name, "retire", reason="its placement selects other hosts")
        return Action(name, "retire", reason="no manifest names it any more")
    if observed is None:
        return Action(name, "create", pull=True, reason="new manifest")
    want, have = desired.keys, observed.keys
    if want.pull != have.pull:
        return Action(
            name, "replace", pull=True, reason="the model reference (or its locked digest) changed"
        )
    if want.restart != have.restart:
        return Action(name, "replace", reason="engine settings changed")
    if observed.failed:
        if retry_failed:
            return Action(name, "retry", pull=True, reason="retrying after a failure")
        return Action(name, "noop", reason="failed; retried on SIGHUP or the next resync")
    if want.in_place != have.in_place or desired.file != observed.file:
        return Action(name, "update", reason="aliases, limits or description changed")
    return Action(name, "noop")


def plan(
    state: DesiredState, observed: Mapping[str, Observed], *, retry_failed: bool = False
) -> tuple[Action, ...]:
    names = sorted(set(state.models) | set(observed) | set(state.held))
    return tuple(
        plan_one(
            name,
            state.models.get(name),
            observed.get(name),
            held=name in state.held,
            retry_failed=retry_failed,
            elsewhere=name in state.elsewhere,
        )
        for name in names
    )
