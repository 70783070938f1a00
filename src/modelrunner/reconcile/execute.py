"""The Reconciler: reads the folder, hands each model's news to that model's worker, and
provides what the workers share (the store, the engines, the memory budget, the views).

A pass re-reads the whole folder (level-based) and sends every model a ``ManifestRead``;
the model's state machine (``lifecycle.py``) decides what that means, and its worker
(``worker.py``) does it. Resync and SIGHUP send ``Retry``. The registry entry and the
status record of a model are written only by :meth:`Reconciler.publish`, from its state.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from modelrunner import estimate, reference
from modelrunner.engines.restart import RetryPolicy
from modelrunner.errors import ModelRunnerError
from modelrunner.keep_alive import effective, idle_limit
from modelrunner.manifest.load import load_folder
from modelrunner.manifest.problems import Problem
from modelrunner.manifest.spec import duration_seconds
from modelrunner.model_files import ModelFiles, from_local_path
from modelrunner.placement import Host, host_from_env
from modelrunner.reconcile import lifecycle as lc
from modelrunner.reconcile.admission import Resident, evictions
from modelrunner.reconcile.desired import DesiredState, desired_state, elsewhere_status
from modelrunner.reconcile.views import served_view, status_view
from modelrunner.reconcile.worker import ModelWorker
from modelrunner.registry import Registry
from modelrunner.status import ModelStatus

if TYPE_CHECKING:
    from modelrunner.engines.process import EngineProcess
    from modelrunner.metrics import Metrics
    from modelrunner.reconcile.desired import Desired
    from modelrunner.settings import Settings
    from modelrunner.store.store import Store

log = logging.getLogger("modelrunner.reconcile")

InstanceFactory = Callable[..., "EngineProcess"]
_EVICTION_WAIT = 15.0  # seconds beyond drain_timeout for evicted instances to stop
# A fresh instance is kept at least this long for its first request, whatever keep_alive
# says: the request that loaded it comes back after its 503's Retry-After.
_FIRST_REQUEST_GRACE = 10.0


class Reconciler:
    def __init__(
        self,
        settings: Settings,
        registry: Registry,
        store: Store,
        *,
        metrics: Metrics | None = None,
        instance_factory: InstanceFactory | None = None,
        policy: RetryPolicy | None = None,
        budget: estimate.Budget | None = None,
        host: Host | None = None,
    ) -> None:
        self.settings = settings
        self.host = host if host is not None else host_from_env()  # whose placement decides
        # A host read from the environment is read again at each pass: its labels file
        # may change (a relabelled pod); the last good identity is kept while it is invalid.
        self._host_from_env = host is None
        self._host_problem: str | None = None
        self.registry = registry
        self.store = store
        self.metrics = metrics
        self.policy = policy or RetryPolicy()
        self.drain_timeout = settings.drain_timeout
        if instance_factory is None:
            from modelrunner.engines import create_instance

            instance_factory = create_instance
        self._create_instance = instance_factory
        self._workers: dict[str, ModelWorker] = {}
        self._status: dict[str, ModelStatus] = {}
        self._problems: tuple[Problem, ...] = ()
        self._elsewhere: Mapping[str, Desired] = {}  # manifests placed on other hosts
        self._sighup = False
        self._budget = budget
        self._gpus: tuple[int, ...] = ()
        self._reserved: dict[tuple[str, int], estimate.Estimate] = {}
        self._admitting = asyncio.Lock()
        self._closing = False  # shutting down: nothing is published any more

    # -- a pass -----------------------------------------------------------------
    async def reconcile_once(self, *, retry_failed: bool = False) -> None:
        """Read the folder and tell every model what its manifest says now."""
        started = time.perf_counter()
        result = await asyncio.to_thread(load_folder, self.settings.models_dir)
        if self._host_from_env:
            self._follow_host(await asyncio.to_thread(_read_host))
        targets = {
            name: w.state.target.file
            for name, w in self._workers.items()
            if w.state.target is not None
        }
        state = desired_state(result, targets, self.host)
        self._problems = state.problems
        self._elsewhere = state.elsewhere
        for problem in state.problems:
            if problem.severity == "error":
                log.warning("manifest problem: %s", problem)
        sighup, self._sighup = self._sighup, False
        for name in sorted(set(self._workers) | set(state.models)):
            if name in state.held:
                event = lc.ManifestRead(None, problem=_held_detail(state, targets[name]))
            else:
                event = lc.ManifestRead(state.models.get(name))
            worker = self._workers.get(name)
            if worker is None:
                if event.desired is None:
                    continue
                worker = self._workers[name] = ModelWorker(name, self)
            worker.send(event)
            if retry_failed and worker.state.waiting is not None:
                files = worker.state.files
                stamp = await asyncio.to_thread(self.stamp, files) if files else None
                worker.send(lc.Retry(sighup=sighup, stamp=stamp))
        if self.metrics is not None:
            self.metrics.reconcile_passes.inc()
            self.metrics.reconcile_duration.observe(time.perf_counter() - started)

    def _follow_host(self, read: Host | str) -> None:
        """Take the host identity read this pass (or the reason it could not be read)."""
        if isinstance(read, str):
            if read != self._host_problem:
                log.warning("%s; placement keeps the labels read before", read)
            self._host_problem = read
            return
        self._host_problem = None
        if read != self.host:
            labels = ",".join(f"{k}={v}" for k, v in read.labels.items()) or "none"
            log.info("host %s: labels now %s; placement follows", read.name, labels)
            self.host = read

    def note_sighup(self) -> None:
        """The next pass retries even models that crashed the same way every time."""
        self._sighup = True

    # -- the one place views are written ------------------------------------------
    def publish(self, worker: ModelWorker) -> None:
        name, state = worker.name, worker.state
        if self._closing or self._workers.get(name) is not worker:
            return  # shutting down, or a worker already let go (a late chore)
        running = worker.running()
        served = served_view(
            state,
            running,
            gate=worker.gate,
            activate=lambda: worker.send(lc.RequestArrived()),
            hold_keep_alive=worker.hold_keep_alive,
            created=worker.created,
        )
        if served is None:
            self.registry.withdraw(name)
        else:
            self.registry.publish(served)
        previous = self._status.get(name)
        status = status_view(state, running, previous, time.time())
        if status is None:
            self._status.pop(name, None)
            if self.metrics is not None and previous is not None:
                self.metrics.forget_model(name)
        else:
            self._status[name] = status
            edited = previous is not None and previous.keep_alive != status.keep_alive
            if edited:  # an edited manifest beats a request's keep_alive
                worker.held_keep_alive = None
                if served is not None and served.endpoint is not None:
                    served.endpoint.keep_alive = None
            if self.metrics is not None and (previous is None or previous.phase != status.phase):
                self.metrics.instance_state(name, status.phase)
        if state.phase == "absent" and not worker.busy:
            del self._workers[name]  # retired and nothing left to do

    def failed(self, name: str, error: str) -> None:
        log.error("%s: %s", name, error)
        if self.metrics is not None:
            self.metrics.reconcile_errors.inc()

    # -- what workers share ---------------------------------------------------------
    async def resolve(self, desired: Desired, refresh: bool) -> ModelFiles:
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
        return await asyncio.to_thread(self.store.files_to_load, spec.model, policy, refresh)

    def create(
        self, desired: Desired, files: ModelFiles, on_exit: Callable[[EngineProcess], None]
    ) -> EngineProcess:
        return self._create_instance(desired.spec, files, self.settings, on_exit=on_exit)

    @staticmethod
    def stamp(files: ModelFiles) -> str | None:
        """Size, mtime and inode of the model file: a changed file is a new chance."""
        try:
            st = os.stat(files.path)
        except OSError:
            return "missing"
        return f"{st.st_size}:{st.st_mtime_ns}:{st.st_ino}"

    def pin(self, files: ModelFiles) -> None:
        if files.digest:
            with contextlib.suppress(Exception):
                self.store.pin(files.digest)

    def unpin(self, files: ModelFiles) -> None:
        digest = files.digest
        if not digest:
            return
        if not any(w.holds(digest) for w in self._workers.values()):
            with contextlib.suppress(Exception):
                self.store.unpin(digest)

    # -- memory admission -------------------------------------------------------------
    async def admit(
        self, name: str, attempt: int, desired: Desired, files: ModelFiles
    ) -> str | None:
        """None (and the memory reserved) when the model fits, unloading idle keep_alive
        instances least recently used first if need be; else why it does not fit."""
        async with self._admitting:
            budget = await self._host_budget()
            facts = await asyncio.to_thread(_facts, files)
            need = estimate.estimate(desired.spec, facts, self._gpus)
            victims = evictions(need, self._residents(exclude=name), budget)
            if victims:
                log.info("%s: unloading %s to make room", name, ", ".join(victims))
                for victim in victims:
                    self._workers[victim].send(lc.Idle())
                await self._wait_released(victims)
                victims = evictions(need, self._residents(exclude=name), budget)
            if victims is None or victims:
                in_use = sum(
                    r.need for r in self._residents(exclude=name) if r.device == need.device
                )
                return estimate.admission(need, in_use, budget) or "does not fit in memory"
            self._reserved[(name, attempt)] = need
            return None

    def release(self, name: str, attempt: int) -> None:
        if self._reserved.pop((name, attempt), None) is None:
            return
        loop = asyncio.get_running_loop()
        for worker in list(self._workers.values()):
            if worker.state.waiting == "memory":
                loop.call_soon(worker.send, lc.MemoryFreed())

    def _residents(self, exclude: str) -> list[Resident]:
        """What holds memory, but for model ``exclude``: its own old instance is replaced,
        not added to (a replacement runs beside it only until the old one drains)."""
        residents = []
        for (name, attempt), need in self._reserved.items():
            if need.need is None or name == exclude:
                continue
            worker = self._workers.get(name)
            evictable, last_used = False, 0.0
            if worker is not None:
                state, endpoint = worker.state, worker.endpoint()
                serving, desired = state.serving, lc.applied(state)
                if (
                    serving is not None
                    and serving.attempt == attempt
                    and endpoint is not None
                    and desired is not None
                ):
                    keep = effective(
                        duration_seconds(desired.spec.keep_alive, float("inf")),
                        endpoint.keep_alive,
                    )
                    evictable = (
                        state.phase == "serving" and keep < float("inf") and not endpoint.in_flight
                    )
                    last_used = endpoint.last_used
            residents.append(Resident(name, need.need, need.device, evictable, last_used))
        return residents

    async def _wait_released(self, names: tuple[str, ...]) -> None:
        deadline = time.monotonic() + self.drain_timeout + _EVICTION_WAIT
        while time.monotonic() < deadline:
            if not any(n in names for n, _ in self._reserved):
                return
            await asyncio.sleep(0.05)

    async def _host_budget(self) -> estimate.Budget:
        if self._budget is None:
            host = await asyncio.to_thread(estimate.read_host_memory)
            self._gpus = host.gpus
            self._budget = estimate.budget(host, self.settings.memory_budget)
            log.info(
                "memory budget: %s RAM (%s)",
                estimate.format_bytes(self._budget.ram),
                self._budget.source,
            )
        return self._budget

    # -- keep_alive -------------------------------------------------------------------
    async def _unload_idle(self) -> None:
        """Every second: tell models idle longer than their keep_alive."""
        while True:
            await asyncio.sleep(1.0)
            try:
                self._tell_idle()
            except Exception:  # keep the unloader alive; a bug here must not stop it
                log.exception("keep_alive check failed")

    def _tell_idle(self) -> None:
        now = time.monotonic()
        for worker in list(self._workers.values()):
            state, endpoint = worker.state, worker.endpoint()
            if state.phase != "serving" or endpoint is None or endpoint.in_flight:
                continue
            desired = lc.applied(state)
            if desired is None:
                continue
            manifest = duration_seconds(desired.spec.keep_alive, float("inf"))
            keep = idle_limit(manifest, endpoint.keep_alive, endpoint.served, _FIRST_REQUEST_GRACE)
            if now - endpoint.last_used >= keep:
                log.info("%s: idle longer than keep_alive; unloading", worker.name)
                worker.send(lc.Idle())

    # -- what the HTTP layer reads --------------------------------------------------
    def snapshot(self) -> list[ModelStatus]:
        here = [self._status[name] for name in sorted(self._status)]
        # A model still draining here is shown as it is; the rest as placed elsewhere.
        there = [elsewhere_status(d) for n, d in self._elsewhere.items() if n not in self._status]
        return sorted([*here, *there], key=lambda m: m.name)

    def unload(self, name: str) -> bool:
        """Unload a serving model now, as if its keep_alive had passed (``POST
        /engines/unload``); its next request loads it again. False when it is not loaded."""
        worker = self._workers.get(name)
        if worker is None or worker.state.phase != "serving":
            return False
        worker.send(lc.Idle())
        return True

    def problems(self) -> list[Problem]:
        return list(self._problems)

    def states(self) -> dict[str, lc.ModelState]:
        return {name: w.state for name, w in self._workers.items()}

    def idle(self) -> bool:
        return not any(w.busy for w in self._workers.values())

    async def wait_idle(self, timeout: float | None = None) -> None:
        """Until no worker has an effect under way (a pull, a start, a drain)."""
        async with asyncio.timeout(timeout):
            while not self.idle():
                await asyncio.sleep(0.02)

    def is_ready(self, names: tuple[str, ...] = ()) -> bool:
        if not self.idle():
            return False
        wanted = names or tuple(n for n, w in self._workers.items() if w.state.target is not None)
        for name in wanted:
            try:
                served = self.registry.lookup(name)
            except ModelRunnerError:
                return False
            status = self._status.get(served.name)
            if served.endpoint is None and not (status and status.phase == "standby"):
                return False
        return True

    # -- life cycle ---------------------------------------------------------------
    async def shutdown(self) -> None:
        """Withdraw every model, cancel what is under way, drain and stop every instance."""
        self._closing = True
        workers = list(self._workers.values())
        for worker in workers:
            self.registry.withdraw(worker.name)
        await asyncio.gather(*(w.shutdown() for w in workers), return_exceptions=True)
        self._workers.clear()

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Reconciler]:
        """Reconcile once, then follow the folder until the context ends."""
        from modelrunner.reconcile.triggers import Triggers

        labels = os.environ.get("MR_HOST_LABELS_FILE", "").strip()
        triggers = Triggers(
            self.settings,
            self.reconcile_once,
            on_sighup=self.note_sighup,
            labels_file=Path(labels) if labels and self._host_from_env else None,
        )
        unloader = asyncio.create_task(self._unload_idle(), name="reconcile:keep-alive")
        try:
            await self.reconcile_once()
            async with triggers.running():
                yield self
        finally:
            unloader.cancel()
            await asyncio.gather(unloader, return_exceptions=True)
            await self.shutdown()


def _read_host() -> Host | str:
    try:
        return host_from_env()
    except ModelRunnerError as exc:
        return str(exc)


def _held_detail(state: DesiredState, file: str) -> str:
    errors = [str(p) for p in state.problems if p.file == file and p.severity == "error"]
    more = f" (+{len(errors) - 3} more)" if len(errors) > 3 else ""
    return "; ".join(errors[:3]) + more


def _facts(files: ModelFiles) -> estimate.ModelFacts | None:
    try:
        return estimate.model_facts(files)
    except (OSError, ValueError, KeyError, ModelRunnerError):
        return None  # unreadable header: admitted without an estimate, never refused
