"""The model life cycle through a real `mr serve` with SmolLM2: a fix overtakes a crashing
start, `limits` are enforced and changed in place, and memory admission refuses a model
that does not fit."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fixtures.serve import Server, manifest

pytestmark = pytest.mark.engine
# No end-of-sequence token (SmolLM2's <|endoftext|> and <|im_end|>), so an answer is as long
# as max_tokens says.
NO_EOS = {"0": -100, "2": -100}


def test_a_fix_overtakes_an_engine_that_crashes_at_start(
    start_server: Callable[..., Server], smollm2_gguf: Path, tmp_path: Path
) -> None:
    server = start_server()
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"GGUF" + b"\0" * 64)  # a header and nothing else: the load fails
    server.write("smol.yaml", manifest(broken, "smol"))
    failed = server.wait_for(
        "the crash in status",
        lambda: (m := server.status().get("smol")) and m["phase"] == "failed" and m,
    )
    assert "engine exited with code 1" in failed["last_error"]
    assert "while loading (before its health check answered)" in failed["last_error"]
    assert "retrying in" in failed["last_error"]
    time.sleep(1.5)  # it keeps failing and backing off meanwhile
    fixed_at = time.monotonic()
    server.write("smol.yaml", manifest(smollm2_gguf, "smol"))
    # The old code waited out 5 restarts with 31 s of backoff before it looked again.
    ready = server.wait_for("the fixed model", lambda: server.ready("smol"), timeout=30)
    print(f"fix -> ready: {time.monotonic() - fixed_at:.1f} s")
    assert ready["last_error"] is None
    answer = httpx.post(
        f"{server.url}/v1/completions",
        json={"model": "smol", "prompt": "Hi", "max_tokens": 2},
        timeout=60,
    )
    assert answer.status_code == 200


def stream(server: Server, body: dict[str, Any]) -> tuple[int, float, float, dict[str, Any]]:
    """Status, time of the first byte, time of the last, and the error body if any."""
    with httpx.stream("POST", f"{server.url}/v1/completions", json=body, timeout=120) as r:
        first = time.monotonic()
        data = r.read()
        last = time.monotonic()
    error = httpx.Response(r.status_code, content=data).json() if r.status_code >= 400 else {}
    return r.status_code, first, last, {"headers": dict(r.headers), **error}


def four_at_once(server: Server, body: dict[str, Any]) -> list[tuple[int, float, float, Any]]:
    results: list[tuple[int, float, float, Any]] = []
    barrier = threading.Barrier(4)

    def client() -> None:
        barrier.wait()
        results.append(stream(server, body))

    threads = [threading.Thread(target=client) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def apply_limits(
    server: Server, gguf: Path, before: dict[str, Any], limits: Any, fields: Any
) -> dict[str, Any]:
    server.write("smol.yaml", manifest(gguf, "smol", limits=limits, **fields))
    return server.wait_for(
        "the new limits",
        lambda: (m := server.ready("smol")) and m["in_place_key"] != before["in_place_key"] and m,
    )


def test_limits_are_enforced_and_changed_in_place(
    start_server: Callable[..., Server], smollm2_gguf: Path
) -> None:
    server = start_server()
    limits = {"max_concurrent_requests": 1}
    fields = {"llama.cpp": {"threads": 1, "parallel": 4}}  # the engine could run all 4
    server.write("smol.yaml", manifest(smollm2_gguf, "smol", limits=limits, **fields))
    first = server.wait_for("smol", lambda: server.ready("smol"))
    body = {"model": "smol", "prompt": "Once upon a time", "max_tokens": 24,
            "logit_bias": NO_EOS, "stream": True}  # fmt: skip

    # 1 in flight, 2 waiting (twice the limit), the 4th refused with OpenAI's 429.
    results = four_at_once(server, body)
    statuses = sorted(status for status, *_ in results)
    assert statuses == [200, 200, 200, 429]
    refused = next(extra for status, _, _, extra in results if status == 429)
    assert refused["headers"]["retry-after"] == "1"
    assert refused["error"]["code"] == "rate_limit_exceeded"
    assert "limits.max_concurrent_requests: 1" in refused["error"]["message"]
    served = sorted((start, end) for status, start, end, _ in results if status == 200)
    for (_, end), (start, _) in itertools.pairwise(served):
        assert start >= end - 0.05, "two requests ran at the engine at once"

    # In place, on the same instance: a higher limit lets all 4 run at once ...
    second = apply_limits(server, smollm2_gguf, first, {"max_concurrent_requests": 4}, fields)
    results = four_at_once(server, body)
    assert sorted(status for status, *_ in results) == [200] * 4
    served = sorted((start, end) for status, start, end, _ in results if status == 200)
    assert any(start < end for (_, end), (start, _) in itertools.pairwise(served))

    # ... and a timeout cuts a long answer.
    limits = {"max_concurrent_requests": 4, "request_timeout": "1s"}
    apply_limits(server, smollm2_gguf, second, limits, fields)

    long = {"model": "smol", "prompt": "Once upon a time", "max_tokens": 1500,
            "logit_bias": NO_EOS}  # fmt: skip
    answer = httpx.post(f"{server.url}/v1/completions", json=long, timeout=120)
    assert answer.status_code == 504, answer.text
    assert answer.json()["error"]["code"] == "timeout"
    assert "limits.request_timeout (1s)" in answer.json()["error"]["message"]

    # Mid-stream: the status line is gone, so the stream ends with an error event.
    status, _, _, _ = stream(server, {**long, "stream": True})
    with httpx.stream(
        "POST", f"{server.url}/v1/completions", json={**long, "stream": True}, timeout=120
    ) as r:
        text = r.read().decode()
    assert status == r.status_code == 200
    last_event = [line for line in text.splitlines() if line.startswith("data:")][-1]
    assert '"code":"timeout"' in last_event
    assert server.status()["smol"]["instance"] == first["instance"]  # never restarted


def test_a_model_that_does_not_fit_the_memory_budget_is_refused(
    start_server: Callable[..., Server], smollm2_gguf: Path
) -> None:
    # One SmolLM2 at context 1024 is estimated at about 176 MiB.
    server = start_server(MR_MEMORY_BUDGET="250MiB")
    server.write("a.yaml", manifest(smollm2_gguf, "a"))
    server.wait_for("a", lambda: server.ready("a"))
    server.write("b.yaml", manifest(smollm2_gguf, "b"))
    refused = server.wait_for(
        "b to be refused",
        lambda: (m := server.status().get("b")) and m["phase"] == "failed" and m,
    )
    assert refused["last_error"].startswith("needs 1")
    assert "MiB free of a 250 MiB budget" in refused["last_error"]
    answer = httpx.post(
        f"{server.url}/v1/completions", json={"model": "b", "prompt": "Hi"}, timeout=30
    )
    assert answer.status_code == 503
    assert "does not fit in memory: needs" in answer.json()["error"]["message"]
    assert server.ready("a")  # the one that fits keeps serving
