"""step(state, event): one row per transition, no processes, no files, no clock."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import msgspec
import pytest

from modelrunner.engines.exits import Exit
from modelrunner.engines.restart import RetryPolicy
from modelrunner.manifest.spec import ModelManifest
from modelrunner.model_files import ModelFiles
from modelrunner.reconcile import lifecycle as lc
from modelrunner.reconcile.changes import keys
from modelrunner.reconcile.desired import Desired

BASE: dict[str, Any] = {
    "apiVersion": "modelrunner/v1",
    "name": "m",
    "model": "ai/smollm2:135M-Q4_1",
    "engine": "llama.cpp",
    "context_size": 1024,
}
POLICY = RetryPolicy(backoff_base=1.0, backoff_max=8.0)
FILES = ModelFiles("gguf", Path("/store/m.gguf"), digest="sha256:aa")
SEGV = Exit(-11, "readiness")


def desired(content: str = "v1", **change: Any) -> Desired:
    spec = msgspec.convert({**BASE, **change}, ModelManifest)
    return Desired(spec, "m.yaml", content, keys(spec))


V1 = desired()
ALIAS = desired("v1-alias", aliases=["a"])  # in place
V2 = desired("v2", context_size=2048)  # restart class
BROKEN = desired("broken", runtime_flags=["--seed", "1"])  # restart class


def run(state: lc.ModelState, *events: lc.Event) -> tuple[lc.ModelState, list[lc.Effect]]:
    effects: list[lc.Effect] = []
    for event in events:
        state, more = lc.step(state, event, POLICY)
        effects.extend(more)
    return state, effects


ABSENT = lc.ModelState("m")
PULLING, _ = run(ABSENT, lc.ManifestRead(V1))
STARTING, _ = run(PULLING, lc.Pulled(1, FILES))
SERVING, _ = run(STARTING, lc.Ready(1))


# -- one row per transition ---------------------------------------------------------------
@pytest.mark.parametrize(
    ("before", "event", "phase", "effects"),
    [
        (ABSENT, lc.ManifestRead(V1), "pulling", [lc.Pull(1, V1, refresh=True)]),
        (ABSENT, lc.ManifestRead(None), "absent", []),
        (PULLING, lc.Pulled(1, FILES), "starting", [lc.Spawn(1, V1, FILES)]),
        (PULLING, lc.Pulled(7, FILES), "pulling", []),  # a stale attempt's news
        (PULLING, lc.PullFailed(1, "no such tag"), "failed", [lc.Timer(1.0, 1)]),
        (STARTING, lc.Ready(1), "serving", []),
        (STARTING, lc.StartFailed(1, "exit 1"), "failed", [lc.Timer(1.0, 1)]),
        (STARTING, lc.ManifestRead(ALIAS), "starting", []),  # in-place edits ride along
        (STARTING, lc.ManifestRead(V2), "starting", [lc.Abort(1), lc.Spawn(2, V2, FILES)]),
        (STARTING, lc.ManifestRead(None), "absent", [lc.Abort(1)]),
        (SERVING, lc.ManifestRead(V1), "serving", []),
        (SERVING, lc.ManifestRead(ALIAS), "serving", []),
        (SERVING, lc.ManifestRead(V2), "starting", [lc.Spawn(2, V2, FILES)]),
        (
            SERVING,
            lc.ManifestRead(desired("v3", model="ai/other:1")),
            "pulling",
            [lc.Pull(2, desired("v3", model="ai/other:1"), refresh=True)],
        ),
        (SERVING, lc.ManifestRead(None), "draining", [lc.Drain(1)]),
        (
            SERVING,
            lc.Exited(1, "engine killed by SIGSEGV", SEGV),
            "failed",
            [lc.Stop(1), lc.Timer(1.0, 1)],
        ),
        (SERVING, lc.Exited(9, "another attempt's", SEGV), "serving", []),
        (SERVING, lc.Idle(), "standby", [lc.Drain(1)]),
        (SERVING, lc.RequestArrived(), "serving", []),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, lc.Event) else None,
)
def test_transition(
    before: lc.ModelState, event: lc.Event, phase: str, effects: list[lc.Effect]
) -> None:
    after, done = lc.step(before, event, POLICY)
    assert after.phase == phase
    assert list(done) == effects


def test_manifest_problem_keeps_the_target_and_a_good_pass_clears_it() -> None:
    held, effects = run(SERVING, lc.ManifestRead(None, problem="m.yaml:3:1: unknown key"))
    assert (held.phase, held.target, held.problem, effects) == ("serving", V1, held.problem, [])
    assert held.problem == "m.yaml:3:1: unknown key"
    restored, effects = run(held, lc.ManifestRead(V1))
    assert restored.problem is None  # derived from the last pass, never left stale
    assert effects == []


def test_replacement_ready_moves_routing_and_drains_the_old_one() -> None:
    state, effects = run(SERVING, lc.ManifestRead(V2), lc.Pulled(2, FILES), lc.Ready(2))
    assert state.phase == "serving"
    assert state.serving is not None and state.serving.attempt == 2
    assert effects[-1] == lc.Drain(1)
    assert [i.attempt for i in state.draining] == [1]
    state, _ = run(state, lc.Drained(1))
    assert state.draining == ()


def test_failed_replacement_keeps_the_old_instance_serving() -> None:
    state, _ = run(SERVING, lc.ManifestRead(V2), lc.Pulled(2, FILES), lc.StartFailed(2, "exit 1"))
    assert state.phase == "failed"
    assert state.serving is not None and state.serving.attempt == 1
    assert lc.applied(state) == V1  # what the status and the registry show


def test_crash_of_the_old_instance_while_its_replacement_starts() -> None:
    state, effects = run(SERVING, lc.ManifestRead(V2), lc.Exited(1, "engine killed by SIGKILL"))
    assert (state.phase, state.serving, state.trying) == ("starting", None, V2)
    assert effects[-1] == lc.Stop(1)  # no retry timer: the replacement is the restart
    state, effects = run(state, lc.Ready(2))
    assert state.phase == "serving" and state.serving is not None and effects == []


def test_retire_ends_absent_after_the_drain() -> None:
    state, _ = run(SERVING, lc.ManifestRead(None), lc.Drained(1))
    assert state.phase == "absent"


def test_retry_timer_starts_again_and_stale_timers_do_nothing() -> None:
    failed, _ = run(STARTING, lc.StartFailed(1, "exit 1"))
    assert run(failed, lc.RetryTimer(99))[0].phase == "failed"
    again, effects = run(failed, lc.RetryTimer(failed.timer))
    assert again.phase == "pulling"
    assert effects == [lc.Pull(2, V1, refresh=False)]


def test_backoff_grows_with_each_failure() -> None:
    state, delays = STARTING, []
    for attempt in range(1, 6):
        state, effects = run(state, lc.StartFailed(attempt, f"exit {attempt}"))
        delays += [e.seconds for e in effects if isinstance(e, lc.Timer)]
        state, _ = run(state, lc.RetryTimer(state.timer), lc.Pulled(attempt + 1, FILES))
    assert delays == [1.0, 2.0, 4.0, 8.0, 8.0]


def crash_three_times(state: lc.ModelState) -> lc.ModelState:
    for attempt in range(state.attempt, state.attempt + 3):
        state, _ = run(state, lc.StartFailed(attempt, "engine killed by SIGSEGV", SEGV, stamp="s1"))
        if state.waiting == "timer":
            state, _ = run(state, lc.RetryTimer(state.timer), lc.Pulled(attempt + 1, FILES))
    return state


def test_same_crash_three_times_stops_retrying_with_advice() -> None:
    state = crash_three_times(STARTING)
    assert (state.phase, state.waiting) == ("failed", "fix")
    assert "the same crash 3 times in a row" in (state.error or "")
    assert "rebuild with scripts/install.sh --llama-portable" in (state.error or "")
    assert run(state, lc.Retry())[1] == []  # resync with unchanged files: nothing
    assert run(state, lc.Retry(stamp="s1"))[1] == []


@pytest.mark.parametrize(
    "event",
    [lc.Retry(stamp="s2"), lc.Retry(sighup=True), lc.ManifestRead(V2), lc.ManifestRead(ALIAS)],
    ids=["files changed", "SIGHUP", "restart-class fix", "any manifest edit"],
)
def test_a_deterministic_crash_is_retried_once_something_changed(event: lc.Event) -> None:
    state, effects = run(crash_three_times(STARTING), event)
    assert state.phase in ("pulling", "starting")
    assert len(effects) == 1 and isinstance(effects[0], lc.Pull | lc.Spawn)


def test_different_crashes_keep_retrying() -> None:
    state = STARTING
    for attempt, code in enumerate((-11, -6, -11, -6), start=1):
        state, _ = run(state, lc.StartFailed(attempt, "crash", Exit(code, "readiness")))
        assert state.waiting == "timer"
        state, _ = run(state, lc.RetryTimer(state.timer), lc.Pulled(attempt + 1, FILES))


def test_memory_refusal_waits_for_memory_to_free() -> None:
    state, effects = run(STARTING, lc.StartFailed(1, "needs 5.1 GiB, 3.2 GiB free", memory=True))
    assert (state.phase, state.waiting, effects) == ("failed", "memory", [])
    assert state.error == "needs 5.1 GiB, 3.2 GiB free"
    state, effects = run(state, lc.MemoryFreed())
    assert state.phase == "pulling"


def test_lazy_load_and_keep_alive() -> None:
    lazy = desired("lazy", preload=False)
    state, effects = run(ABSENT, lc.ManifestRead(lazy), lc.Pulled(1, FILES))
    assert (state.phase, effects[-1]) == ("standby", lc.Pull(1, lazy, refresh=True))
    state, effects = run(state, lc.RequestArrived())
    assert (state.phase, effects) == ("starting", [lc.Spawn(2, lazy, FILES)])
    state, _ = run(state, lc.Ready(2))
    state, effects = run(state, lc.Idle())
    assert (state.phase, effects) == ("standby", [lc.Drain(2)])
    state, effects = run(state, lc.RequestArrived())
    assert (state.phase, effects) == ("starting", [lc.Spawn(3, lazy, FILES)])


# -- the scenarios of issue 12 ------------------------------------------------------------
def test_manifest_fixed_while_the_previous_start_is_still_failing_converges_at_once() -> None:
    # The broken manifest's engine is still in its (slow) start when the fix lands.
    state, _ = run(ABSENT, lc.ManifestRead(BROKEN), lc.Pulled(1, FILES))
    assert state.phase == "starting"
    state, effects = run(state, lc.ManifestRead(V1))
    assert effects == [lc.Abort(1), lc.Spawn(2, V1, FILES)]  # no wait, no backoff
    # ... and while it waits out a backoff after failing.
    state, _ = run(ABSENT, lc.ManifestRead(BROKEN), lc.Pulled(1, FILES), lc.StartFailed(1, "x"))
    assert state.waiting == "timer"
    state, effects = run(state, lc.ManifestRead(V1))
    assert effects == [lc.Spawn(2, V1, FILES)]
    # The aborted attempt's late news changes nothing.
    assert run(state, lc.StartFailed(1, "late"))[0] == state
    assert run(state, lc.Ready(1))[0] == state


class Instances:
    """What the effects do to processes, counted: the worker's job without processes."""

    def __init__(self) -> None:
        self.live: set[int] = set()

    def apply(self, effects: list[lc.Effect]) -> None:
        for effect in effects:
            if isinstance(effect, lc.Spawn):
                self.live.add(effect.attempt)
            elif isinstance(effect, lc.Abort | lc.Drain | lc.Stop):
                self.live.discard(effect.attempt)


