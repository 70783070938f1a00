"""One model's life cycle: ``step(state, event) -> (state, effects)``. Pure: no I/O, no
clock, no logging; events and effects are plain data.

    absent ─manifest─▶ pulling ─pulled─▶ starting ─ready─▶ serving ─idle─▶ standby
                          │                  │   ▲            │  ▲            │
                          │       start failed   │ retry timer│  └─request────┘
                          └──pull failed──▶ failed ─┘          │ exited / hung
                                               ▲──────────────┘
    any ─no manifest─▶ draining ─drained─▶ absent

The state keeps the instance that serves (``serving``) beside the attempt in flight, so a
restart-class change starts the new instance while the old one serves, and routing moves
when the new one is ready. After every event, :func:`_converge` compares the state with
its target and decides what to do, so a manifest change overtakes an attempt in flight (it
is aborted and the new target started at once) and a fix never waits behind a failure.

There is one retry policy, here: a failed attempt is retried after a backoff; a process
that ends the same way (signal or exit code, in the same phase) three times in a row is a
deterministic crash and is not retried until its manifest or its files change, or SIGHUP;
a start refused for memory waits until memory frees.

A manifest with ``rollout`` makes a restart-class change a canary when memory admitted
both revisions (``Ready.beside``): the new instance serves beside the old one (``canary``)
until the worker's judge (``modelrunner.rollout.verdict``) or an operator sends
``Promote`` (the old one drains) or ``RollBack`` (the canary drains; the target waits,
like a deterministic crash, for a new manifest or SIGHUP).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

from modelrunner.engines.exits import Exit, ExitPhase, advice
from modelrunner.engines.restart import RetryPolicy, backoff_delay
from modelrunner.model_files import ModelFiles
from modelrunner.reconcile.desired import Desired

Phase = Literal["absent", "pulling", "starting", "serving", "standby", "draining", "failed"]
Waiting = Literal["timer", "memory", "fix", "rollback"]


@dataclass(frozen=True, slots=True)
class Instance:
    """An engine instance the model owns: the attempt that made it, and from what."""

    attempt: int
    desired: Desired
    files: ModelFiles


@dataclass(frozen=True, slots=True)
class ModelState:
    name: str
    phase: Phase = "absent"
    target: Desired | None = None  # the manifest as the last pass read it
    problem: str | None = None  # the target's file has errors now: last good target kept
    serving: Instance | None = None  # routed to
    trying: Desired | None = None  # the target of the attempt in flight (pulling, starting)
    attempt: int = 0  # number of the last attempt
    files: ModelFiles | None = None  # resolved for ``files_key`` (the target's pull key)
    files_key: str | None = None
    draining: tuple[Instance, ...] = ()  # replaced or retired: drained, then stopped
    error: str | None = None  # why the last attempt failed, or why the instance ended
    failures: int = 0  # failed attempts in a row for this target
    last_exit: tuple[int, ExitPhase] | None = None  # signature of the last crash
    same_exits: int = 0  # crashes in a row with that signature
    waiting: Waiting | None = None  # failed, and not started again until this comes
    timer: int = 0  # token of the retry timer that counts
    stamp: str | None = None  # the model files' stamp when it gave up (waiting "fix")
    demand: bool | None = None  # None: as ``preload`` says; True: a request came; False: idle
    canary: Instance | None = None  # a new revision serving beside ``serving`` (rollout)
    rollout: str | None = None  # how the last rollout ended (promoted, rolled back, replaced)


# -- events ---------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class ManifestRead:
    """A pass read the folder. ``problem``: the model's file has errors (target kept)."""

    desired: Desired | None
    problem: str | None = None


@dataclass(frozen=True, slots=True)
class Retry:
    """Resync or SIGHUP. ``stamp``: the model files as they are now (size, mtime, inode)."""

    sighup: bool = False
    stamp: str | None = None


@dataclass(frozen=True, slots=True)
class Pulled:
    attempt: int
    files: ModelFiles


@dataclass(frozen=True, slots=True)
class PullFailed:
    attempt: int
    error: str


@dataclass(frozen=True, slots=True)
class Ready:
    attempt: int
    beside: bool = False  # memory admitted it beside the serving instance (a canary can run)


@dataclass(frozen=True, slots=True)
class Promote:
    """The canary passed (or an operator said so): it takes every request."""

    attempt: int
    reason: str


