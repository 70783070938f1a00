"""The Reconciler: applies plans, one worker task per model.

A pass re-reads the whole folder (level-based), plans, and hands each model's latest
desired state to that model's worker. Workers run in parallel; each applies its model's
changes in order and always re-plans against the newest target, so fifty rapid edits
converge to the last one. A worker never lets a failure cost a serving instance:
the new instance must be ready before routing switches to it, and the old one is drained
before it is stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from modelrunner import reference
from modelrunner.errors import ModelRunnerError
from modelrunner.manifest.load import load_folder
from modelrunner.manifest.problems import Problem
from modelrunner.manifest.spec import duration_seconds
from modelrunner.model_files import ModelFiles, from_local_path
from modelrunner.reconcile.desired import Desired, DesiredState, desired_state
from modelrunner.reconcile.plan import Action, Observed, plan, plan_one
from modelrunner.reconcile.statusbook import StatusBook
from modelrunner.registry import Endpoint, Registry, ServedModel
from modelrunner.status import ModelStatus

if TYPE_CHECKING:
    from modelrunner.engines.process import EngineProcess
    from modelrunner.manifest.spec import ModelManifest
    from modelrunner.metrics import Metrics
    from modelrunner.settings import Settings
    from modelrunner.store.store import Store

log = logging.getLogger("modelrunner.reconcile")

InstanceFactory = Callable[..., "EngineProcess"]


def _preload(spec: ModelManifest) -> bool:
    return spec.preload is not False


@dataclass
class _Applied:
    """The state one model was last brought to."""

    desired: Desired
    instance: EngineProcess | None = None
    endpoint: Endpoint | None = None
    files: ModelFiles | None = None
    failed: bool = False
    standby: bool = False  # applied, files resolved, no process (loads on first request)


@dataclass
class _Worker:
    task: asyncio.Task[None] | None = None
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    busy: bool = False


class Reconciler:
    def __init__(
        self,
        settings: Settings,
        registry: Registry,
        store: Store,
        *,
        metrics: Metrics | None = None,
        instance_factory: InstanceFactory | None = None,
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.store = store
        self.metrics = metrics
        if instance_factory is None:
            from modelrunner.engines import create_instance

            instance_factory = create_instance
        self._create_instance = instance_factory
        self._applied: dict[str, _Applied] = {}
        self._book = StatusBook(metrics)
        self._targets: dict[str, Desired | None] = {}
        self._held: frozenset[str] = frozenset()
        self._retry: set[str] = set()
        self._load: set[str] = set()  # standby models a request asked for
        self._unload: set[str] = set()  # loaded models idle for longer than keep_alive
        self._workers: dict[str, _Worker] = {}
        self._problems: tuple[Problem, ...] = ()
        self._passes = 0
        self._idle = asyncio.Event()
        self._idle.set()

    # -- a pass -----------------------------------------------------------------
    async def reconcile_once(self, *, retry_failed: bool = False) -> tuple[Action, ...]:
        """Read the folder, plan, and hand every model's work to its worker."""
        started = time.perf_counter()
        result = await asyncio.to_thread(load_folder, self.settings.models_dir)
        state = desired_state(result, {n: a.desired.file for n, a in self._applied.items()})
        actions = plan(state, self.observed(), retry_failed=retry_failed)
        self._problems = state.problems
        self._held = state.held
        for problem in state.problems:
            if problem.severity == "error":
                log.warning("manifest problem: %s", problem)
        for name in sorted(set(self._targets) | set(state.models)):
            if name not in state.held:
                self._targets[name] = state.models.get(name)
        # A None target is kept only while something of that model still has to go.
        self._targets = {
            n: d for n, d in self._targets.items() if d is not None or n in self._applied
        }
        self._mark_held(state)
        for action in actions:
            if action.kind in ("noop", "hold"):
                continue
            if action.kind == "retry":
                self._retry.add(action.name)
            self._wake(action.name)
        self._passes += 1
        if self.metrics is not None:
            self.metrics.reconcile_passes.inc()
            self.metrics.reconcile_duration.observe(time.perf_counter() - started)
        return actions

    def observed(self) -> dict[str, Observed]:
        return {
            name: Observed(name, a.desired.keys, a.desired.file, failed=a.failed)
            for name, a in self._applied.items()
        }

    def _mark_held(self, state: DesiredState) -> None:
        for name in state.held:
            file = self._applied[name].desired.file
            errors = [str(p) for p in state.problems if p.file == file and p.severity == "error"]
            detail = "; ".join(errors[:3]) + (
                f" (+{len(errors) - 3} more)" if len(errors) > 3 else ""
            )
            self._book.update(name, last_error=f"manifest invalid, last good state kept: {detail}")

    # -- workers ----------------------------------------------------------------
    def _wake(self, name: str) -> None:
        worker = self._workers.get(name)
        if worker is None or worker.task is None or worker.task.done():
            worker = _Worker()
            self._workers[name] = worker
            worker.task = asyncio.create_task(self._work(name, worker), name=f"reconcile:{name}")
        worker.busy = True
        self._idle.clear()
        worker.wake.set()

    async def _work(self, name: str, worker: _Worker) -> None:
        while True:
            await worker.wake.wait()
            worker.wake.clear()
            worker.busy = True
            try:
                for _ in range(100):  # a bound, so a flapping target cannot spin forever
                    desired = self._targets.get(name)
                    applied = self._applied.get(name)
                    observed = self.observed().get(name)
                    action = plan_one(
                        name,
                        desired,
                        observed,
                        held=name in self._held,
                        retry_failed=name in self._retry,
                    )
                    self._retry.discard(name)
                    if action.kind in ("noop", "hold"):
                        break
                    log.info("%s: %s (%s)", name, action.kind, action.reason)
                    ok = await self._apply(action, desired, applied)
                    if not ok:
                        break
                await self._load_or_unload(name)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("%s: reconcile worker failed", name)
                if self.metrics is not None:
                    self.metrics.reconcile_errors.inc()
            finally:
                worker.busy = worker.wake.is_set()
                if not any(w.busy for w in self._workers.values()):
                    self._idle.set()
            if not worker.busy and self._targets.get(name) is None and name not in self._applied:
                # Retired and nothing asked for since: this worker's job is over.
                if self._workers.get(name) is worker:
                    del self._workers[name]
                return

    async def wait_idle(self, timeout: float | None = None) -> None:
        """Until every worker has applied what the last pass asked for."""
        await asyncio.wait_for(self._idle.wait(), timeout)

    # -- applying one action ----------------------------------------------------
    async def _apply(self, action: Action, desired: Desired | None, old: _Applied | None) -> bool:
        if action.kind == "retire":
            assert old is not None  # plan_one retires only what runs
            await self._retire(action.name, old)
            return True
        assert desired is not None  # create, replace, update and retry all have a target
        if action.kind == "update" and old is not None and old.standby:
            self._applied[action.name] = _Applied(desired, files=old.files, standby=True)
            self._publish_standby(desired.spec, "is not loaded; loading it now")
            self._book.update(action.name, desired=desired, last_error=None)
            if _preload(desired.spec):
                self._load.add(action.name)
            return True
        if action.kind == "update" and old is not None and old.endpoint is not None:
            self._applied[action.name] = _Applied(
                desired, old.instance, old.endpoint, old.files, failed=False
            )
            self._publish(desired.spec, old.endpoint)
            self._book.update(action.name, desired=desired, last_error=None)
            return True
        return await self._start(action, desired, old)

    async def _start(self, action: Action, desired: Desired, old: _Applied | None) -> bool:
        name, spec = desired.spec.name, desired.spec
        instance: EngineProcess | None = None
        serving_old = old is not None and old.endpoint is not None and not old.failed
        try:
            if not reference.is_local_path(spec.model):
                self._book.update(name, phase="pulling", desired=desired, while_serving=serving_old)
            files = await self._resolve(desired, pull=action.pull)
            if not _preload(spec) and not serving_old:
                return await self._go_standby(desired, files, old)
            self._book.update(name, phase="starting", desired=desired, while_serving=serving_old)
            instance = self._create_instance(
                spec, files, self.settings, on_state_change=self._on_instance_state
            )
            await instance.start()
        except (ModelRunnerError, OSError) as exc:
            return await self._start_failed(name, desired, old, instance, str(exc))
        except Exception as exc:  # a bug: say so, but still keep the old instance
            log.exception("%s: unexpected error while starting", name)
            return await self._start_failed(
                name, desired, old, instance, f"internal error: {exc!r}"
            )

        self._serve(desired, instance, files)
        if old is not None:
            await self._drain_and_stop(name, old)
        return True

    def _serve(self, desired: Desired, instance: EngineProcess, files: ModelFiles) -> None:
        """Route the model to a ready instance; from here on, new requests go to it."""
        name = desired.spec.name
        endpoint = Endpoint(instance.instance_id, instance.engine, instance.base_url)
        self._applied[name] = _Applied(desired, instance, endpoint, files)
        if files.digest:
            self._pin(files.digest)
        self._publish(desired.spec, endpoint)
        self._book.update(
            name,
            phase="ready",
            desired=desired,
            last_error=None,
            instance=instance,
            digest=files.digest,
            ready=True,
        )

    async def _go_standby(self, desired: Desired, files: ModelFiles, old: _Applied | None) -> bool:
        """preload: false -- the artifact is in place; the first request starts the engine."""
        name = desired.spec.name
        self._applied[name] = _Applied(desired, files=files, standby=True)
        self._publish_standby(desired.spec, "is not loaded (preload: false); loading it now")
        self._book.update(
            name,
            phase="standby",
            desired=desired,
            last_error=None,
            instance=None,
            digest=files.digest,
        )
        if old is not None:
            await self._drain_and_stop(name, old)
        return True

    async def _load_or_unload(self, name: str) -> None:
        applied = self._applied.get(name)
        if name in self._load:
            self._load.discard(name)
            if applied is not None and applied.standby and applied.files is not None:
                await self._start_loaded(name, applied)
        elif name in self._unload:
            self._unload.discard(name)
            if applied is not None and applied.instance is not None and not applied.failed:
                await self._to_standby(name, applied)

    async def _start_loaded(self, name: str, applied: _Applied) -> None:
        assert applied.files is not None
        self._book.update(name, phase="starting")
        instance: EngineProcess | None = None
        try:
            instance = self._create_instance(
                applied.desired.spec,
                applied.files,
                self.settings,
                on_state_change=self._on_instance_state,
            )
            await instance.start()
        except (ModelRunnerError, OSError) as exc:
            if instance is not None:
                with contextlib.suppress(Exception):
                    await instance.stop()
            self._publish_standby(applied.desired.spec, f"failed to load: {exc}; retrying")
            self._book.update(name, phase="standby", last_error=f"failed to load: {exc}")
            return
        self._serve(applied.desired, instance, applied.files)

    async def _to_standby(self, name: str, applied: _Applied) -> None:
        """Unload an instance idle for longer than its keep_alive."""
        log.info("%s: idle longer than keep_alive; unloading", name)
        self._applied[name] = _Applied(applied.desired, files=applied.files, standby=True)
        self._publish_standby(applied.desired.spec, "was unloaded after keep_alive; loading it now")
        self._book.update(name, phase="standby", instance=None)
        await self._drain_and_stop(name, applied)

    def _request_load(self, name: str) -> None:
        applied = self._applied.get(name)
        if applied is not None and applied.standby and name not in self._load:
            self._load.add(name)
            self._wake(name)

    async def _unload_idle(self) -> None:
        """Every second: hand models idle longer than their keep_alive to their worker."""
        while True:
            await asyncio.sleep(1.0)
            try:
                self._hand_over_idle()
            except Exception:  # keep the unloader alive; a bug here must not stop it
                log.exception("keep_alive check failed")

    def _hand_over_idle(self) -> None:
        now = time.monotonic()
        for name, applied in list(self._applied.items()):
            endpoint = applied.endpoint
            if endpoint is None or applied.standby or endpoint.in_flight:
                continue
            keep = duration_seconds(applied.desired.spec.keep_alive, float("inf"))
            if now - endpoint.last_used >= keep and name not in self._unload:
                self._unload.add(name)
                self._wake(name)

    async def _start_failed(
        self,
        name: str,
        desired: Desired,
        old: _Applied | None,
        instance: EngineProcess | None,
        error: str,
    ) -> bool:
        if instance is not None:
            with contextlib.suppress(Exception):
                await instance.stop()
        log.error("%s: %s", name, error)
        if self.metrics is not None:
            self.metrics.reconcile_errors.inc()
        if old is not None and old.endpoint is not None and not old.failed:
            # Keep serving the last good instance; report why the change did not apply.
            self._book.update(
                name,
                phase="ready",
                last_error=f"change from {desired.file} not applied: {error}; "
                "still serving the previous version",
            )
            return False
        self._applied[name] = _Applied(desired, failed=True)
        self._publish_unavailable(desired.spec, f"failed to start: {error}")
        self._book.update(name, phase="failed", desired=desired, last_error=error, instance=None)
        return False

    async def _resolve(self, desired: Desired, *, pull: bool) -> ModelFiles:
        spec = desired.spec
        if reference.is_local_path(spec.model):
            base = Path(desired.file).parent
            path = Path(spec.model).expanduser()
            return await asyncio.to_thread(
                from_local_path, path if path.is_absolute() else base / path
            )
        # The store resolves or pulls as the policy says ("always" pulls whenever the
        # reference may have moved: a create, a re-pull, a retry), and verifies the blobs
        # the engine will load; a corrupted one is fetched again or refused.
        policy = spec.pull_policy or "if-not-present"
        return await asyncio.to_thread(self.store.files_to_load, spec.model, policy, pull)

    async def _retire(self, name: str, old: _Applied) -> None:
        self.registry.withdraw(name)  # new requests get 404 from now on
        self._book.update(name, phase="draining")
        await self._drain_and_stop(name, old)
        self._applied.pop(name, None)
        self._book.remove(name)
        self._targets.pop(name, None)

    async def _drain_and_stop(self, name: str, old: _Applied) -> None:
        if old.endpoint is not None and not await old.endpoint.drained(self.settings.drain_timeout):
            log.warning(
                "%s: %d request(s) still running after %.0f s of draining; stopping anyway",
                name,
                old.endpoint.in_flight,
                self.settings.drain_timeout,
            )
        if old.instance is not None:
            await old.instance.stop()
        if old.files is not None and old.files.digest:
            self._unpin(old.files.digest)

    # -- instance events --------------------------------------------------------
    def _on_instance_state(self, instance: EngineProcess) -> None:
        """An engine crashed, restarted or gave up: route and report accordingly."""
        for name, applied in self._applied.items():
            if applied.instance is not instance:
                continue
            state = instance.state
            if state == "ready":
                endpoint = Endpoint(instance.instance_id, instance.engine, instance.base_url)
                applied.endpoint = endpoint
                self._publish(applied.desired.spec, endpoint)
                self._book.update(name, phase="ready", last_error=None)
            elif state in ("starting", "failed"):
                applied.endpoint = None
                reason = instance.reason or "engine process exited"
                unavailable = "is restarting after a crash" if state == "starting" else "failed"
                self._publish_unavailable(
                    applied.desired.spec, f"{unavailable}: {reason}", engine=instance.engine
                )
                applied.failed = state == "failed"
                self._book.update(name, phase=state, last_error=reason)
            return

    # -- routing and status -----------------------------------------------------
    def _publish(self, spec: ModelManifest, endpoint: Endpoint) -> None:
        embeddings = bool(spec.llama_cpp and spec.llama_cpp.embeddings)
        self.registry.publish(
            ServedModel(
                name=spec.name,
                engine=endpoint.engine,
                aliases=spec.aliases,
                endpoint=endpoint,
                embeddings=embeddings,
            )
        )

    def _publish_unavailable(
        self, spec: ModelManifest, reason: str, *, engine: str | None = None
    ) -> None:
        """Known but without an endpoint: requests get 503 with ``reason``."""
        self.registry.publish(
            ServedModel(
                name=spec.name,
                engine=engine or spec.declared_engine or "unknown",
                aliases=spec.aliases,
                endpoint=None,
                unavailable_reason=reason,
            )
        )

    def _publish_standby(self, spec: ModelManifest, reason: str) -> None:
        """Not loaded: a request asks for a load, then gets 503 with ``reason``."""
        name = spec.name
        self.registry.publish(
            ServedModel(
                name=name,
                engine=spec.declared_engine or "unknown",
                aliases=spec.aliases,
                endpoint=None,
                unavailable_reason=reason,
                activate=lambda: self._request_load(name),
            )
        )

    def snapshot(self) -> list[ModelStatus]:
        return self._book.snapshot()

    def problems(self) -> list[Problem]:
        return list(self._problems)

    def is_ready(self, names: tuple[str, ...] = ()) -> bool:
        if not self._idle.is_set():
            return False
        wanted = names or tuple(n for n, d in self._targets.items() if d is not None)
        for name in wanted:
            try:
                served = self.registry.lookup(name)
            except ModelRunnerError:
                return False
            status = self._book.get(served.name)
            if served.endpoint is None and not (status and status.phase == "standby"):
                return False
        return True

    # -- pins keep served models from `mr rm` and garbage collection --------------
    def _pin(self, digest: str) -> None:
        with contextlib.suppress(Exception):
            self.store.pin(digest)

    def _unpin(self, digest: str) -> None:
        if not any(a.files and a.files.digest == digest for a in self._applied.values()):
            with contextlib.suppress(Exception):
                self.store.unpin(digest)

    # -- life cycle ---------------------------------------------------------------
    async def shutdown(self) -> None:
        """Stop every worker, then drain and stop every instance."""
        for worker in self._workers.values():
            if worker.task is not None:
                worker.task.cancel()
        await asyncio.gather(
            *(w.task for w in self._workers.values() if w.task is not None),
            return_exceptions=True,
        )
        self._workers.clear()
        for name in list(self._applied):
            self.registry.withdraw(name)
        await asyncio.gather(
            *(self._drain_and_stop(n, a) for n, a in list(self._applied.items())),
            return_exceptions=True,
        )
        self._applied.clear()

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Reconciler]:
        """Reconcile once, then follow the folder until the context ends."""
        from modelrunner.reconcile.triggers import Triggers

        triggers = Triggers(self.settings, self.reconcile_once)
        unloader = asyncio.create_task(self._unload_idle(), name="reconcile:keep-alive")
        try:
            await self.reconcile_once()
            async with triggers.running():
                yield self
        finally:
            unloader.cancel()
            await asyncio.gather(unloader, return_exceptions=True)
            await self.shutdown()
