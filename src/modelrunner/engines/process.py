"""One owner per engine process: its state machine, from spawn to a freed process group.

    stopped ──start()──▶ starting ──probe ok──▶ ready ──stop()──▶ draining ─▶ stopping ─▶ stopped
                            ▲  │                  │
                   backoff  │  │ exit / probe     │ exit (crash)
                            └──┴──── fails ◀──────┘
                                      │ more than max_restarts in a row
                                      ▼
                                   failed (reason: the last lines of stderr)

A single supervisor task owns the process; ``start`` and ``stop`` only ask it. Each child
is the leader of its own process group, so stopping (SIGTERM, then SIGKILL after a timeout)
reaches everything it spawned (vLLM's engine core, tokenizer workers...).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Final, Literal

import httpx

from modelrunner.engines.launch import Launch
from modelrunner.engines.logfile import RotatingLog, Tail
from modelrunner.engines.memory import group_alive, group_rss_bytes
from modelrunner.engines.ports import free_port, port_is_free
from modelrunner.engines.restart import RestartPolicy, backoff_delay, gives_up
from modelrunner.errors import EngineError, EngineStartFailed

log = logging.getLogger("modelrunner.engines")

InstanceState = Literal["stopped", "starting", "ready", "draining", "stopping", "failed"]
StateCallback = Callable[["EngineProcess"], None]
LaunchFor = Callable[[int], Launch]  # port -> launch description

# Health checks while starting: often at first (a small model is up in a fraction of a
# second), then less often (a big one takes minutes).
_POLL_FIRST: Final = 0.02
_POLL_MAX: Final = 0.5
_READ_CHUNK: Final = 64 * 1024
_PR_SET_PDEATHSIG: Final = 1


class _AttemptFailed(Exception):
    """One start attempt failed; the message says how (the stderr tail is added later)."""


def _die_with_parent() -> None:
    # Runs in the child before exec: if modelrunner itself dies, the kernel sends SIGTERM,
    # so no engine outlives the server that owns it (Linux only; elsewhere a no-op).
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class EngineProcess:
    """An engine instance: one process (group) serving one manifest on a loopback port."""

    def __init__(
        self,
        instance_id: str,
        engine: str,
        launch_for: LaunchFor,
        *,
        log_dir: Path,
        policy: RestartPolicy | None = None,
        on_state_change: StateCallback | None = None,
        port: int | None = None,
    ) -> None:
        self.instance_id = instance_id
        self.engine = engine
        self.policy = policy or RestartPolicy()
        self.on_state_change = on_state_change
        self.port = port or free_port()
        self.state: InstanceState = "stopped"
        self.reason: str | None = None  # why it is starting again, failed or stopped
        self.restarts = 0  # processes started after the first
        self.launch: Launch | None = None
        self.log_path = log_dir / f"{instance_id}.log"
        self._log = RotatingLog(self.log_path)
        self._stderr_tail = Tail()
        self._launch_for = launch_for
        self._proc: asyncio.subprocess.Process | None = None
        self._readers: list[asyncio.Task[None]] = []
        self._supervisor: asyncio.Task[None] | None = None
        self._first_outcome: asyncio.Future[str | None] | None = None
        self._waiters: list[tuple[frozenset[str], asyncio.Future[InstanceState]]] = []

    # -- what callers read ----------------------------------------------------
    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        """The engine's process id (also its process group id) while it runs."""
        proc = self._proc
        return proc.pid if proc is not None and proc.returncode is None else None

    def memory_bytes(self) -> int:
        """Resident memory of the engine's whole process group; 0 when not running."""
        pid = self.pid
        return group_rss_bytes(pid) if pid is not None else 0

    def stderr_tail(self) -> str:
        return self._stderr_tail.text()

    # -- what callers ask -----------------------------------------------------
    async def start(self) -> None:
        """Start the engine and return once it is ready (health and a real request answered).

        Failed attempts are retried with backoff under the restart policy; when it gives up
        this raises :class:`EngineStartFailed` carrying the stderr tail, and the state is
        ``failed``. Calling it again while starting or ready waits for the same outcome.
        """
        outcome = self._first_outcome
        if outcome is None or self._supervisor is None or self._supervisor.done():
            if self._supervisor is not None:
                await self._supervisor  # a finished (failed) run: start afresh
            outcome = asyncio.get_running_loop().create_future()
            self._first_outcome = outcome
            self._supervisor = asyncio.create_task(
                self._supervise(), name=f"engine {self.instance_id}"
            )
        failure = await asyncio.shield(outcome)
        if failure is not None:
            raise EngineStartFailed(
                f"{self.engine} instance {self.instance_id} failed to start: {failure}"
            )

    async def stop(
        self, timeout: float = 10.0, *, drained: Callable[[], Awaitable[object]] | None = None
    ) -> None:
        """Stop the instance and free its process group.

        ``drained``, when given, is awaited first (state ``draining``), e.g. the router's
        wait for requests in flight. Then SIGTERM to the group, ``timeout`` seconds of grace,
        SIGKILL to whatever is left. The supervisor and reader tasks are awaited before this
        returns, so nothing of the instance is left running.
        """
        if drained is not None and self.state == "ready":
            self._set("draining", None)
            await drained()
        if self.state not in ("stopped", "failed") or self._proc is not None:
            self._set("stopping", None)
        supervisor, self._supervisor = self._supervisor, None
        if supervisor is not None:
            supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await supervisor
        await self._terminate(timeout)
        if self._first_outcome is not None and not self._first_outcome.done():
            self._first_outcome.set_result("stopped before it was ready")
        self._log.close()
        self._set("stopped", "stopped on request")

    async def wait_for(self, *states: InstanceState, timeout: float) -> InstanceState:
        """Wait until the state is one of ``states``; raises ``TimeoutError`` after ``timeout``."""
        if self.state in states:
            return self.state
        waiter = (frozenset(states), asyncio.get_running_loop().create_future())
        self._waiters.append(waiter)
        try:
            return await asyncio.wait_for(waiter[1], timeout)
        finally:
            self._waiters.remove(waiter)

    async def metrics(self) -> str | None:
        """The engine's own Prometheus metrics (text), if it exposes them and is ready."""
        launch = self.launch
        if launch is None or launch.metrics_path is None or self.state != "ready":
            return None
        try:
            async with httpx.AsyncClient(base_url=self.base_url, timeout=5.0) as client:
                response = await client.get(launch.metrics_path)
        except httpx.HTTPError as exc:
            raise EngineError(f"instance {self.instance_id}: metrics scrape failed: {exc}") from exc
        return response.text if response.status_code == 200 else None

    # -- the supervisor: the only code that spawns, restarts and gives up ----------
    async def _supervise(self) -> None:
        failures = 0
        try:
            while True:
                self._set("starting", self.reason if failures else None)
                try:
                    await self._spawn_until_ready()
                except _AttemptFailed as exc:
                    await self._terminate(timeout=5.0)
                    reason = f"{exc}{self._tail_suffix()}"
                else:
                    self._set("ready", None)
                    self._resolve_first(None)
                    ready_at = time.monotonic()
                    ended = await self._wait_exit_or_hang()
                    if time.monotonic() - ready_at >= self.policy.stable_after:
                        failures = 0
                    await self._terminate(timeout=5.0)  # sweep what the leader left behind
                    reason = f"{ended}{self._tail_suffix()}"
                    log.warning("instance %s crashed: %s", self.instance_id, reason)
                failures += 1
                if gives_up(failures, self.policy):
                    self._set("failed", f"gave up after {failures} failed starts: {reason}")
                    self._resolve_first(self.reason)
                    return
                delay = backoff_delay(failures, self.policy)
                self._set(
                    "starting",
                    f"restart {failures}/{self.policy.max_restarts} in {delay:.1f}s: {reason}",
                )
                await asyncio.sleep(delay)
                self.restarts += 1
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug here must fail the instance loudly, not vanish
            log.exception("supervisor of instance %s failed", self.instance_id)
            await self._terminate(timeout=5.0)
            self._set("failed", f"supervisor error: {exc!r}")
            self._resolve_first(self.reason)

    async def _spawn_until_ready(self) -> None:
        if self.restarts and not port_is_free(self.port):
            self.port = free_port()  # someone took it while we were down
        launch = self._launch_for(self.port)
        self.launch = launch
        self._stderr_tail.clear()
        header = f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} start: {' '.join(launch.argv)}\n"
        self._log.write(header.encode())
        try:
            proc = await asyncio.create_subprocess_exec(
                *launch.argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env={**os.environ, **launch.env},
                start_new_session=True,  # its own process group, signalled as a whole
                preexec_fn=_die_with_parent,
            )
        except OSError as exc:
            raise _AttemptFailed(f"cannot run {launch.argv[0]}: {exc}") from exc
        self._proc = proc
        self._readers = [
            asyncio.create_task(self._pump(stream, tail))
            for stream, tail in ((proc.stdout, None), (proc.stderr, self._stderr_tail))
            if stream is not None
        ]
        await self._wait_ready(proc, launch)

    async def _wait_ready(self, proc: asyncio.subprocess.Process, launch: Launch) -> None:
        deadline = time.monotonic() + launch.startup_timeout
        poll = _POLL_FIRST
        async with httpx.AsyncClient(base_url=self.base_url, timeout=5.0) as client:
            while True:
                if proc.returncode is not None:
                    raise _AttemptFailed(f"exited with code {proc.returncode} before it was ready")
                if time.monotonic() > deadline:
                    raise _AttemptFailed(f"not healthy within {launch.startup_timeout:.0f}s")
                with contextlib.suppress(httpx.HTTPError):
                    if (await client.get(launch.health_path)).status_code == 200:
                        break
                await asyncio.sleep(poll)  # returncode is set by the child watcher meanwhile
                poll = min(_POLL_MAX, poll * 1.5)
            probe = launch.probe
            try:
                response = await client.request(
                    probe.method,
                    probe.path,
                    json=dict(probe.body),
                    timeout=max(1.0, deadline - time.monotonic()),
                )
            except httpx.HTTPError as exc:
                raise _AttemptFailed(f"readiness request {probe.path} failed: {exc!r}") from exc
            if response.status_code >= 300:
                raise _AttemptFailed(
                    f"readiness request {probe.path} answered {response.status_code}: "
                    f"{response.text[:500]}"
                )

    async def _wait_exit_or_hang(self) -> str:
        """While ready: how the process ended, or that it stopped answering (it is then
        still running; the caller terminates it)."""
        exited = asyncio.create_task(self._wait_exit())
        hung = asyncio.create_task(self._watch_health())
        try:
            await asyncio.wait({exited, hung}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (exited, hung):
                task.cancel()
            await asyncio.gather(exited, hung, return_exceptions=True)
        if exited.done() and not exited.cancelled() and exited.exception() is None:
            return f"exited with code {exited.result()} while ready"
        return hung.result()

    async def _watch_health(self) -> str:
        policy, path = self.policy, self.launch.health_path if self.launch else "/health"
        failures = 0
        async with httpx.AsyncClient(base_url=self.base_url, timeout=policy.health_timeout) as c:
            while True:
                await asyncio.sleep(policy.health_interval)
                try:
                    healthy = (await c.get(path)).status_code == 200
                except httpx.HTTPError:
                    healthy = False
                failures = 0 if healthy else failures + 1
                if failures >= policy.health_failures:
                    return (
                        f"stopped answering {path} while ready "
                        f"({failures} checks in a row, {policy.health_interval:g}s apart)"
                    )

    async def _wait_exit(self) -> int:
        proc = self._proc
        if proc is None:
            return 0
        code = await proc.wait()
        await self._finish_readers(timeout=2.0)
        return code

    async def _pump(self, stream: asyncio.StreamReader, tail: Tail | None) -> None:
        while chunk := await stream.read(_READ_CHUNK):
            self._log.write(chunk)
            if tail is not None:
                tail.feed(chunk)

    async def _finish_readers(self, timeout: float) -> None:
        readers, self._readers = self._readers, []
        if not readers:
            return
        # Pipes close when the last process holding them exits; don't wait forever for that.
        _, pending = await asyncio.wait(readers, timeout=timeout)
        for task in pending:
            task.cancel()
        await asyncio.gather(*readers, return_exceptions=True)

    async def _terminate(self, timeout: float) -> None:
        """SIGTERM the process group, wait up to ``timeout``, SIGKILL what is left, reap."""
        proc = self._proc
        if proc is None:
            return
        pgid = proc.pid
        _signal_group(pgid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        try:
            await asyncio.wait_for(proc.wait(), timeout)
            # The leader is gone; give the rest of its group what is left of the grace time.
            while group_alive(pgid) and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
        except TimeoutError:
            log.warning("instance %s ignored SIGTERM for %.0fs", self.instance_id, timeout)
        _signal_group(pgid, signal.SIGKILL)
        await proc.wait()
        await self._finish_readers(timeout=2.0)
        self._proc = None  # only now: a stop that cancels us midway signals the group again
        self._log.write(f"=== exited with code {proc.returncode}\n".encode())

    # -- state ------------------------------------------------------------------
    def _set(self, state: InstanceState, reason: str | None) -> None:
        changed = (state, reason) != (self.state, self.reason)
        self.state, self.reason = state, reason
        if not changed:
            return
        log.info("instance %s: %s%s", self.instance_id, state, f" ({reason})" if reason else "")
        for states, waiter in self._waiters:
            if state in states and not waiter.done():
                waiter.set_result(state)
        if self.on_state_change is not None:
            try:
                self.on_state_change(self)
            except Exception:
                log.exception("on_state_change of instance %s failed", self.instance_id)

    def _resolve_first(self, failure: str | None) -> None:
        if self._first_outcome is not None and not self._first_outcome.done():
            self._first_outcome.set_result(failure)

    def _tail_suffix(self) -> str:
        tail = self._stderr_tail.text()
        return f"; stderr:\n{tail}" if tail else "; stderr was empty"


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)