@dataclass(frozen=True, slots=True)
class RollBack:
    """The canary failed (or an operator aborted it): it is retired, the old one stays."""

    attempt: int
    reason: str


@dataclass(frozen=True, slots=True)
class StartFailed:
    attempt: int
    error: str
    exit: Exit | None = None  # the process ended (signal or exit code, and when)
    memory: bool = False  # refused before spawning: it does not fit the memory budget
    stamp: str | None = None  # the model files' stamp at this start


@dataclass(frozen=True, slots=True)
class Exited:
    """The serving instance's process ended, or stopped answering (``exit`` None: hung)."""

    attempt: int
    error: str
    exit: Exit | None = None


@dataclass(frozen=True, slots=True)
class RequestArrived:
    """A request for a model in standby: load it."""


@dataclass(frozen=True, slots=True)
class Idle:
    """Unused for longer than keep_alive, or evicted to make room: unload."""


@dataclass(frozen=True, slots=True)
class Drained:
    attempt: int


@dataclass(frozen=True, slots=True)
class RetryTimer:
    token: int


@dataclass(frozen=True, slots=True)
class MemoryFreed:
    pass


Event = (
    ManifestRead
    | Retry
    | Pulled
    | PullFailed
    | Ready
    | StartFailed
    | Exited
    | RequestArrived
    | Idle
    | Drained
    | RetryTimer
    | MemoryFreed
    | Promote
    | RollBack
)


# -- effects --------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Pull:
    """Resolve the files (a local path, the store, or a pull as ``pull_policy`` says);
    then ``Pulled`` or ``PullFailed``. ``refresh``: the reference may have moved."""

    attempt: int
    desired: Desired
    refresh: bool


@dataclass(frozen=True, slots=True)
class Spawn:
    """Admit (memory), start an instance and wait until it is ready; then ``Ready`` or
    ``StartFailed``; later ``Exited`` if it ends while serving."""

    attempt: int
    desired: Desired
    files: ModelFiles


@dataclass(frozen=True, slots=True)
class Abort:
    """Cancel the pull or start of ``attempt``, and stop what it started."""

    attempt: int


@dataclass(frozen=True, slots=True)
class Drain:
    """Wait for the requests in flight on the instance (up to drain_timeout), stop it;
    then ``Drained``."""

    attempt: int


@dataclass(frozen=True, slots=True)
class Stop:
    """Stop the instance now (it crashed or hung: nothing to drain)."""

    attempt: int


@dataclass(frozen=True, slots=True)
class Timer:
    seconds: float
    token: int


@dataclass(frozen=True, slots=True)
class Judge:
    """Watch the canary's requests and send ``Promote`` or ``RollBack`` when it is due."""

    attempt: int


Effect = Pull | Spawn | Abort | Drain | Stop | Timer | Judge
Result = tuple[ModelState, tuple[Effect, ...]]


# -- the function -------------------------------------------------------------------------
def same_instance(a: Desired, b: Desired) -> bool:
    """One instance can serve both: only in-place fields differ."""
    return a.keys.restart == b.keys.restart and a.keys.pull == b.keys.pull


def applied(state: ModelState) -> Desired | None:
    """The manifest the model is served by now: the target once the instance serving
    matches it, the serving instance's while a restart-class change is still on its way."""
    target, serving = state.target, state.serving
    if serving is not None and (target is None or not same_instance(serving.desired, target)):
        return serving.desired
    return target


def step(state: ModelState, event: Event, policy: RetryPolicy | None = None) -> Result:
    """The next state and what to do, for one event."""
    policy = policy or RetryPolicy()
    state, effects = _observe(state, event, policy)
    state, more = _converge(state)
    return state, effects + more


