"""Draining with a request in flight, on a real `mr serve` with SmolLM2: SIGTERM lets a
stream finish before the engine stops; a retired model (its manifest deleted) finishes its
streams too; and when drain_timeout runs out first, the stream is cut and the server exits
anyway. Each test breaks if draining is skipped or the timeout is ignored."""

from __future__ import annotations

import json
import signal
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fixtures.http import NO_EOS
from tests.fixtures.serve import Server, manifest

pytestmark = pytest.mark.engine


def _stream(server: Server, max_tokens: int) -> Iterator[dict[str, Any] | str]:
    """A chat stream of exactly ``max_tokens`` tokens (the end tokens banned): its chunks,
    then "cut" if the connection ended before [DONE]."""
    body = {
        "model": "smol",
        "messages": [{"role": "user", "content": "Write a very long story about a cat."}],
        "max_tokens": max_tokens,
        "logit_bias": NO_EOS,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    try:
        with httpx.stream("POST", server.url + "/v1/chat/completions", json=body,
                          timeout=120) as response:  # fmt: skip
            assert response.status_code == 200, response.read()
            for line in response.iter_lines():
                if line == "data: [DONE]":
                    return
                if line.startswith("data: "):
                    yield json.loads(line[len("data: ") :])
    except httpx.HTTPError:
        pass
    yield "cut"


def _ready(start_server: Callable[..., Server], gguf: Path, **env: str) -> Server:
    server = start_server(**env)
    server.write("smol.yaml", manifest(gguf, "smol"))
    server.wait_for("smol to be ready", lambda: server.ready("smol"), timeout=180)
    return server


def _finish(events: Iterator[dict[str, Any] | str]) -> list[dict[str, Any] | str]:
    return list(events)


def _usage(chunks: list[dict[str, Any] | str]) -> int | None:
    for chunk in chunks:
        if isinstance(chunk, dict) and chunk.get("usage"):
            return int(chunk["usage"]["completion_tokens"])
    return None


def test_sigterm_lets_the_stream_in_flight_finish(
    start_server: Callable[..., Server], smollm2_gguf: Path
) -> None:
    server = _ready(start_server, smollm2_gguf, MR_DRAIN_TIMEOUT="60")
    events = _stream(server, 120)
    first = next(events)
    assert isinstance(first, dict)
    server.process.send_signal(signal.SIGTERM)  # mid-stream
    rest = _finish(events)
    assert "cut" not in rest, rest[-3:]
    assert _usage(rest) == 120  # every token the request asked for arrived
    assert server.process.wait(60) in (0, -signal.SIGTERM)  # uvicorn re-raises it at the end
    with pytest.raises(httpx.ConnectError):
        httpx.get(server.url + "/healthz", timeout=5)


def test_drain_timeout_running_out_cuts_the_stream_and_stops(
    start_server: Callable[..., Server], smollm2_gguf: Path
) -> None:
    server = _ready(start_server, smollm2_gguf, MR_DRAIN_TIMEOUT="1")
    events = _stream(server, 1500)  # 15 s or more: far longer than the drain timeout
    assert isinstance(next(events), dict)
    server.process.send_signal(signal.SIGTERM)
    rest = _finish(events)
    assert rest[-1] == "cut" and _usage(rest) is None  # ended before its 1500 tokens
    try:
        code = server.process.wait(30)
    except subprocess.TimeoutExpired:
        pytest.fail("mr serve still running 30 s after SIGTERM with MR_DRAIN_TIMEOUT=1")
    assert code in (0, -signal.SIGTERM)


def test_a_retired_model_finishes_its_streams_first(
    start_server: Callable[..., Server], smollm2_gguf: Path
) -> None:
    server = _ready(start_server, smollm2_gguf, MR_DRAIN_TIMEOUT="60")
    events = _stream(server, 120)
    assert isinstance(next(events), dict)
    (server.models_dir / "smol.yaml").unlink()  # retire it mid-stream
    ask = {"model": "smol", "messages": [{"role": "user", "content": "x"}], "max_tokens": 1}

    def withdrawn() -> bool:  # new requests no longer reach it
        answer = httpx.post(server.url + "/v1/chat/completions", json=ask, timeout=30)
        return answer.status_code == 404

    server.wait_for("smol withdrawn", withdrawn)
    rest = _finish(events)
    assert "cut" not in rest and _usage(rest) == 120
