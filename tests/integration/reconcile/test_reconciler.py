"""The reconciler end to end: `mr serve` on a folder, real llama.cpp instances (SmolLM2),
the official openai client, and the folder edited the ways operators and GitOps tools do."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import openai
import pytest

from tests.fixtures.serve import Server, manifest

pytestmark = pytest.mark.engine


def ask(server: Server, model: str) -> str:
    answer = server.client().chat.completions.create(
        model=model, messages=[{"role": "user", "content": "Say hi"}], max_tokens=4
    )
    return answer.choices[0].message.content or ""


def test_drop_a_manifest_and_the_model_answers(
    start_server: Callable[..., Server], smollm2_gguf: Path
) -> None:
    server = start_server()
    server.write("smol.yaml", manifest(smollm2_gguf, "smol", aliases=["tiny"]))
    server.wait_for("smol to be ready", lambda: server.ready("smol"))
    assert ask(server, "smol")
    assert ask(server, "tiny")
    readyz = httpx.get(f"{server.url}/readyz", timeout=5)
    assert readyz.status_code == 200
    # `mr logs` finds the instance serving the alias and prints its log.
    logs = subprocess.run(
        [sys.executable, "-m", "modelrunner", "logs", "tiny", "--url", server.url],
        capture_output=True, text=True, env=server.env,
    )  # fmt: skip
    assert logs.returncode == 0, logs.stderr
    assert "serving on http://127.0.0.1:" in logs.stdout


def test_restart_class_change_under_load_drops_no_request(
    start_server: Callable[..., Server], smollm2_gguf: Path
) -> None:
    server = start_server()
    server.write("smol.yaml", manifest(smollm2_gguf, "smol"))
    first = server.wait_for("smol to be ready", lambda: server.ready("smol"))

    sent, failures = [0], []
    stop = threading.Event()

    def load() -> None:
        client = server.client(max_retries=0, timeout=60)
        while not stop.is_set():
            try:
                client.completions.create(model="smol", prompt="Once upon", max_tokens=4)
            except openai.OpenAIError as exc:
                failures.append(repr(exc))
            sent[0] += 1

    workers = [threading.Thread(target=load) for _ in range(3)]
    for worker in workers:
        worker.start()
    try:
        time.sleep(1.0)
        server.write("smol.yaml", manifest(smollm2_gguf, "smol", context_size=2048))
        second = server.wait_for(
            "the new instance",
            lambda: (m := server.ready("smol")) and m["instance"] != first["instance"] and m,
        )
        time.sleep(1.5)  # keep the load on after the switch: the new instance serves it
    finally:
        stop.set()
        for worker in workers:
            worker.join()
    assert failures == []
    assert sent[0] > 10
    assert second["restart_key"] != first["restart_key"]
    assert ask(server, "smol")


def test_alias_edit_keeps_the_same_process(
    start_server: Callable[..., Server], smollm2_gguf: Path
) -> None:
    server = start_server()
    server.write("smol.yaml", manifest(smollm2_gguf, "smol", aliases=["old"]))
    before = server.wait_for("smol", lambda: server.ready("smol"))
    server.write("smol.yaml", manifest(smollm2_gguf, "smol", aliases=["new"]))
    after = server.wait_for(
        "the new alias", lambda: (m := server.ready("smol")) and m["aliases"] == ["new"] and m
    )
    assert after["instance"] == before["instance"]
    assert ask(server, "new")
    with pytest.raises(openai.NotFoundError) as missing:
        ask(server, "old")
    assert missing.value.code == "model_not_found"


def test_invalid_manifest_keeps_the_old_model_serving(
    start_server: Callable[..., Server], smollm2_gguf: Path
) -> None:
    server = start_server()
    good = manifest(smollm2_gguf, "smol")
    server.write("smol.yaml", good)
    before = server.wait_for("smol", lambda: server.ready("smol"))
    server.write("smol.yaml", good.replace("context_size: 1024", "context_size: -5"))
    held = server.wait_for("the error in status", lambda: server.status()["smol"]["last_error"])
    assert "smol.yaml:5:15: $.context_size: must be >= 1; got -5" in held
    assert server.status()["smol"]["instance"] == before["instance"]
    assert ask(server, "smol")
    # `mr plan` shows the hold and the problem, and exits 1 for the invalid manifest.
    plan = subprocess.run(
        [sys.executable, "-m", "modelrunner", "plan", "--models-dir", str(server.models_dir),
         "--url", server.url],
        capture_output=True, text=True, env=server.env,
    )  # fmt: skip
    assert plan.returncode == 1, plan
    assert "hold" in plan.stdout and "must be >= 1" in plan.stderr
    # A broken manifest of a model never applied shows in /problems and `mr status`.
    server.write("new.yaml", "apiVersion: modelrunner/v1\nmodel: ai/x:1\nthreads: 2\n")
    problems = server.wait_for(
        "the new problem",
        lambda: [p for p in httpx.get(f"{server.url}/problems").json() if "new.yaml" in p["file"]],
    )
    assert problems[0]["line"] == 3 and "unknown key 'threads'" in problems[0]["message"]
    status = subprocess.run(
        [sys.executable, "-m", "modelrunner", "status", "--url", server.url],
        capture_output=True, text=True, env=server.env,
    )  # fmt: skip
    assert "new.yaml:3:1: $.threads: error: unknown key 'threads'" in status.stdout
    # The good file back: the error goes with the pass that no longer sees it (it used to
    # stay in the status for ever, through resync and SIGHUP).
    server.write("smol.yaml", good)
    server.wait_for("the error to clear", lambda: server.status()["smol"]["last_error"] is None)
    assert server.status()["smol"]["instance"] == before["instance"]


def test_deleting_the_file_retires_only_its_model(
    start_server: Callable[..., Server], smollm2_gguf: Path
) -> None:
    server = start_server()
    server.write("a.yaml", manifest(smollm2_gguf, "a"))
    server.write("b.yaml", manifest(smollm2_gguf, "b"))
    server.wait_for("a and b", lambda: server.ready("a") and server.ready("b"))
    kept = server.status()["b"]["instance"]
    (server.models_dir / "a.yaml").unlink()
    server.wait_for("a to be retired", lambda: "a" not in server.status())
    with pytest.raises(openai.NotFoundError):
        ask(server, "a")
    assert server.status()["b"]["instance"] == kept
    assert ask(server, "b")


def test_configmap_symlink_swap_converges_in_polling_mode(
    start_server: Callable[..., Server], smollm2_gguf: Path
) -> None:
    server = start_server(MR_POLL="true")
    folder = server.models_dir

    def publish(version: str, text: str) -> None:
        # What the kubelet does: a new timestamped folder, then an atomic swap of ..data.
        data = folder / f"..2026_11_21_{version}"
        data.mkdir()
        (data / "smol.yaml").write_text(text)
        os.symlink(data.name, folder / "..data_tmp")
        os.replace(folder / "..data_tmp", folder / "..data")
        if not (folder / "smol.yaml").is_symlink():
            os.symlink("..data/smol.yaml", folder / "smol.yaml")

    publish("v1", manifest(smollm2_gguf, "smol", aliases=["v1"]))
    server.wait_for("v1", lambda: (m := server.ready("smol")) and m["aliases"] == ["v1"])
    publish("v2", manifest(smollm2_gguf, "smol", aliases=["v2"]))
    server.wait_for("v2", lambda: (m := server.ready("smol")) and m["aliases"] == ["v2"])
    assert ask(server, "v2")


def test_fifty_rapid_edits_converge_to_the_last(
    start_server: Callable[..., Server], smollm2_gguf: Path
) -> None:
    server = start_server()
    server.write("smol.yaml", manifest(smollm2_gguf, "smol"))
    server.wait_for("smol", lambda: server.ready("smol"))
    for i in range(50):
        size = 512 + 64 * (i % 4)  # restart-class changes mixed with alias edits
        server.write(
            "smol.yaml", manifest(smollm2_gguf, "smol", context_size=size, aliases=[f"v{i}"])
        )
        time.sleep(0.01)
    last = server.wait_for(
        "the last edit", lambda: (m := server.ready("smol")) and m["aliases"] == ["v49"] and m
    )
    plan = subprocess.run(
        [sys.executable, "-m", "modelrunner", "plan", "--models-dir", str(server.models_dir),
         "--url", server.url],
        capture_output=True, text=True, env=server.env,
    )  # fmt: skip
    assert plan.returncode == 0, plan.stdout + plan.stderr
    assert "no changes" in plan.stdout
    assert ask(server, "v49")
    assert last["phase"] == "ready"


def test_store_reference_is_served_and_sigterm_stops_every_engine(
    start_server: Callable[..., Server], smollm2_gguf: Path
) -> None:
    server = start_server()
    subprocess.run(
        [sys.executable, "-m", "modelrunner", "package", "--gguf", str(smollm2_gguf),
         "--store", str(server.store_dir), "ai/smollm2:135M-Q4_1"],
        check=True, capture_output=True, env=server.env,
    )  # fmt: skip
    server.write(
        "smol.yaml",
        manifest(smollm2_gguf, "smol", model="ai/smollm2:135M-Q4_1", pull_policy="never"),
    )
    ready = server.wait_for("smol", lambda: server.ready("smol"))
    assert ready["digest"].startswith("sha256:")
    assert ask(server, "smol")
    engines = _children(server.process.pid)
    assert engines, "the engine should be a child of mr serve"
    server.process.send_signal(signal.SIGTERM)
    # uvicorn re-raises the signal once its graceful shutdown is done
    assert server.process.wait(60) in (0, -signal.SIGTERM)
    assert "Application shutdown complete" in server.tail()
    assert "stopped (stopped on request)" in server.tail()
    assert [pid for pid in engines if Path(f"/proc/{pid}").exists()] == []


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def test_lazy_load_on_first_request_and_unload_after_keep_alive(
    start_server: Callable[..., Server], smollm2_gguf: Path
) -> None:
    server = start_server()
    server.write("smol.yaml", manifest(smollm2_gguf, "smol", preload=False, keep_alive="2s"))
    standby = server.wait_for(
        "standby", lambda: (m := server.status().get("smol")) and m["phase"] == "standby" and m
    )
    assert standby["instance"] is None
    assert httpx.get(f"{server.url}/readyz", timeout=5).status_code == 200
    assert _children(server.process.pid) == []  # nothing loaded yet

    with pytest.raises(openai.APIStatusError) as loading:
        server.client(max_retries=0).chat.completions.create(
            model="smol", messages=[{"role": "user", "content": "hi"}], max_tokens=2
        )
    assert loading.value.status_code == 503
    assert loading.value.response.headers["retry-after"]
    loaded = server.wait_for("the model to load", lambda: server.ready("smol"))
    assert ask(server, "smol")
    assert len(_children(server.process.pid)) == 1

    # keep_alive: 2s of idleness unloads it again, and frees the process.
    server.wait_for("the unload", lambda: server.status()["smol"]["phase"] == "standby", timeout=30)
    server.wait_for("the engine to exit", lambda: _children(server.process.pid) == [], 30)
    assert loaded["instance"]
