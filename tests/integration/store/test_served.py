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
from tests.integration.reconcile.test_reconciler import _children

REF = "ai/smollm2:135M-Q4_1"


def mr(server: Server, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "modelrunner", *args],
                          capture_output=True, text=True, env=server.env, timeout=60)  # fmt: skip


def test_rm_force_keeps_a_served_model_until_its_instance_stops_and_no_pin_outlives_sigterm(
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

    # The engine crashes: the instance has stopped, so the files go with it, and the model
    # is reported as gone from the store, with the command that brings it back (it used to
    # restart five times on "Model path does not exist" and show `starting 5/5`).
    (engine,) = _children(server.process.pid)
    os.killpg(engine, signal.SIGKILL)
    server.wait_for(
        "the failure",
        lambda: "not in the local store" in (server.status()["smol"]["last_error"] or ""),
    )
    gone = server.status()["smol"]
    assert gone["phase"] == "failed" and f"mr pull {REF}" in gone["last_error"]
    assert list((store / "blobs" / "sha256").iterdir()) == []  # went with the instance

    server.process.send_signal(signal.SIGTERM)
    assert server.process.wait(60) in (0, -signal.SIGTERM)
    assert list((store / "pins").iterdir()) == []  # no pin outlives a clean stop
    assert list((store / "bundles").iterdir()) == []
