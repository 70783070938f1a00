"""A frozen engine under load, through a real `mr serve` with SmolLM2: SIGSTOP of the engine
in the middle of two streams (standing in for a deadlock or a host swapping it out). The
OpenAI stream ends with an error event naming the hang and the Ollama one with its error
line, a request that was waiting for the frozen engine gets a 503 with Retry-After, and
the model answers again on its own: the hung engine was killed and a new one started. How
long that takes is bench/bench_liveness.py's figure; here a generous bound only keeps a
broken liveness check from waiting forever."""

from __future__ import annotations

import json
import os
import signal
import threading
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.fixtures.serve import Server, manifest

pytestmark = pytest.mark.engine
NO_EOS = {"0": -100, "2": -100}  # SmolLM2's end tokens, banned: the stream runs long


def engine_pid(server: Server) -> int:
    """The llama.cpp engine process `mr serve` started (its child)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        if parent == server.process.pid and b"modelrunner.engines.llamacpp.main" in cmdline:
            return int(entry.name)
    raise AssertionError("no engine process under mr serve")


def test_a_frozen_engine_is_replaced(
    start_server: Callable[..., Server], smollm2_gguf: Path
) -> None:
    server = start_server()
    two_slots = {"llama.cpp": {"threads": 1, "parallel": 2}}
    server.write("smol.yaml", manifest(smollm2_gguf, "smol", **two_slots))
    before = server.wait_for("smol", lambda: server.ready("smol"))
    frozen = engine_pid(server)
    body = {"model": "smol", "prompt": "Once upon a time", "max_tokens": 900,
            "logit_bias": NO_EOS, "stream": True}  # fmt: skip
    # Ollama's stream too (a translated route), kept long by a grammar: 400 numbers at least.
    numbers = {"type": "array", "items": {"type": "integer"}, "minItems": 400}
    chat = {"model": "smol", "format": numbers, "options": {"num_predict": 2000},
            "messages": [{"role": "user", "content": "Count"}]}  # fmt: skip
    waiting: list[httpx.Response] = []
    with (
        httpx.stream("POST", f"{server.url}/v1/completions", json=body, timeout=120) as stream,
        httpx.stream("POST", f"{server.url}/api/chat", json=chat, timeout=120) as ollama,
    ):
        assert stream.status_code == ollama.status_code == 200
        lines, chat_lines = stream.iter_lines(), ollama.iter_lines()
        assert next(line for line in lines if line.startswith("data:"))  # tokens flow
        assert next(chat_lines)
        os.kill(frozen, signal.SIGSTOP)
        # A request that reaches the frozen engine waits for it, then learns it is gone.
        short = {"model": "smol", "prompt": "Hi", "max_tokens": 2}
        late = threading.Thread(
            target=lambda: waiting.append(
                httpx.post(f"{server.url}/v1/completions", json=short, timeout=120)
            )
        )
        late.start()
        rest = [line for line in lines if line.startswith("data:")]
        chat_rest = list(chat_lines)
    late.join(120)
    last = rest[-1]
    assert '"code":"upstream_failed"' in last, last
    assert "hung: no progress for" in last
    assert "hung: no progress for" in json.loads(chat_rest[-1])["error"]
    assert waiting[0].status_code == 503, waiting[0].text
    assert waiting[0].headers["retry-after"] == "2"
    assert "hung: no progress for" in waiting[0].json()["error"]["message"]

    def answers() -> bool:
        short = {"model": "smol", "prompt": "Hi", "max_tokens": 2}
        return httpx.post(f"{server.url}/v1/completions", json=short, timeout=30).is_success

    server.wait_for("smol to answer again", answers, timeout=30)
    assert server.status()["smol"]["instance"] != before["instance"]
    with pytest.raises(ProcessLookupError):
        os.kill(frozen, 0)  # killed and reaped, not left stopped
