"""``mr`` store commands as a user runs them (a real process, a real registry)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures.registry import Registry

pytestmark = pytest.mark.registry


def mr(*args: str, store: Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MR_STORE_DIR": str(store)}
    done = subprocess.run(
        [sys.executable, "-m", "modelrunner", *args],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if check:
        assert done.returncode == 0, done.stderr
    return done


def test_package_push_pull_ls_inspect_tag_rm_df(
    registry: Registry, smollm2_gguf: Path, tmp_path: Path
) -> None:
    ref = f"{registry.address}/cli/smollm2:q4"
    publisher, host = tmp_path / "pub", tmp_path / "host"
    out = mr(
        "package",
        "--gguf",
        str(smollm2_gguf),
        "--context-size",
        "2048",
        ref,
        "--push",
        store=publisher,
    )
    assert f"{ref}: pushed sha256:" in out.stdout
    pulled = mr("pull", ref, store=host)
    assert smollm2_gguf.name in pulled.stdout
    # Not a terminal: progress comes as plain lines with bytes, rate and the end state.
    assert "MiB /" in pulled.stderr and "/s done" in pulled.stderr

    listed = json.loads(mr("ls", "--json", store=host).stdout)
    assert [m["tags"] for m in listed] == [[ref]]
    assert listed[0]["quantization"] == "Q4_1"
    info = json.loads(mr("inspect", "--json", ref, store=host).stdout)
    assert info["config"]["config"]["context_size"] == 2048
    assert "Q4_1" in mr("inspect", ref, store=host).stdout

    mr("tag", ref, "local/smollm2:mine", store=host)
    assert "local/smollm2:mine" in mr("ls", store=host).stdout
    mr("rm", ref, store=host)
    assert "models:       1" in mr("df", store=host).stdout
    mr("rm", "local/smollm2:mine", store=host)
    df = mr("df", "--gc", store=host).stdout
    assert "models:       0" in df and "blobs:        0" in df


def test_errors_exit_1_with_the_reason(tmp_path: Path) -> None:
    done = mr("rm", "ai/absent", store=tmp_path, check=False)
    assert done.returncode == 1
    assert "ai/absent:latest: not in the local store" in done.stderr
    bad = mr("pull", "https://x/y", store=tmp_path, check=False)
    assert bad.returncode == 1 and "leave out the scheme" in bad.stderr
    usage = mr("package", "ai/x:v1", store=tmp_path, check=False)
    assert usage.returncode == 2 and "--gguf" in usage.stderr