def _observe(s: ModelState, event: Event, policy: RetryPolicy) -> Result:
    """Record what the event says happened; effects only for what cannot wait."""
    match event:
        case ManifestRead(desired, problem):
            if problem is not None:
                return replace(s, problem=problem), ()
            if desired is not None and s.target is not None and same_instance(desired, s.target):
                changed_preload = desired.spec.preload != s.target.spec.preload
                edited = desired.content_hash != s.target.content_hash
                s = replace(
                    s, target=desired, problem=None, demand=None if changed_preload else s.demand
                )
                if s.waiting == "fix" and edited:
                    s = replace(s, waiting=None, last_exit=None, same_exits=0)  # edited: try
                return s, ()
            # A new target (or none): what held the old one back does not hold it back.
            return replace(
                s,
                target=desired,
                problem=None,
                failures=0,
                waiting=None,
                last_exit=None,
                same_exits=0,
                demand=None,
            ), ()
        case Retry(sighup, stamp):
            if s.waiting == "rollback" and not sighup:
                return s, ()
            if s.waiting == "fix" and not sighup and (stamp is None or stamp == s.stamp):
                return s, ()
            if s.waiting is not None:
                return replace(s, waiting=None, last_exit=None, same_exits=0), ()
            return s, ()
        case Pulled(attempt, files) if attempt == s.attempt and s.phase == "pulling":
            trying = s.trying
            assert trying is not None
            s = replace(s, files=files, files_key=trying.keys.pull)
            if s.serving is None and not _wants_loaded(s, trying):
                return replace(s, phase="standby", trying=None, failures=0), ()  # preload: false
            return replace(s, phase="starting"), (Spawn(attempt, trying, files),)
        case PullFailed(attempt, error) if attempt == s.attempt and s.phase == "pulling":
            return _failed(s, error, None, memory=False, stamp=None, policy=policy)
        case Ready(attempt, beside) if attempt == s.attempt and s.phase == "starting":
            assert s.trying is not None and s.files is not None
            new = Instance(attempt, s.trying, s.files)
            started = replace(s, phase="serving", trying=None, error=None, failures=0)
            started = replace(started, last_exit=None, same_exits=0)
            if s.trying.spec.rollout is not None and s.serving is not None:
                if beside:
                    return replace(started, canary=new, rollout=None), (Judge(attempt),)
                started = replace(started, rollout="replaced without a canary: memory does "
                                  "not allow two revisions")  # fmt: skip
            old = (s.serving,) if s.serving is not None else ()
            return replace(started, serving=new, draining=s.draining + old), tuple(
                Drain(i.attempt) for i in old
            )
        case Promote(attempt, reason) if s.canary is not None and s.canary.attempt == attempt:
            assert s.serving is not None
            previous = s.serving
            promoted = replace(s, serving=s.canary, canary=None, rollout=reason)
            return replace(promoted, draining=(*s.draining, previous)), (Drain(previous.attempt),)
        case RollBack(attempt, reason) if s.canary is not None and s.canary.attempt == attempt:
            return _rolled_back(s, reason), (Drain(attempt),)
        case Exited(attempt, error) if s.canary is not None and s.canary.attempt == attempt:
            reason = f"rolled back: the new revision's engine ended: {error}"
            return replace(_rolled_back(s, reason), draining=s.draining), (Stop(attempt),)
        case Exited(attempt, error) if (
            s.canary is not None and s.serving is not None and s.serving.attempt == attempt
        ):
            reason = f"promoted: the previous revision's engine ended: {error}"
            return replace(s, serving=s.canary, canary=None, rollout=reason), (Stop(attempt),)
        case StartFailed(attempt, error, exit, memory, stamp) if (
            attempt == s.attempt and s.phase == "starting"
        ):
            return _failed(s, error, exit, memory=memory, stamp=stamp, policy=policy)
        case Exited(attempt, error) if s.serving is not None and s.serving.attempt == attempt:
            if s.phase in ("pulling", "starting"):  # its replacement is on its way already
                return replace(s, serving=None, error=error), (Stop(attempt),)
            failures = s.failures + 1
            delay = backoff_delay(failures, policy)
            token = s.timer + 1
            s = replace(
                s,
                phase="failed",
                serving=None,
                error=f"{error}; starting it again in {delay:g}s",
                failures=failures,
                waiting="timer",
                timer=token,
            )
            return s, (Stop(attempt), Timer(delay, token))
        case RequestArrived():
            return replace(s, demand=True), ()
        case Idle() if s.serving is not None and s.phase == "serving":
            return replace(s, demand=False), ()
        case Drained(attempt):
            return replace(s, draining=tuple(i for i in s.draining if i.attempt != attempt)), ()
        case RetryTimer(token) if token == s.timer and s.waiting == "timer":
            return replace(s, waiting=None), ()
        case MemoryFreed() if s.waiting == "memory":
            return replace(s, waiting=None), ()
    return s, ()  # stale (an aborted attempt's news) or nothing to do