def test_crash_loop_then_fix_leaves_exactly_one_instance() -> None:
    counted = Instances()
    state, effects = run(ABSENT, lc.ManifestRead(BROKEN))
    counted.apply(effects)
    for attempt in range(1, 5):  # crashes at start, with different exits: keeps retrying
        state, effects = run(state, lc.Pulled(attempt, FILES))
        counted.apply(effects)
        state, effects = run(state, lc.StartFailed(attempt, "crash", Exit(-attempt, "loading")))
        counted.apply(effects)
        counted.live.discard(attempt)  # a failed start leaves no process (EngineProcess)
        state, effects = run(state, lc.RetryTimer(state.timer))
        counted.apply(effects)
    assert state.phase == "pulling"
    state, effects = run(state, lc.Pulled(state.attempt, FILES))  # crashing again, slowly
    counted.apply(effects)
    state, effects = run(state, lc.ManifestRead(V1))  # the fix
    counted.apply(effects)
    state, effects = run(state, lc.Ready(state.attempt))
    counted.apply(effects)
    assert state.phase == "serving"
    assert counted.live == {state.attempt}
    assert state.serving is not None and state.serving.attempt == state.attempt
    assert (state.error, state.failures, state.draining) == (None, 0, ())


def test_every_state_change_keeps_the_name() -> None:
    state = replace(SERVING, error="x")
    for event in (lc.ManifestRead(V2), lc.Idle(), lc.ManifestRead(None)):
        state, _ = lc.step(state, event, POLICY)
        assert state.name == "m"


