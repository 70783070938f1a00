"""The lock file with a real registry and a real engine: a tag that moves after `mr lock`
changes nothing a host serves until `mr lock` takes it; `mr plan` names the move; a locked
model in the store starts with no registry call."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import yaml

from tests.fixtures.registry import CuttingProxy
from tests.fixtures.serve import Server, stop


def mr(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "modelrunner", *args],
                          capture_output=True, text=True, env=env, timeout=120)  # fmt: skip


def publish(ref: str, gguf: Path, context: int, store: Path) -> str:
    """Package the GGUF with its own context size (a new manifest digest) and push it."""
    env = {**os.environ, "MR_STORE_DIR": str(store)}
    done = mr(
        "package", "--push", "--gguf", str(gguf), "--context-size", str(context), ref, env=env
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.split("packaged ")[1].split()[0]


def locked_digests(models: Path) -> dict[str, str]:
    data = yaml.safe_load((models / "models.lock").read_text())
    return {e["reference"]: e["digest"] for e in data["references"]}


def test_a_moved_tag_is_served_at_its_locked_digest_until_mr_lock_takes_it(
    start_server: Callable[..., Server],
    cutting_proxy: CuttingProxy,
    smollm2_gguf: Path,
    tmp_path: Path,
) -> None:
    ref = f"{cutting_proxy.address}/ai/locked:latest"
    publisher = tmp_path / "publisher"
    v1 = publish(ref, smollm2_gguf, 1024, publisher)
    models = tmp_path / "models.d"
    models.mkdir()
    (models / "smol.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "modelrunner/v1",
                "name": "smol",
                "model": ref,
                "pull_policy": "always",
                "llama.cpp": {"threads": 1},
            }
        )
    )
    env = {**os.environ, "MR_STORE_DIR": str(tmp_path / "ci-store")}
    locked = mr("lock", "--models-dir", str(models), env=env)
    assert locked.returncode == 0, locked.stderr
    assert locked_digests(models) == {ref: v1}
    assert mr("lock", "--check", "--models-dir", str(models), env=env).returncode == 0

    v2 = publish(ref, smollm2_gguf, 512, publisher)  # the tag moves
    assert v2 != v1
    check = mr("lock", "--check", "--models-dir", str(models), env=env)
    assert check.returncode == 1
    assert f"{ref} moved: {v1[:19]}… -> {v2[:19]}…; run `mr lock` to take it" in check.stdout

    server = start_server()  # a fresh host: an empty store
    served = server.wait_for("smol", lambda: server.ready("smol"), timeout=180)
    assert served["digest"] == v1
    answer = server.client().chat.completions.create(
        model="smol", messages=[{"role": "user", "content": "Hi"}], max_tokens=4
    )
    assert answer.choices[0].message.content is not None

    env = {**server.env, "MR_STORE_DIR": str(tmp_path / "ci-store")}
    plan = mr("plan", "--models-dir", str(models), "--url", server.url, env=env)
    assert plan.returncode == 2, plan.stdout + plan.stderr
    assert f"{ref} moved: {v1[:19]}… -> {v2[:19]}…" in plan.stdout
    as_json = mr("plan", "--json", "--models-dir", str(models), "--url", server.url, env=env)
    assert as_json.returncode == 2
    drift = json.loads(as_json.stdout)["drift"]
    assert [(d["kind"], d["subject"], d["locked"], d["now"]) for d in drift] == [
        ("moved", ref, v1, v2)
    ]

    taken = mr("lock", "--models-dir", str(models), env=env)
    assert taken.returncode == 0, taken.stderr
    assert f"~ {ref} {v1[:19]}… -> {v2[:19]}…" in taken.stdout
    assert locked_digests(models) == {ref: v2}
    server.wait_for("the new digest", lambda: server.ready("smol")["digest"] == v2, 180)
    clean = mr("plan", "--models-dir", str(models), "--url", server.url, env=env)
    assert clean.returncode == 0, clean.stdout + clean.stderr

    # A restart with the locked model in the store asks the registry nothing, even with
    # pull_policy: always (a digest cannot move).
    stop(server)
    cutting_proxy.requests.clear()
    again = start_server()
    assert again.wait_for("smol", lambda: again.ready("smol"), timeout=180)["digest"] == v2
    assert cutting_proxy.requests == []

    # A stored blob of the served model that no longer matches its digest is drift too
    # (`mr plan` on the server's host, with its store).
    served_gguf = max(
        (again.store_dir / "blobs" / "sha256").iterdir(), key=lambda p: p.stat().st_size
    )
    served_gguf.chmod(0o644)
    with served_gguf.open("r+b") as blob:
        blob.seek(-1, os.SEEK_END)
        last = blob.read(1)
        blob.seek(-1, os.SEEK_END)
        blob.write(bytes([last[0] ^ 0xFF]))
    plan = mr("plan", "--json", "--models-dir", str(models), "--url", again.url, env=again.env)
    assert plan.returncode == 2, plan.stdout + plan.stderr
    (corrupted,) = json.loads(plan.stdout)["drift"]
    assert corrupted["kind"] == "corrupted" and corrupted["subject"] == "smol"
    assert served_gguf.name in corrupted["message"]
