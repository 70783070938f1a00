"""step(state, event) for canary rollouts: one row per transition, no processes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec

from modelrunner.manifest.spec import ModelManifest
from modelrunner.model_files import ModelFiles
from modelrunner.reconcile import lifecycle as lc
from modelrunner.reconcile.changes import keys
from modelrunner.reconcile.desired import Desired
from modelrunner.reconcile.views import rollout_view, status_view

ROLLOUT = {"canary_percent": 50, "window": "30s", "max_error_rate": 0.0, "min_requests": 3}
BASE: dict[str, Any] = {
    "apiVersion": "modelrunner/v1",
    "name": "m",
    "model": "ai/smollm2:135M-Q4_1",
    "context_size": 1024,
    "rollout": ROLLOUT,
}
FILES = ModelFiles("gguf", Path("/store/m.gguf"), digest="sha256:aa")


def desired(content: str, **change: Any) -> Desired:
    spec = msgspec.convert({**BASE, **change}, ModelManifest)
    return Desired(spec, "m.yaml", content, keys(spec))


V1, V2, V3 = desired("v1"), desired("v2", context_size=2048), desired("v3", context_size=4096)


def run(state: lc.ModelState, *events: lc.Event) -> tuple[lc.ModelState, list[lc.Effect]]:
    effects: list[lc.Effect] = []
    for event in events:
        state, more = lc.step(state, event)
        effects.extend(more)
    return state, effects


SERVING, _ = run(lc.ModelState("m"), lc.ManifestRead(V1), lc.Pulled(1, FILES), lc.Ready(1))
STARTING_V2, _ = run(SERVING, lc.ManifestRead(V2))
CANARY, CANARY_EFFECTS = run(STARTING_V2, lc.Ready(2, beside=True))


def test_a_restart_class_change_admitted_beside_becomes_a_canary() -> None:
    assert [lc.Judge(2)] == CANARY_EFFECTS  # no drain: the old revision keeps serving
    assert CANARY.phase == "serving"
    assert CANARY.serving is not None and CANARY.serving.attempt == 1
    assert CANARY.canary is not None and CANARY.canary.attempt == 2
    assert lc.applied(CANARY) is V1  # still the old revision's manifest until promotion


def test_without_memory_for_both_it_is_replaced_and_says_so() -> None:
    state, effects = run(STARTING_V2, lc.Ready(2, beside=False))
    assert effects == [lc.Drain(1)]
    assert state.canary is None and state.serving is not None and state.serving.attempt == 2
    assert state.rollout == "replaced without a canary: memory does not allow two revisions"


def test_without_rollout_a_ready_instance_replaces_the_old_one_as_before() -> None:
    plain = lc.ModelState("m")
    v1, v2 = desired("p1", rollout=None), desired("p2", rollout=None, context_size=2048)
    state, _ = run(plain, lc.ManifestRead(v1), lc.Pulled(1, FILES), lc.Ready(1))
    state, effects = run(state, lc.ManifestRead(v2), lc.Ready(2, beside=True))
    assert effects == [lc.Spawn(2, v2, FILES), lc.Drain(1)] and state.canary is None


def test_promotion_drains_the_old_revision() -> None:
    state, effects = run(CANARY, lc.Promote(2, "promoted: 0 of 9 requests failed (0% <= 0%)"))
    assert effects == [lc.Drain(1)]
    assert state.serving is not None and state.serving.attempt == 2 and state.canary is None
    assert lc.applied(state) is V2
    assert state.rollout == "promoted: 0 of 9 requests failed (0% <= 0%)"


def test_rollback_retires_the_canary_and_waits_for_a_new_manifest() -> None:
    reason = "rolled back: 3 of 3 requests failed (100% > 0%)"
    state, effects = run(CANARY, lc.RollBack(2, reason))
    assert effects == [lc.Drain(2)]
    assert state.serving is not None and state.serving.attempt == 1 and state.canary is None
    assert state.waiting == "rollback" and state.error == reason
    # A resync does not start it again; SIGHUP or a new manifest does.
    assert run(state, lc.Retry(stamp="x"))[1] == []
    assert run(state, lc.Retry(sighup=True))[1] == [lc.Spawn(3, V2, FILES)]
    assert run(state, lc.ManifestRead(V3))[1] == [lc.Spawn(3, V3, FILES)]
    status = status_view(state, None, None, 0.0)
    assert status is not None and status.phase == "ready"
    assert status.last_error == (
        f"change from m.yaml not applied: {reason}; still serving the previous version"
    )
    view = rollout_view(state, None, None, None)
    assert view is not None and (view.phase, view.detail) == ("rolled back", reason)


def test_stale_verdicts_change_nothing() -> None:
    assert run(CANARY, lc.Promote(7, "x")) == (CANARY, [])
    assert run(CANARY, lc.RollBack(7, "x")) == (CANARY, [])
    assert run(SERVING, lc.Promote(1, "x")) == (SERVING, [])


def test_a_canary_whose_engine_ends_is_rolled_back() -> None:
    state, effects = run(CANARY, lc.Exited(2, "signal SIGKILL"))
    assert effects == [lc.Stop(2)]
    assert state.canary is None and state.serving is not None and state.serving.attempt == 1
    assert state.error == "rolled back: the new revision's engine ended: signal SIGKILL"


def test_when_the_old_revision_ends_the_canary_takes_over() -> None:
    state, effects = run(CANARY, lc.Exited(1, "signal SIGKILL"))
    assert effects == [lc.Stop(1)]
    assert state.serving is not None and state.serving.attempt == 2 and state.canary is None


def test_a_new_target_during_the_canary_retires_it_and_starts_the_new_one() -> None:
    state, effects = run(CANARY, lc.ManifestRead(V3))
    assert effects == [lc.Drain(2), lc.Spawn(3, V3, FILES)]
    assert state.canary is None and state.serving is not None and state.serving.attempt == 1
    back, effects = run(CANARY, lc.ManifestRead(V1))  # back to the serving revision
    assert effects == [lc.Drain(2)] and back.canary is None and back.phase == "serving"


def test_in_place_edits_ride_along_with_the_canary() -> None:
    edited = desired("v2-alias", context_size=2048, aliases=["a"])
    state, effects = run(CANARY, lc.ManifestRead(edited))
    assert effects == [] and state.canary is not None and state.canary.desired is edited


def test_retiring_the_model_drains_both_revisions() -> None:
    state, effects = run(CANARY, lc.ManifestRead(None))
    assert effects == [lc.Drain(1), lc.Drain(2)]
    assert state.phase == "draining" and state.canary is None and state.serving is None