@pytest.mark.parametrize("seed", range(100))
def test_no_instance_is_ever_orphaned(seed: int) -> None:
    """Random event sequences (stale ones included) against a simulated worker: every live
    process is the serving one, the one starting, or one draining; never one forgotten."""
    import random

    rng = random.Random(seed)
    state, live = ABSENT, set()
    for _ in range(60):
        alive = sorted(live)
        choices: list[lc.Event] = [
            lc.ManifestRead(rng.choice([V1, V2, ALIAS, BROKEN, None])),
            lc.Pulled(state.attempt, FILES),
            lc.PullFailed(state.attempt, "no such tag"),
            lc.Ready(state.attempt),
            lc.StartFailed(state.attempt, "crash", SEGV),
            lc.StartFailed(state.attempt, "too big", memory=True),
            lc.RequestArrived(),
            lc.Idle(),
            lc.RetryTimer(state.timer),
            lc.MemoryFreed(),
            lc.Retry(sighup=rng.random() < 0.5),
        ]
        if alive:
            choices += [lc.Exited(rng.choice(alive), "crash", SEGV), lc.Drained(rng.choice(alive))]
        if state.serving is not None:
            choices.append(lc.Exited(state.serving.attempt, "crash", None))
        event = rng.choice(choices)
        if isinstance(event, lc.Ready | lc.StartFailed) and state.attempt not in live:
            continue  # only a spawned attempt gets ready or fails at start
        if isinstance(event, lc.StartFailed):
            live.discard(event.attempt)  # a failed start leaves no process behind
        if isinstance(event, lc.Drained):
            if event.attempt in {i.attempt for i in state.draining}:
                live.discard(event.attempt)  # the worker reports it once it stopped it
            else:
                continue
        state, effects = lc.step(state, event, POLICY)
        for effect in effects:
            if isinstance(effect, lc.Spawn):
                live.add(effect.attempt)
            elif isinstance(effect, lc.Abort | lc.Stop):
                live.discard(effect.attempt)
        owned = {i.attempt for i in state.draining}
        if state.serving is not None:
            owned.add(state.serving.attempt)
        if state.phase == "starting":
            owned.add(state.attempt)
        assert live <= owned, (event, state.phase, live, owned)
        assert (state.trying is not None) == (state.phase in ("pulling", "starting"))
        assert (state.phase == "serving") <= (state.serving is not None)
        assert (state.phase == "standby") <= (state.serving is None and state.files is not None)
        assert (state.target is None) == (state.phase in ("draining", "absent"))
        assert (state.phase == "failed") <= (state.waiting is not None)
        assert len(live - {i.attempt for i in state.draining}) <= 2
