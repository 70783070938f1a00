"""The reconciler's workers with real processes standing in for engines (the stub engine of
tests/fixtures/engines.py), so crashes, hangs and memory can be staged exactly: a
deterministic crash stops being retried until the file changes, a fix aborts a start in
progress, and memory admission refuses, then evicts an idle instance."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from modelrunner.engines.exits import Exit
from modelrunner.engines.launch import Launch, Probe
from modelrunner.engines.memory import group_alive
from modelrunner.engines.process import EngineProcess
from modelrunner.engines.restart import RetryPolicy
from modelrunner.errors import ModelUnavailable
from modelrunner.estimate import Budget, GiB, MiB
from modelrunner.manifest.spec import ModelManifest
from modelrunner.model_files import ModelFiles
from modelrunner.reconcile.execute import Reconciler
from modelrunner.registry import Registry
from modelrunner.settings import Settings
from modelrunner.store.store import Store

pytestmark = pytest.mark.engine
PROBE = Probe("POST", "/v1/completions", {"prompt": "Hi", "max_tokens": 1})
FAST = RetryPolicy(backoff_base=0.05, backoff_max=0.2)


class StubEngines:
    """An instance factory: the stub engine, behaving as the manifest's env says
    (``STUB_CRASH``, ``STUB_HANG``); every process it started is kept."""

    def __init__(self, script: Path, log_dir: Path) -> None:
        self.script = script
        self.log_dir = log_dir
        self.started: list[EngineProcess] = []

    def __call__(
        self,
        spec: ModelManifest,
        files: ModelFiles,
        settings: Settings,
        *,
        on_exit: Callable[[EngineProcess], None],
    ) -> EngineProcess:
        env = dict(spec.env)
        argv: tuple[str, ...] = (sys.executable, str(self.script))
        if env.pop("STUB_HANG", None):
            argv = (sys.executable, "-c", "import time; time.sleep(600)")

        def launch_for(port: int) -> Launch:
            return Launch((*argv, str(port)), env, "/health", PROBE, 60)

        instance = EngineProcess(
            f"{spec.name}-{len(self.started)}",
            "llama.cpp",
            launch_for,
            log_dir=self.log_dir,
            on_exit=on_exit,
        )
        self.started.append(instance)
        return instance


def write(folder: Path, name: str, model: Path, **fields: Any) -> None:
    doc = {"apiVersion": "modelrunner/v1", "name": name, "model": str(model),
           "engine": "llama.cpp", "context_size": 1024, **fields}  # fmt: skip
    (folder / f"{name}.yaml").write_text(yaml.safe_dump(doc))


def make(tmp_path: Path, stub_engine: Path, **kw: Any) -> tuple[Reconciler, StubEngines, Path]:
    folder = tmp_path / "models.d"
    folder.mkdir()
    engines = StubEngines(stub_engine, tmp_path)
    settings = Settings(models_dir=folder, log_dir=tmp_path, drain_timeout=2.0)
    reconciler = Reconciler(
        settings, Registry(), Store(tmp_path / "store"), instance_factory=engines, policy=FAST, **kw
    )
    return reconciler, engines, folder


async def until(check: Callable[[], object], timeout: float = 30.0) -> None:
    async with asyncio.timeout(timeout):
        while not check():
            await asyncio.sleep(0.02)


def test_same_crash_three_times_stops_retrying_until_the_file_changes(
    tmp_path: Path, stub_engine: Path
) -> None:
    reconciler, engines, folder = make(tmp_path, stub_engine)
    weights = tmp_path / "m.gguf"
    weights.write_bytes(b"not read by the stub")
    write(folder, "m", weights, env={"STUB_CRASH": "SIGSEGV"})

    async def run() -> None:
        await reconciler.reconcile_once()
        state = lambda: reconciler.states()["m"]  # noqa: E731
        await until(lambda: state().waiting == "fix")
        assert len(engines.started) == 3
        assert [p.exit for p in engines.started] == [Exit(-11, "readiness")] * 3
        error = reconciler.snapshot()[0].last_error or ""
        assert "engine killed by SIGSEGV (segmentation fault) during its readiness request" in error
        assert "last stderr: stub engine up" in error
        assert (
            "the same crash 3 times in a row: llama.cpp crashes on this CPU; rebuild with " in error
        )
        assert "scripts/install.sh --llama-portable" in error
        with (
            pytest.raises(ModelUnavailable, match=r"failed to start: .*SIGSEGV"),
            reconciler.registry.acquire("m"),
        ):
            pass
        # Resync: nothing changed, so nothing is started.
        await reconciler.reconcile_once(retry_failed=True)
        await asyncio.sleep(0.5)
        assert len(engines.started) == 3
        # The model file changes (re-pulled, replaced): one more round of attempts.
        weights.write_bytes(b"other bytes")
        await reconciler.reconcile_once(retry_failed=True)
        await until(lambda: len(engines.started) > 3)
        await until(lambda: state().waiting == "fix")
        assert len(engines.started) == 6
        # SIGHUP asks again even with the same files.
        reconciler.note_sighup()
        await reconciler.reconcile_once(retry_failed=True)
        await until(lambda: len(engines.started) > 6)
        await reconciler.shutdown()

    asyncio.run(run())
    assert all(p.pid is None for p in engines.started)


def test_a_fix_aborts_a_start_in_progress_and_serves_at_once(
    tmp_path: Path, stub_engine: Path
) -> None:
    reconciler, engines, folder = make(tmp_path, stub_engine)
    weights = tmp_path / "m.gguf"
    weights.write_bytes(b"x")
    write(folder, "m", weights, env={"STUB_HANG": "1"})  # never healthy, for 60 s

    async def run() -> None:
        await reconciler.reconcile_once()
        await until(lambda: engines.started and engines.started[0].pid is not None)
        hanging = engines.started[0].pid
        assert hanging is not None
        write(folder, "m", weights, env={"FIXED": "1"})
        await reconciler.reconcile_once()
        # Well before the hanging start's own 60 s timeout would have ended it.
        await until(lambda: reconciler.snapshot()[0].phase == "ready", timeout=30)
        assert not group_alive(hanging)  # the half-started instance was stopped
        assert len(engines.started) == 2
        assert [p.pid is not None for p in engines.started] == [False, True]  # exactly one
        with reconciler.registry.acquire("m") as (_, endpoint):
            assert endpoint.instance_id == engines.started[1].instance_id
        await reconciler.shutdown()

    asyncio.run(run())


def test_memory_admission_refuses_then_evicts_an_idle_model(
    tmp_path: Path, stub_engine: Path, smollm2_gguf: Path
) -> None:
    # The estimate is SmolLM2's (the stub engine stands in for llama.cpp): ~180 MiB.
    budget = Budget(ram=300 * MiB, gpu=None, source="test")
    reconciler, engines, folder = make(tmp_path, stub_engine, budget=budget)
    write(folder, "a", smollm2_gguf)
    write(folder, "b", smollm2_gguf)

    async def run() -> None:
        await reconciler.reconcile_once()
        await reconciler.wait_idle(30)
        status = {s.name: s for s in reconciler.snapshot()}
        # Both start at once: whichever is admitted first serves, the other does not fit.
        phases = sorted((status["a"].phase, status["b"].phase))
        assert phases == ["failed", "ready"], phases
        won, lost = ("a", "b") if status["a"].phase == "ready" else ("b", "a")
        error = status[lost].last_error
        assert error is not None
        assert error.startswith("needs 1")  # e.g. "needs 180 MiB, ..."
        assert "MiB free of a 300 MiB budget" in error
        assert len(engines.started) == 1
        # The winner gets a keep_alive: now it is idle and may be unloaded for the other. A
        # retry of the other (resync) evicts it, least recently used first, and starts it.
        write(folder, won, smollm2_gguf, keep_alive="1h")
        await reconciler.reconcile_once(retry_failed=True)
        await until(lambda: {s.name: s.phase for s in reconciler.snapshot()}[lost] == "ready")
        status = {s.name: s for s in reconciler.snapshot()}
        assert status[won].phase == "standby"
        assert status[lost].last_error is None
        # A restart-class change of the one serving: its own old instance is replaced, not
        # added to.
        before = status[lost].instance
        write(folder, lost, smollm2_gguf, context_size=512)
        await reconciler.reconcile_once()
        await until(lambda: {s.name: s for s in reconciler.snapshot()}[lost].instance != before)
        status = {s.name: s for s in reconciler.snapshot()}
        assert (status[lost].phase, status[lost].last_error) == ("ready", None)
        await reconciler.shutdown()

    asyncio.run(run())
    assert GiB > 0
