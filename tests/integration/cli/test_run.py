"""`mr run` against a running server with a real engine."""

from __future__ import annotations

import os
import subprocess
import sys
from urllib.parse import urlsplit

import pytest

from tests.fixtures.http import SMOLLM2, RunningApp

pytestmark = pytest.mark.engine


def mr_run(
    api: RunningApp, *args: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    url = urlsplit(api.base_url)
    env = {**os.environ, "MR_HOST": str(url.hostname), "MR_PORT": str(url.port)}
    return subprocess.run(
        [sys.executable, "-m", "modelrunner", "run", *args],
        input=stdin, capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip


def test_one_shot_prompt_streams_an_answer(api: RunningApp) -> None:
    done = mr_run(api, SMOLLM2, "What", "is", "2+2?")  # SmolLM2 can ramble on "Say hello"
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip()


def test_piped_prompt(api: RunningApp) -> None:
    done = mr_run(api, "ai/smollm2", stdin="What is 2+2?")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip()


def test_unknown_model_exits_1_with_the_servers_message(api: RunningApp) -> None:
    done = mr_run(api, "nope", "hi")
    assert done.returncode == 1
    assert "nope: HTTP 404: The model 'nope' does not exist" in done.stderr


def test_no_server(api: RunningApp) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "modelrunner", "run", "--url", "http://127.0.0.1:9", SMOLLM2, "hi"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 1
    assert "cannot reach the mr server at http://127.0.0.1:9" in done.stderr