def _rolled_back(s: ModelState, reason: str) -> ModelState:
    """The canary is retired; its target waits for a new manifest (or SIGHUP)."""
    assert s.canary is not None
    return replace(
        s,
        canary=None,
        draining=(*s.draining, s.canary),
        error=reason,
        rollout=reason,
        waiting="rollback",
    )


def _failed(
    s: ModelState,
    error: str,
    exit: Exit | None,
    *,
    memory: bool,
    stamp: str | None,
    policy: RetryPolicy,
) -> Result:
    assert s.trying is not None
    failures = s.failures + 1
    same = 1
    signature = exit.signature if exit is not None else None
    if signature is not None and signature == s.last_exit:
        same = s.same_exits + 1
    base = replace(
        s, phase="failed", trying=None, failures=failures, last_exit=signature, same_exits=same
    )
    if memory:
        return replace(base, error=error, waiting="memory"), ()
    if exit is not None and same >= policy.same_crash_limit:
        fix = advice(exit, s.trying.spec.declared_engine or "")
        return replace(
            base,
            error=f"{error}; the same crash {same} times in a row: {fix}. Not retried until "
            "the manifest or the model file changes, or SIGHUP",
            waiting="fix",
            stamp=stamp,
        ), ()
    delay = backoff_delay(failures, policy)
    token = s.timer + 1
    return replace(base, error=f"{error}; retrying in {delay:g}s", waiting="timer", timer=token), (
        Timer(delay, token),
    )


def _wants_loaded(s: ModelState, target: Desired) -> bool:
    return s.demand if s.demand is not None else target.spec.preload is not False


def _converge(s: ModelState) -> Result:
    """Decide what the target asks for that is not under way."""
    target = s.target
    effects: list[Effect] = []
    in_flight = s.phase in ("pulling", "starting")
    if target is None:  # retire: stop trying, drain what serves
        if in_flight:
            effects.append(Abort(s.attempt))
        draining = s.draining
        for instance in (s.serving, s.canary):
            if instance is not None:
                effects.append(Drain(instance.attempt))
                draining = (*draining, instance)
        phase: Phase = "draining" if draining else "absent"
        gone = replace(s, phase=phase, serving=None, trying=None, draining=draining, waiting=None)
        return replace(gone, canary=None), tuple(effects)
    if in_flight:
        assert s.trying is not None
        if same_instance(s.trying, target):
            return replace(s, trying=target), ()  # in-place edits ride along
        # The target moved on: the attempt in flight is for nothing, start the new one now.
        effects.append(Abort(s.attempt))
        s = replace(s, phase="failed" if s.serving is None else "serving", trying=None)
    if s.canary is not None:
        if same_instance(s.canary.desired, target):  # the canary goes on; edits ride along
            return replace(s, canary=replace(s.canary, desired=target)), tuple(effects)
        # The target moved on during the canary: retire it, then as without one.
        effects.append(Drain(s.canary.attempt))
        s = replace(s, canary=None, draining=(*s.draining, s.canary))
    serving = s.serving
    if serving is not None and same_instance(serving.desired, target):
        if _wants_loaded(s, target):
            return replace(s, phase="serving"), tuple(effects)
        # Idle longer than keep_alive (or evicted): unload, keep the files for the next load.
        effects.append(Drain(serving.attempt))
        standby = replace(
            s,
            phase="standby",
            serving=None,
            draining=(*s.draining, serving),
            files=serving.files,
            files_key=serving.desired.keys.pull,
        )
        return standby, tuple(effects)
    if s.waiting is not None:
        return replace(s, phase="failed"), tuple(effects)
    have_files = s.files is not None and s.files_key == target.keys.pull
    if have_files and serving is None and not _wants_loaded(s, target):
        return replace(s, phase="standby"), tuple(effects)
    attempt = s.attempt + 1
    if have_files and s.failures == 0:  # a load from standby: the files are in place
        assert s.files is not None
        effects.append(Spawn(attempt, target, s.files))
        nxt = replace(s, phase="starting", trying=target, attempt=attempt)
        return nxt, tuple(effects)
    # New or moved reference, or a retry: resolve the files again (they may have gone).
    refresh = s.files_key != target.keys.pull
    effects.append(Pull(attempt, target, refresh))
    return replace(s, phase="pulling", trying=target, attempt=attempt), tuple(effects)
