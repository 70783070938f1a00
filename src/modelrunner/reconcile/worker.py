"""The thin worker of one model: it feeds events to ``lifecycle.step``, writes the views
of the new state, and runs the effects, each of which reports back with an event.

Nothing here decides: an effect is done as it says (pull, spawn, abort, drain, stop, a
timer), and every outcome, success or failure, goes back through ``send``. Events are
handled synchronously on the server's one asyncio loop, so the state never changes under
a running ``step``; long effects are tasks, and a manifest change can abort one at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Protocol

from modelrunner.engines.exits import Exit
from modelrunner.engines.restart import RetryPolicy
from modelrunner.errors import EngineStartFailed, ModelRunnerError
from modelrunner.gate import Gate
from modelrunner.manifest.spec import duration_seconds
from modelrunner.reconcile import lifecycle as lc
from modelrunner.reconcile.views import Running
from modelrunner.registry import Endpoint, Split
from modelrunner.rollout import verdict

if TYPE_CHECKING:
    from modelrunner.engines.process import EngineProcess
    from modelrunner.model_files import ModelFiles
    from modelrunner.reconcile.desired import Desired

log = logging.getLogger("modelrunner.reconcile")
JUDGE_EVERY = 0.25  # seconds between two looks at a canary's counts


class WorkerOwner(Protocol):
    """What a worker needs of the reconciler that owns it."""

    drain_timeout: float
    policy: RetryPolicy

    def resolve(self, desired: Desired, refresh: bool) -> Awaitable[ModelFiles]: ...
    def admit(
        self, name: str, attempt: int, desired: Desired, files: ModelFiles
    ) -> Awaitable[str | None]: ...
    def release(self, name: str, attempt: int) -> None: ...
    def beside(self, name: str, attempt: int) -> bool: ...
    def create(
        self, desired: Desired, files: ModelFiles, on_exit: Callable[[EngineProcess], None]
    ) -> EngineProcess: ...
    def stamp(self, files: ModelFiles) -> str | None: ...
    def pin(self, files: ModelFiles) -> None: ...
    def unpin(self, files: ModelFiles) -> None: ...
    def publish(self, worker: ModelWorker) -> None: ...
    def failed(self, name: str, error: str) -> None: ...


class ModelWorker:
    def __init__(self, name: str, host: WorkerOwner) -> None:
        self.name = name
        self.host = host
        self.state = lc.ModelState(name)
        self.gate = Gate()
        self.created = time.time()
        # A request's keep_alive sent while no instance ran, for the next one to start.
        self.held_keep_alive: float | None = None
        self._tasks: dict[int, asyncio.Task[None]] = {}  # attempt -> its pull or spawn
        self._chores: set[asyncio.Task[None]] = set()  # drains and stops
        self._instances: dict[int, EngineProcess] = {}
        self._endpoints: dict[int, Endpoint] = {}
        self._pinned: dict[int, ModelFiles] = {}
        self._timers: list[asyncio.TimerHandle] = []
        self._split: Split | None = None
        self._judging: asyncio.TimerHandle | None = None  # the canary's next look
        self.judgement: str | None = None  # the canary's verdict so far, for the status

    def hold_keep_alive(self, seconds: float) -> None:
        self.held_keep_alive = seconds

    # -- what the reconciler reads ---------------------------------------------
    @property
    def busy(self) -> bool:
        """An effect is under way (a pull, a start, a drain); timers do not count."""
        return bool(self._tasks or self._chores)

    def running(self) -> Running | None:
        serving = self.state.serving
        if serving is None:
            return None
        instance = self._instances.get(serving.attempt)
        endpoint = self._endpoints.get(serving.attempt)
        if instance is None or endpoint is None:
            return None
        return Running(instance.instance_id, instance.engine, endpoint)

    def canary(self) -> Running | None:
        canary = self.state.canary
        instance = self._instances.get(canary.attempt) if canary is not None else None
        endpoint = self._endpoints.get(canary.attempt) if canary is not None else None
        if instance is None or endpoint is None:
            return None
        return Running(instance.instance_id, instance.engine, endpoint)

    def split(self) -> Split | None:
        """The registry's split while a canary serves (kept across publishes: it counts)."""
        canary, running = self.state.canary, self.canary()
        rollout = canary.desired.spec.rollout if canary is not None else None
        if running is None or rollout is None:
            self._split = None
            return None
        if self._split is None or self._split.canary is not running.endpoint:
            self._split = Split(running.endpoint, rollout.canary_percent)
        self._split.percent = rollout.canary_percent  # an in-place edit applies now
        return self._split

    def end_rollout(self, promote: bool) -> bool:
        """``mr rollout promote|abort``: False when no canary is in progress."""
        canary = self.state.canary
        if canary is None:
            return False
        if promote:
            self.send(lc.Promote(canary.attempt, "promoted by hand (mr rollout promote)"))
        else:
            self.send(lc.RollBack(canary.attempt, "rolled back by hand (mr rollout abort)"))
        return True

    def holds(self, digest: str) -> bool:
        """An instance of this model still uses the files of ``digest``."""
        return any(files.digest == digest for files in self._pinned.values())

    def endpoint(self) -> Endpoint | None:
        running = self.running()
        return running.endpoint if running is not None else None

    # -- events ---------------------------------------------------------------------
    def send(self, event: lc.Event) -> None:
        before = self.state
        self.state, effects = lc.step(before, event, self.host.policy)
        if before.phase != self.state.phase:
            log.info("%s: %s -> %s", self.name, before.phase, self.state.phase)
        if self.state.error is not None and self.state.error != before.error:
            self.host.failed(self.name, self.state.error)
        self.host.publish(self)
        for effect in effects:
            self._do(effect)

    def _do(self, effect: lc.Effect) -> None:
        match effect:
            case lc.Pull(attempt, desired, refresh):
                self._tasks[attempt] = self._task(self._pull(attempt, desired, refresh), attempt)
            case lc.Spawn(attempt, desired, files):
                self._tasks[attempt] = self._task(self._spawn(attempt, desired, files), attempt)
            case lc.Abort(attempt):
                task = self._tasks.get(attempt)
                if task is not None:
                    task.cancel()  # its handler stops what it started
                elif attempt in self._instances:  # ready, but the news came too late
                    self._chore(self._stop(attempt))
            case lc.Drain(attempt):
                self._chore(self._drain(attempt))
            case lc.Stop(attempt):
                self._chore(self._stop(attempt))
            case lc.Timer(seconds, token):
                loop = asyncio.get_running_loop()
                self._timers.append(loop.call_later(seconds, self.send, lc.RetryTimer(token)))
            case lc.Judge(attempt):
                self.judgement = None
                self._judge(attempt, time.monotonic())

    def _judge(self, attempt: int, started: float) -> None:
        """Look at the canary's counts; promote or roll back when the verdict says so."""
        canary = self.state.canary
        endpoint = self._endpoints.get(attempt)
        if canary is None or canary.attempt != attempt or endpoint is None:
            return  # ended meanwhile
        rollout = canary.desired.spec.rollout
        if rollout is None:  # the manifest dropped its rollout: promote
            self.send(lc.Promote(attempt, "promoted: the manifest has no rollout any more"))
            return
        found = verdict(
            endpoint.served,
            endpoint.errors,
            time.monotonic() - started,
            duration_seconds(rollout.window, 0.0),
            rollout.max_error_rate,
            rollout.min_requests,
        )
        self.judgement = found.reason
        if found.decision == "promote":
            self.send(lc.Promote(attempt, found.reason))
        elif found.decision == "rollback":
            self.send(lc.RollBack(attempt, found.reason))
        else:
            self.host.publish(self)  # the status shows the counts as they grow
            loop = asyncio.get_running_loop()
            self._judging = loop.call_later(JUDGE_EVERY, self._judge, attempt, started)

    def _task(self, coro: Awaitable[None], attempt: int) -> asyncio.Task[None]:
        async def run() -> None:
            try:
                await coro
            finally:
                # The pull's news may have put the spawn of the same attempt in its place.
                if self._tasks.get(attempt) is asyncio.current_task():
                    del self._tasks[attempt]
                self.host.publish(self)  # busy may have changed

        return asyncio.create_task(run(), name=f"model {self.name} attempt {attempt}")

    def _chore(self, coro: Awaitable[None]) -> None:
        async def run() -> None:
            await coro

        task = asyncio.create_task(run(), name=f"model {self.name} chore")
        self._chores.add(task)

        def done(finished: asyncio.Task[None]) -> None:
            self._chores.discard(finished)
            if not finished.cancelled() and finished.exception() is not None:
                log.error("%s: %s", self.name, finished.exception())
            self.host.publish(self)

        task.add_done_callback(done)

    # -- effects ------------------------------------------------------------------
    async def _pull(self, attempt: int, desired: Desired, refresh: bool) -> None:
        try:
            files = await self.host.resolve(desired, refresh)
        except asyncio.CancelledError:
            raise
        except (ModelRunnerError, OSError) as exc:
            self.send(lc.PullFailed(attempt, str(exc)))
            return
        except Exception as exc:  # a bug: say so in the status, keep the worker alive
            log.exception("%s: resolving the model failed", self.name)
            self.send(lc.PullFailed(attempt, f"internal error: {exc!r}"))
            return
        self.send(lc.Pulled(attempt, files))

    async def _spawn(self, attempt: int, desired: Desired, files: ModelFiles) -> None:
        try:
            refusal = await self.host.admit(self.name, attempt, desired, files)
        except asyncio.CancelledError:
            raise
        except Exception:  # a bug in admission must not keep a model from starting
            log.exception("%s: memory admission failed; starting without it", self.name)
            refusal = None
        if refusal is not None:
            self.send(lc.StartFailed(attempt, refusal, memory=True))
            return
        stamp = self.host.stamp(files)
        instance: EngineProcess | None = None
        try:
            instance = self.host.create(desired, files, lambda ended: self._exited(attempt, ended))
            self._instances[attempt] = instance
            await instance.start()
        except asyncio.CancelledError:
            await asyncio.shield(self._forget(attempt))
            raise
        except (ModelRunnerError, OSError) as exc:
            await self._forget(attempt)
            exit = exc.exit if isinstance(exc, EngineStartFailed) else None
            ended = exit if isinstance(exit, Exit) else None
            self.send(lc.StartFailed(attempt, str(exc), ended, stamp=stamp))
            return
        except Exception as exc:
            log.exception("%s: unexpected error while starting", self.name)
            await self._forget(attempt)
            self.send(lc.StartFailed(attempt, f"internal error: {exc!r}", stamp=stamp))
            return
        self._endpoints[attempt] = Endpoint(
            instance.instance_id,
            instance.engine,
            instance.base_url,
            revision=desired.content_hash[:12],
            keep_alive=self.held_keep_alive,
            handoff=instance.handoff_path,
        )
        self.held_keep_alive = None
        self.host.pin(files)
        self._pinned[attempt] = files
        self.send(lc.Ready(attempt, self.host.beside(self.name, attempt)))

    def _exited(self, attempt: int, instance: EngineProcess) -> None:
        reason = instance.reason or "engine process ended"
        self.send(lc.Exited(attempt, reason, instance.exit))

    async def _drain(self, attempt: int) -> None:
        endpoint = self._endpoints.get(attempt)
        if endpoint is not None and not await endpoint.drained(self.host.drain_timeout):
            log.warning(
                "%s: %d request(s) still running after %.0f s of draining; stopping anyway",
                self.name,
                endpoint.in_flight,
                self.host.drain_timeout,
            )
        await self._forget(attempt)
        self.send(lc.Drained(attempt))

    async def _stop(self, attempt: int) -> None:
        await self._forget(attempt)

    async def _forget(self, attempt: int) -> None:
        """Stop the attempt's instance, if any, and let go of all it held."""
        instance = self._instances.pop(attempt, None)
        self._endpoints.pop(attempt, None)
        try:
            if instance is not None:
                await instance.stop()
        finally:
            files = self._pinned.pop(attempt, None)
            if files is not None:
                self.host.unpin(files)
            self.host.release(self.name, attempt)

    # -- the end ----------------------------------------------------------------
    async def shutdown(self) -> None:
        """Cancel what is under way, then drain and stop every instance."""
        for timer in self._timers:
            timer.cancel()
        if self._judging is not None:
            self._judging.cancel()
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.gather(*self._chores, return_exceptions=True)
        await asyncio.gather(
            *(self._drain_quietly(a) for a in list(self._instances)), return_exceptions=True
        )

    async def _drain_quietly(self, attempt: int) -> None:
        endpoint = self._endpoints.get(attempt)
        if endpoint is not None:
            await endpoint.drained(self.host.drain_timeout)
        with contextlib.suppress(Exception):
            await self._forget(attempt)
