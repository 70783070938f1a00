"""The process owner with real processes: readiness, crash and restart with backoff, giving
up with the stderr tail, and stopping that leaves no process of the group behind."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import httpx
import pytest

from modelrunner import engines
from modelrunner.engines.launch import Launch, Probe
from modelrunner.engines.memory import group_alive
from modelrunner.engines.process import EngineProcess, InstanceState
from modelrunner.engines.restart import RestartPolicy
from modelrunner.errors import EngineStartFailed
from modelrunner.model_files import ModelFiles
from modelrunner.settings import Settings
from tests.fixtures.engines import make_manifest

pytestmark = pytest.mark.engine
FAST = RestartPolicy(max_restarts=2, backoff_base=0.1, backoff_max=0.5)
PROBE = Probe("POST", "/v1/completions", {"prompt": "Hi", "max_tokens": 1})


def stub(script: Path, env: dict[str, str] | None = None, timeout: float = 20) -> object:
    def launch_for(port: int) -> Launch:
        argv = (sys.executable, str(script), str(port))
        return Launch(argv, env or {}, "/health", PROBE, timeout)

    return launch_for


def alive(pid: int) -> bool:
    """Running, as opposed to gone or a zombie (which PID 1 of a container may never reap)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rfind(")") + 2] != "Z"


def instance(tmp_path: Path, launch_for: object, **kw: object) -> tuple[EngineProcess, list[str]]:
    seen: list[str] = []
    proc = EngineProcess(
        "test-1",
        "stub",
        launch_for,  # type: ignore[arg-type]
        log_dir=tmp_path,
        policy=kw.pop("policy", FAST),  # type: ignore[arg-type]
        on_state_change=lambda p: seen.append(p.state),
    )
    return proc, seen


def test_always_failing_engine_ends_failed_with_its_stderr(tmp_path: Path) -> None:
    def launch_for(port: int) -> Launch:
        code = "import sys; print('loading weights', file=sys.stderr); "
        code += "sys.exit('error: weights.gguf is corrupt at offset 42')"
        return Launch((sys.executable, "-c", code), {}, "/health", PROBE, 20)

    proc, seen = instance(tmp_path, launch_for)

    async def run() -> None:
        with pytest.raises(EngineStartFailed) as info:
            await proc.start()
        message = str(info.value)
        assert "test-1" in message
        assert "corrupt at offset 42" in message  # the stderr tail is the reason
        assert "exited with code 1" in message
        assert proc.state == "failed"
        assert proc.reason is not None and "gave up after 3 failed starts" in proc.reason
        assert proc.restarts == FAST.max_restarts
        await proc.stop()

    asyncio.run(run())
    assert seen[0] == "starting"
    assert "failed" in seen
    assert seen[-1] == "stopped"
    assert "corrupt at offset 42" in (tmp_path / "test-1.log").read_text()  # the log kept it


def test_never_healthy_engine_times_out(tmp_path: Path) -> None:
    def launch_for(port: int) -> Launch:
        return Launch((sys.executable, "-c", "import time; time.sleep(60)"), {}, "/h", PROBE, 1)

    proc, _ = instance(tmp_path, launch_for, policy=RestartPolicy(max_restarts=0))

    async def run() -> None:
        with pytest.raises(EngineStartFailed, match="not healthy within 1s"):
            await proc.start()
        assert proc.pid is None  # the hung process was killed, not left running

    asyncio.run(run())


def test_failing_readiness_request_is_not_ready(tmp_path: Path, stub_engine: Path) -> None:
    proc, _ = instance(
        tmp_path, stub(stub_engine, {"STUB_STATUS": "500"}), policy=RestartPolicy(max_restarts=0)
    )

    async def run() -> None:
        with pytest.raises(
            EngineStartFailed, match="readiness request /v1/completions answered 500"
        ):
            await proc.start()

    asyncio.run(run())


def test_stop_kills_a_stubborn_group_with_no_orphans(tmp_path: Path, stub_engine: Path) -> None:
    proc, seen = instance(tmp_path, stub(stub_engine, {"STUB_STUBBORN": "1"}))

    async def run() -> tuple[int, int]:
        await proc.start()
        assert proc.state == "ready"
        assert httpx.get(proc.base_url + "/health").status_code == 200
        pgid = proc.pid
        assert pgid is not None
        grandchild = int(proc.stderr_tail().split("grandchild ")[1].split()[0])
        assert proc.memory_bytes() > 0
        await proc.stop(timeout=1.0)  # SIGTERM is ignored: SIGKILL after 1 s
        return pgid, grandchild

    pgid, grandchild = asyncio.run(run())
    assert not group_alive(pgid)
    assert not alive(grandchild)
    assert seen == ["starting", "ready", "stopping", "stopped"]


