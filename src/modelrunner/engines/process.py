"""One owner per engine process: spawn it, probe it, watch it, and report what happened.

    stopped ──start()──▶ starting ──health, then one real request──▶ ready
                            │                                          │ exit, or hung
                            │ exit / timeout / bad answer              │ (/health silent:
                            ▼                                          ▼  SIGKILL)
                 EngineStartFailed (how it ended)            exited (``on_exit`` called)
    any ──stop()──▶ stopping ──▶ stopped

It never restarts on its own (Docker Model Runner's contract for backends): a failed
start raises, an instance that ends while ready is reported once through ``on_exit``,
and the model's life cycle (``reconcile/lifecycle.py``) decides whether to start another.
How it ended is kept as data (:class:`~modelrunner.engines.exits.Exit`: return code and
phase) and in words (``reason``: signal name, phase, last stderr lines).

Each child is the leader of its own process group, so stopping (SIGTERM, then SIGKILL after
a timeout) reaches everything it spawned (vLLM's engine core, tokenizer workers...).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

import httpx

from modelrunner.engines import exits
from modelrunner.engines.exits import Exit
from modelrunner.engines.health import HealthProbe
from modelrunner.engines.launch import Launch
from modelrunner.engines.logfile import RotatingLog, Tail
from modelrunner.engines.memory import group_alive, group_rss_bytes
from modelrunner.engines.ports import LOOPBACK, free_port
from modelrunner.errors import EngineStartFailed

log = logging.getLogger("modelrunner.engines")

InstanceState = Literal["stopped", "starting", "ready", "exited", "stopping"]
ExitCallback = Callable[["EngineProcess"], None]
LaunchFor = Callable[[int], Launch]  # port -> launch description

# Health checks while starting: often at first (a small model is up in a fraction of a
# second), then less often (a big one takes minutes).
_POLL_FIRST: Final = 0.02
_POLL_MAX: Final = 0.5
_READ_CHUNK: Final = 64 * 1024
_PR_SET_PDEATHSIG: Final = 1
# A readiness request that lost its connection: how long to wait for the process to be
# seen gone, so the reason can say it died (and how) rather than only that a socket closed.
_DEATH_GRACE: Final = 2.0


@dataclass(frozen=True, slots=True)
class Liveness:
    """While ready, the health endpoint is asked every ``interval`` seconds; a process
    alive but without a good answer for ``hung_after`` seconds (a hang, a deadlock, SIGSTOP,
    a host swapping it out) is hung: killed with SIGKILL at once and reported as ended.

    Why the health endpoint and not the gaps between tokens: a long prefill sends no token
    for as long as it takes, and so does a hang, but a prefill does not stop ``/health``.
    Every engine answers it on another thread or process than the one computing (mr's
    llama.cpp and Diffusers servers: a thread per connection, while llama.cpp's decode and
    torch release the GIL; vLLM: its API server process, the model in its engine core), so
    it answers within milliseconds through any prefill or generation, and only a frozen or
    deadlocked process goes silent on it."""

    interval: float = 1.0
    hung_after: float = 5.0


class _AttemptFailed(Exception):
    """The start failed; ``exit`` says how the process ended, when it did."""

    def __init__(self, message: str, exit: Exit | None = None) -> None:
        super().__init__(message)
        self.exit = exit


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
        liveness: Liveness | None = None,
        on_exit: ExitCallback | None = None,
        port: int | None = None,
    ) -> None:
        self.instance_id = instance_id
        self.engine = engine
        self.liveness = liveness or Liveness()
        self.on_exit = on_exit
        self.port = port or free_port()
        self.state: InstanceState = "stopped"
        self.reason: str | None = None  # why the start failed, or why it ended
        self.exit: Exit | None = None  # how the process ended, when it ended by itself
        self.launch: Launch | None = None
        self.log_path = log_dir / f"{instance_id}.log"
        self._log = RotatingLog(self.log_path)
        self._stderr_tail = Tail()
        self._launch_for = launch_for
        self._proc: asyncio.subprocess.Process | None = None
        self._readers: list[asyncio.Task[None]] = []
        self._watcher: asyncio.Task[None] | None = None
        self._stopping = False
        self._waiters: list[tuple[frozenset[str], asyncio.Future[InstanceState]]] = []
        self._handoff_dir: str | None = None  # private (0700), removed with the process

    # -- what callers read ----------------------------------------------------
    @property
    def base_url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def handoff_path(self) -> str | None:
        """The Unix socket the engine takes handed-off streams on, if its server does."""
        return os.path.join(self._handoff_dir, "handoff") if self._handoff_dir else None

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
        """Spawn the engine and return once it is ready (health and a real request answered).

        One attempt: on failure the process group is gone and :class:`EngineStartFailed`
        says why (``exit`` set when the process ended by itself). Cancelling the caller
        stops the process too.
        """
        if self.state != "stopped":
            raise RuntimeError(f"instance {self.instance_id} was started already")
        self._set("starting", None)
        try:
            await self._spawn_until_ready()
        except _AttemptFailed as exc:
            await self._terminate(timeout=5.0)
            if self._stopping:
                raise EngineStartFailed(
                    f"{self.engine} instance {self.instance_id} stopped before it was ready"
                ) from None
            self.exit = exc.exit
            self._set("exited", str(exc))
            raise EngineStartFailed(
                f"{self.engine} instance {self.instance_id} failed to start: {exc}",
                exit=exc.exit,
            ) from None
        except BaseException:  # cancelled (the model's target moved on), or a bug
            await asyncio.shield(self._terminate(timeout=5.0))
            self._set("stopped", "stopped before it was ready")
            raise
        self._set("ready", None)
        self._watcher = asyncio.create_task(self._watch(), name=f"engine {self.instance_id}")

    async def stop(self, timeout: float = 10.0) -> None:
        """Stop the instance and free its process group: SIGTERM to the group, ``timeout``
        seconds of grace, SIGKILL to whatever is left. Nothing of it runs when this returns."""
        self._stopping = True
        if self.state in ("starting", "ready") or self._proc is not None:
            self._set("stopping", None)
        watcher, self._watcher = self._watcher, None
        if watcher is not None:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
        await self._terminate(timeout)
        self._log.close()
        if self.state != "exited":
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

    # -- starting -----------------------------------------------------------------
    async def _spawn_until_ready(self) -> None:
        launch = self._launch_for(self.port)
        self.launch = launch
        argv = launch.argv
        if launch.handoff:
            # A short path of its own: a Unix socket's path is limited to 107 bytes.
            self._remove_handoff_dir()
            self._handoff_dir = tempfile.mkdtemp(prefix="mr-engine-")
            argv = (*argv, "--handoff", os.path.join(self._handoff_dir, "handoff"))
        self._stderr_tail.clear()
        header = f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} start: {' '.join(argv)}\n"
        self._log.write(header.encode())
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
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

    async def _ended(self, proc: asyncio.subprocess.Process, phase: exits.ExitPhase) -> Exit:
        await self._finish_readers(timeout=2.0)  # the last stderr lines say why
        assert proc.returncode is not None
        return Exit(proc.returncode, phase)

    async def _wait_ready(self, proc: asyncio.subprocess.Process, launch: Launch) -> None:
        deadline = time.monotonic() + launch.startup_timeout
        poll = _POLL_FIRST
        async with httpx.AsyncClient(base_url=self.base_url, timeout=5.0) as client:
            while True:
                if proc.returncode is not None:
                    ended = await self._ended(proc, "loading")
                    raise _AttemptFailed(exits.reason(ended, self.stderr_tail()), ended)
                if time.monotonic() > deadline:
                    raise _AttemptFailed(
                        f"not healthy within {launch.startup_timeout:.0f}s{self._tail_suffix()}"
                    )
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
                # A lost connection mostly means the process died answering: say how.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(proc.wait(), _DEATH_GRACE)
                if proc.returncode is not None:
                    ended = await self._ended(proc, "readiness")
                    raise _AttemptFailed(exits.reason(ended, self.stderr_tail()), ended) from None
                raise _AttemptFailed(
                    f"readiness request {probe.path} failed ({exc!r}) while the process "
                    f"still runs{self._tail_suffix()}"
                ) from None
            if response.status_code >= 300:
                raise _AttemptFailed(
                    f"readiness request {probe.path} answered {response.status_code}: "
                    f"{response.text[:500]}{self._tail_suffix()}"
                )

    # -- while ready --------------------------------------------------------------
    async def _watch(self) -> None:
        """Until the process ends or hangs; then sweep its group and report."""
        exited = asyncio.create_task(self._wait_exit())
        hung = asyncio.create_task(self._watch_health())
        try:
            await asyncio.wait({exited, hung}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (exited, hung):
                task.cancel()
            await asyncio.gather(exited, hung, return_exceptions=True)
        if exited.done() and not exited.cancelled() and exited.exception() is None:
            self.exit = exited.result()
            reason = exits.reason(self.exit, self.stderr_tail())
            await self._terminate(timeout=5.0)  # sweep what the leader left behind
        else:
            # Hung: SIGKILL now (a stopped or deadlocked process never handles SIGTERM),
            # and report it before the sockets' closing reaches the requests in flight, so
            # they see their instance gone (503, retry) rather than a broken engine (502).
            reason = f"{hung.result()}{self._tail_suffix()}"
            if self._proc is not None:
                _signal_group(self._proc.pid, signal.SIGKILL)
        log.warning("instance %s ended: %s", self.instance_id, reason)
        self._set("exited", reason)
        if self.on_exit is not None:
            try:
                self.on_exit(self)
            except Exception:
                log.exception("on_exit of instance %s failed", self.instance_id)
        await self._terminate(timeout=0.0)  # reap (SIGKILL sent already, or none left)

    async def _watch_health(self) -> str:
        live, path = self.liveness, self.launch.health_path if self.launch else "/health"
        last_good = time.monotonic()
        probe = HealthProbe(LOOPBACK, self.port, path)
        try:
            while True:
                await asyncio.sleep(live.interval)
                left = live.hung_after - (time.monotonic() - last_good)
                if await probe.healthy(timeout=max(0.1, left)):
                    last_good = time.monotonic()
                elif time.monotonic() - last_good >= live.hung_after:
                    return (
                        f"hung: no progress for {live.hung_after:g} s (no answer from {path} "
                        "while serving); killed with SIGKILL"
                    )
        finally:
            probe.close()

    async def _wait_exit(self) -> Exit:
        proc = self._proc
        assert proc is not None
        await proc.wait()
        return await self._ended(proc, "serving")

    # -- the process --------------------------------------------------------------
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
        """SIGTERM the process group, wait up to ``timeout``, SIGKILL what is left, reap.
        ``timeout`` 0: SIGKILL at once."""
        proc = self._proc
        if proc is None:
            self._remove_handoff_dir()
            return
        pgid = proc.pid
        if timeout > 0:
            _signal_group(pgid, signal.SIGTERM)
            deadline = time.monotonic() + timeout
            try:
                await asyncio.wait_for(proc.wait(), timeout)
                # The leader is gone; give the rest of its group what is left of the grace.
                while group_alive(pgid) and time.monotonic() < deadline:
                    await asyncio.sleep(0.1)
            except TimeoutError:
                log.warning("instance %s ignored SIGTERM for %.0fs", self.instance_id, timeout)
        _signal_group(pgid, signal.SIGKILL)
        await proc.wait()
        await self._finish_readers(timeout=2.0)
        self._proc = None  # only now: a stop that cancels us midway signals the group again
        self._remove_handoff_dir()
        self._log.write(f"=== {exits.describe(proc.returncode or 0)}\n".encode())

    def _remove_handoff_dir(self) -> None:
        if self._handoff_dir is not None:
            shutil.rmtree(self._handoff_dir, ignore_errors=True)
            self._handoff_dir = None

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

    def _tail_suffix(self) -> str:
        tail = self._stderr_tail.text().strip()
        return f"; last stderr: {tail}" if tail else "; its stderr was empty"


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)
