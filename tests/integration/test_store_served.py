"""`mr rm --force` of a model a real `mr serve` serves, and pins across a clean stop: the
files stay until the instance stops (a crash in between restarts from them), the status
says so, and SIGTERM leaves no pin behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from tests.fixtures.serve import Server, manifest
from tests.integration.test_reconcile import _children, ask

REF = "ai/smollm2:135M-Q4_1"


def mr(server: Server, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "modelrunner", *args],
                          capture_output=True, text=True, env=server.env, timeout=60)  # fmt: skip


def test_rm_force_keeps_a_served_model_until_it_stops_and_no_pin_outlives_sigterm(
    start_server: Callable[..., Server], smollm2_gguf: Path
) -> None:
    server = start_server()
    store = server.store_dir
    packaged = mr(server, "package", "--gguf", str(smollm2_gguf), "--store", str(store), REF)
    assert packaged.returncode == 0, packaged.stderr
    server.write("smol.yaml", manifest(smollm2_gguf, "smol", model=REF, pull_policy="never"))
    server.wait_for("smol", lambda: server.ready("smol"))
    assert sorted(p.suffix for p in (store / "pins").iterdir()) == [".json", ".lock"]

    refused = mr(server, "rm", "--store", str(store), REF)
    assert refused.returncode != 0 and "--force" in refused.stderr
    removed = mr(server, "rm", "--force", "--store", str(store), REF)
    assert removed.returncode == 0, removed.stderr
    assert "files are kept until that instance stops" in removed.stdout
    assert server.status()["smol"]["removed_from_store"] is True
    status = mr(server, "status")
    assert "smol: removed from the store (mr rm --force) while served" in status.stdout

    # The engine crashes: it restarts from the kept files (it used to fail for good with
    # "Model path does not exist").
    (engine,) = _children(server.process.pid)
    os.killpg(engine, signal.SIGKILL)
    server.wait_for("the restart", lambda: (m := server.ready("smol")) and m["instance"]
                    and _children(server.process.pid) not in ([], [engine]))  # fmt: skip
    assert ask(server, "smol")
    assert list((store / "blobs" / "sha256").iterdir()), "files went before the instance"

    server.process.send_signal(signal.SIGTERM)
    assert server.process.wait(60) in (0, -signal.SIGTERM)
    assert list((store / "pins").iterdir()) == []  # no pin outlives a clean stop
    assert list((store / "blobs" / "sha256").iterdir()) == []  # and the files went with it
    assert list((store / "bundles").iterdir()) == []
