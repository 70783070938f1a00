"""The process owner with real processes: readiness, a failed start reported with how the
process ended (signal, phase, stderr tail), an end while serving reported once and never
restarted by the owner itself, and stopping that leaves no process of the group behind."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from pathlib import Path

import httpx
import pytest

from modelrunner import engines
from modelrunner.engines.exits import Exit
from modelrunner.engines.launch import Launch, Probe
from modelrunner.engines.memory import group_alive
from modelrunner.engines.process import EngineProcess, Liveness
from modelrunner.errors import EngineStartFailed
from modelrunner.model_files import ModelFiles
from modelrunner.settings import Settings
from tests.fixtures.engines import make_manifest

pytestmark = pytest.mark.engine
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


def instance(tmp_path: Path, launch_for: object) -> tuple[EngineProcess, list[str]]:
    ended: list[str] = []
    proc = EngineProcess(
        "test-1",
        "stub",
        launch_for,  # type: ignore[arg-type]
        log_dir=tmp_path,
        on_exit=lambda p: ended.append(p.reason or ""),
    )
    return proc, ended


def test_failing_engine_reports_its_exit_code_and_stderr_once(tmp_path: Path) -> None:
    def launch_for(port: int) -> Launch:
        code = "import sys; print('loading weights', file=sys.stderr); "
        code += "sys.exit('error: weights.gguf is corrupt at offset 42')"
        return Launch((sys.executable, "-c", code), {}, "/health", PROBE, 20)

    proc, ended = instance(tmp_path, launch_for)

    async def run() -> None:
        with pytest.raises(EngineStartFailed) as info:
            await proc.start()
        message = str(info.value)
        assert "test-1" in message
        assert "corrupt at offset 42" in message  # the stderr tail is the reason
        assert (
            "engine exited with code 1 (an error; its stderr says which) while loading" in message
        )
        assert info.value.exit == Exit(1, "loading")
        assert proc.state == "exited"
        assert proc.pid is None  # one attempt: nothing restarted behind the caller's back
        await proc.stop()

    asyncio.run(run())
    assert ended == []  # a failed start is the caller's news, not an on_exit
    assert "corrupt at offset 42" in (tmp_path / "test-1.log").read_text()  # the log kept it


def test_engine_killed_by_sigsegv_during_readiness_says_so(
    tmp_path: Path, stub_engine: Path
) -> None:
    proc, _ = instance(tmp_path, stub(stub_engine, {"STUB_CRASH": "SIGSEGV"}))

    async def run() -> None:
        with pytest.raises(EngineStartFailed) as info:
            await proc.start()
        assert info.value.exit == Exit(-11, "readiness")
        assert (
            "engine killed by SIGSEGV (segmentation fault) during its readiness request; "
            "last stderr: stub engine up\ncomputing the first token"
        ) in str(info.value)
        assert "RemoteProtocolError" not in str(info.value)  # the process died: say that

    asyncio.run(run())


def test_never_healthy_engine_times_out(tmp_path: Path) -> None:
    def launch_for(port: int) -> Launch:
        return Launch((sys.executable, "-c", "import time; time.sleep(60)"), {}, "/h", PROBE, 1)

    proc, _ = instance(tmp_path, launch_for)

    async def run() -> None:
        with pytest.raises(EngineStartFailed, match="not healthy within 1s"):
            await proc.start()
        assert proc.pid is None  # the hung process was killed, not left running

    asyncio.run(run())


def test_failing_readiness_request_is_not_ready(tmp_path: Path, stub_engine: Path) -> None:
    proc, _ = instance(tmp_path, stub(stub_engine, {"STUB_STATUS": "500"}))

    async def run() -> None:
        with pytest.raises(
            EngineStartFailed, match="readiness request /v1/completions answered 500"
        ):
            await proc.start()

    asyncio.run(run())


def test_stop_kills_a_stubborn_group_with_no_orphans(tmp_path: Path, stub_engine: Path) -> None:
    proc, ended = instance(tmp_path, stub(stub_engine, {"STUB_STUBBORN": "1"}))

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
    assert proc.state == "stopped"
    assert ended == []  # a stop asked for is not an end to report


def test_killed_llamacpp_engine_is_reported_not_restarted(
    tmp_path: Path, smollm2_gguf: Path
) -> None:
    manifest = make_manifest(name="smol", **{"llama.cpp": {"threads": 1}}, context_size=256)
    ended: list[EngineProcess] = []
    proc = engines.create_instance(
        manifest,
        ModelFiles("gguf", smollm2_gguf),
        Settings(log_dir=tmp_path),
        on_exit=ended.append,
    )

    async def run() -> None:
        await proc.start()
        first = proc.pid
        assert first is not None
        os.kill(first, signal.SIGKILL)  # a crash, as far as the owner can tell
        await proc.wait_for("exited", timeout=10)
        assert proc.reason is not None
        assert proc.reason.startswith("engine killed by SIGKILL (killed; often the kernel's")
        assert "while serving" in proc.reason
        assert proc.exit == Exit(-9, "serving")
        await asyncio.sleep(0.5)
        assert proc.pid is None and proc.state == "exited"  # the model decides, not the owner
        await proc.stop()
        assert not group_alive(first)

    asyncio.run(run())
    assert ended == [proc]


def test_hung_engine_is_killed_and_reported(tmp_path: Path, smollm2_gguf: Path) -> None:
    """Alive but silent (SIGSTOP stands in for a deadlock): the liveness check catches it,
    while a prefill longer than the hang threshold does not look like a hang."""
    section = {"threads": 1}
    manifest = make_manifest(name="smol", **{"llama.cpp": section}, context_size=2048)
    ended: list[EngineProcess] = []
    proc = engines.create_instance(
        manifest,
        ModelFiles("gguf", smollm2_gguf),
        Settings(log_dir=tmp_path),
        liveness=Liveness(interval=0.15, hung_after=0.75),
        on_exit=ended.append,
    )
    # About 1,000 tokens and one token out: nearly all prefill, no token for its duration.
    prefill = {"model": "smol", "prompt": "hello " * 1000, "max_tokens": 1}

    async def run() -> None:
        await proc.start()
        first = proc.pid
        assert first is not None
        async with httpx.AsyncClient(base_url=proc.base_url, timeout=120) as client:
            began = time.monotonic()
            answer = await client.post("/v1/completions", json=prefill)
            took = time.monotonic() - began
        assert answer.status_code == 200, answer.text
        assert took > proc.liveness.hung_after, "the prefill was too short to tell"
        assert proc.state == "ready", proc.reason  # /health answered all along
        os.kill(first, signal.SIGSTOP)
        await proc.wait_for("exited", timeout=30)
        assert proc.reason is not None
        assert proc.reason.startswith("hung: no progress for 0.75 s (no answer from /health")
        assert "killed with SIGKILL" in proc.reason
        assert proc.exit is None  # it did not end by itself: it was killed for hanging
        await proc.stop()
        assert not group_alive(first)  # the hung process was killed, not left behind

    asyncio.run(run())
    assert ended == [proc]


def test_stop_while_starting_ends_the_start(tmp_path: Path) -> None:
    def launch_for(port: int) -> Launch:
        return Launch((sys.executable, "-c", "import time; time.sleep(60)"), {}, "/h", PROBE, 60)

    proc, _ = instance(tmp_path, launch_for)

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


def test_cancelling_the_start_stops_the_process(tmp_path: Path) -> None:
    """What a manifest change does to a start in progress: the caller cancels it."""

    def launch_for(port: int) -> Launch:
        return Launch((sys.executable, "-c", "import time; time.sleep(60)"), {}, "/h", PROBE, 60)

    proc, _ = instance(tmp_path, launch_for)

    async def run() -> int:
        starting = asyncio.create_task(proc.start())
        while proc.pid is None:
            await asyncio.sleep(0.01)
        pgid = proc.pid
        starting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await starting
        assert proc.state == "stopped" and proc.pid is None
        return pgid

    assert not group_alive(asyncio.run(run()))
