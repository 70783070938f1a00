"""A corrupted blob under a real `mr serve`: verified before an engine first loads it after
a start, refused with a located error when the reference may not be pulled, fetched again
from a real registry when it may."""

from __future__ import annotations

import hashlib
import signal
from collections.abc import Callable
from pathlib import Path

from tests.fixtures.registry import Registry
from tests.fixtures.serve import Server, manifest
from tests.integration.reconcile.test_reconciler import ask
from tests.integration.store.test_served import mr
from tests.unit.store.test_local import flip_a_byte


def _gguf_blob(store: Path, gguf: Path) -> Path:
    digest = hashlib.sha256(gguf.read_bytes()).hexdigest()
    return store / "blobs" / "sha256" / digest


def test_a_corrupted_blob_is_refused_or_fetched_again(
    start_server: Callable[..., Server], smollm2_gguf: Path, registry: Registry
) -> None:
    ref = f"{registry.address}/verify/smollm2:q4"
    server = start_server()
    pushed = mr(server, "package", "--gguf", str(smollm2_gguf), "--store",
                str(server.store_dir), ref, "--push")  # fmt: skip
    assert pushed.returncode == 0, pushed.stderr
    server.write("smol.yaml", manifest(smollm2_gguf, "smol", model=ref, pull_policy="never"))
    server.wait_for("smol", lambda: server.ready("smol"))
    server.process.send_signal(signal.SIGTERM)
    server.process.wait(60)

    blob = _gguf_blob(server.store_dir, smollm2_gguf)
    flip_a_byte(blob, at=50_000_000, keep_mtime=True)

    # pull_policy: never -> not served from bad bytes; the error names model, blob, file.
    server = start_server()
    failed = server.wait_for("smol to fail", lambda: (m := server.status().get("smol"))
                             and m["phase"] == "failed" and m)  # fmt: skip
    assert f"blob sha256:{blob.name} is corrupted" in failed["last_error"]
    assert str(blob) in failed["last_error"] and ref.split("/", 1)[1] in failed["last_error"]
    assert "is corrupted" in server.tail(200)  # logged, not silent

    # A policy that may pull: the bad blob is fetched again and the model serves.
    server.write("smol.yaml", manifest(smollm2_gguf, "smol", model=ref,
                                       pull_policy="if-not-present"))  # fmt: skip
    server.process.send_signal(signal.SIGHUP)  # retry the failed model now, not at resync
    server.wait_for("smol after the re-pull", lambda: server.ready("smol"), 120)
    assert ask(server, "smol")
    assert hashlib.sha256(blob.read_bytes()).hexdigest() == blob.name
    assert "fetching it again" in server.tail(400)