def test_drain_runs_before_stopping(tmp_path: Path, stub_engine: Path) -> None:
    proc, seen = instance(tmp_path, stub(stub_engine))

    async def run() -> None:
        await proc.start()
        await proc.stop(drained=lambda: asyncio.sleep(0.05))

    asyncio.run(run())
    assert seen == ["starting", "ready", "draining", "stopping", "stopped"]


def test_killed_llamacpp_engine_restarts(tmp_path: Path, smollm2_gguf: Path) -> None:
    manifest = make_manifest(name="smol", **{"llama.cpp": {"threads": 1}}, context_size=256)
    states: list[InstanceState] = []
    proc = engines.create_instance(
        manifest,
        ModelFiles("gguf", smollm2_gguf),
        Settings(log_dir=tmp_path),
        policy=FAST,
        on_state_change=lambda p: states.append(p.state),
    )

    async def run() -> None:
        await proc.start()
        first = proc.pid
        assert first is not None
        os.kill(first, signal.SIGKILL)  # a crash, as far as the owner can tell
        await proc.wait_for("starting", timeout=10)
        assert proc.reason is not None and "exited with code -9 while ready" in proc.reason
        assert "restart 1/2" in proc.reason
        await proc.wait_for("ready", timeout=60)
        assert proc.pid not in (None, first)
        assert proc.restarts == 1
        body = {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4}
        async with httpx.AsyncClient(base_url=proc.base_url, timeout=60) as client:
            response = await client.post("/v1/chat/completions", json=body)
        assert response.status_code == 200
        await proc.stop()
        assert not group_alive(first)

    asyncio.run(run())
    assert states == ["starting", "ready", "starting", "ready", "stopping", "stopped"]


def test_hung_engine_is_killed_and_restarted(tmp_path: Path, smollm2_gguf: Path) -> None:
    """Alive but silent (SIGSTOP stands in for a deadlock): the liveness check catches it."""
    manifest = make_manifest(name="smol", **{"llama.cpp": {"threads": 1}}, context_size=256)
    policy = RestartPolicy(
        max_restarts=2,
        backoff_base=0.1,
        backoff_max=0.5,
        health_interval=0.3,
        health_timeout=0.5,
        health_failures=2,
    )
    proc = engines.create_instance(
        manifest, ModelFiles("gguf", smollm2_gguf), Settings(log_dir=tmp_path), policy=policy
    )

    async def run() -> None:
        await proc.start()
        first = proc.pid
        assert first is not None
        os.kill(first, signal.SIGSTOP)
        await proc.wait_for("starting", timeout=30)
        assert proc.reason is not None
        assert "stopped answering /health while ready (2 checks in a row" in proc.reason
        await proc.wait_for("ready", timeout=60)
        assert proc.pid not in (None, first)
        assert not group_alive(first)  # the hung process was killed, not left behind
        async with httpx.AsyncClient(base_url=proc.base_url, timeout=60) as client:
            response = await client.post("/v1/completions", json={"prompt": "Hi", "max_tokens": 2})
        assert response.status_code == 200
        await proc.stop()

    asyncio.run(run())


def test_stop_while_starting_ends_the_start(tmp_path: Path) -> None:
    def launch_for(port: int) -> Launch:
        return Launch((sys.executable, "-c", "import time; time.sleep(60)"), {}, "/h", PROBE, 60)

    proc, seen = instance(tmp_path, launch_for)

    async def run() -> int:
        starting = asyncio.create_task(proc.start())
        await proc.wait_for("starting", timeout=5)
        while proc.pid is None:
            await asyncio.sleep(0.01)
        pgid = proc.pid
        await proc.stop(timeout=2)
        with pytest.raises(EngineStartFailed, match="stopped before it was ready"):
            await starting
        return pgid

    pgid = asyncio.run(run())
    assert not group_alive(pgid)
    assert seen == ["starting", "stopping", "stopped"]
