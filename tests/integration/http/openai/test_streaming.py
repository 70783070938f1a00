"""Streaming pass-through with the product's llama.cpp engine: chunks arrive as the engine
sends them, a client that goes away frees its slot and cancels the engine's request, and an
engine dying mid-stream is reported as an OpenAI error event."""

from __future__ import annotations

import json
import time

import httpx
import pytest

from tests.fixtures.http import NO_EOS, SMOLLM2, Crashable, RunningApp, wait_until

pytestmark = pytest.mark.engine
# With the end tokens banned this runs to 1500 tokens: 15 s or more at SmolLM2's ~90 tokens/s
# on one thread, so a follow-up that answers sooner proves the stream was cancelled upstream.
LONG_STREAM = {
    "model": SMOLLM2,
    "messages": [{"role": "user", "content": "Write a very long story about a cat."}],
    "max_tokens": 1500,
    "logit_bias": NO_EOS,
    "stream": True,
}
FOLLOW_UP_WITHIN = 8.0  # seconds; far less than the abandoned stream would take


BOTH_PATHS = ["handoff", "relay"]  # the engine writes the stream, or mr relays it


@pytest.mark.parametrize("api", BOTH_PATHS, indirect=True)
def test_disconnect_mid_stream_frees_the_slot(api: RunningApp) -> None:
    with httpx.stream(
        "POST", api.base_url + "/v1/chat/completions", json=LONG_STREAM, timeout=60
    ) as r:
        assert r.status_code == 200
        chunks = r.iter_raw()
        first = next(chunks)
        assert first.startswith(b"data: ")
        next(chunks)
        assert api.in_flight(SMOLLM2) == 1
    left = time.monotonic()
    assert wait_until(lambda: api.in_flight(SMOLLM2) == 0)
    # The engine serves one request at a time (one context): this one only completes
    # because the abandoned 1500-token stream was cancelled upstream, i.e. mr closed the
    # engine connection and the engine stopped generating.
    answer = httpx.post(
        api.base_url + "/v1/completions",
        json={"model": SMOLLM2, "prompt": "Hi", "max_tokens": 2},
        timeout=60,
    )
    assert answer.status_code == 200
    took = time.monotonic() - left
    assert took < FOLLOW_UP_WITHIN, f"the abandoned stream held the engine for {took:.1f} s"


@pytest.mark.parametrize("crashable", BOTH_PATHS, indirect=True)
def test_engine_dying_mid_stream_ends_with_an_error_event(crashable: Crashable) -> None:
    app = crashable.app
    with httpx.stream(
        "POST", app.base_url + "/v1/chat/completions", json=LONG_STREAM, timeout=60
    ) as response:
        assert response.status_code == 200
        lines = response.iter_lines()
        first = next(line for line in lines if line.startswith("data: "))
        crashable.kill_engine()  # as the OOM killer would, mid-answer
        events = [first, *(line for line in lines if line.startswith("data: "))]
    assert json.loads(events[0][len("data: ") :])["choices"]
    assert '"code":"upstream_failed"' in events[-1]
    assert "mid-stream" in events[-1]
    assert wait_until(lambda: app.in_flight(SMOLLM2) == 0)


def test_engine_dying_mid_stream_on_the_anthropic_route_ends_with_an_error_event(
    crashable: Crashable,
) -> None:
    app = crashable.app
    body = {
        "model": SMOLLM2,
        "max_tokens": 1500,
        "messages": [{"role": "user", "content": "Write a very long story about a cat."}],
        "stream": True,
    }
    with httpx.stream("POST", app.base_url + "/anthropic/v1/messages", json=body,
                      timeout=60) as response:  # fmt: skip
        assert response.status_code == 200
        lines = response.iter_lines()
        events: list[str] = []
        for line in lines:
            if line.startswith("event: "):
                events.append(line[len("event: ") :])
            if events and events[-1] == "content_block_delta":
                break
        crashable.kill_engine()
        rest = list(lines)
    names = events + [line[len("event: ") :] for line in rest if line.startswith("event: ")]
    data = [json.loads(line[len("data: ") :]) for line in rest if line.startswith("data: ")]
    assert names[0] == "message_start"
    assert names[-1] == "error", names[-6:]
    assert "message_stop" not in names  # a cut answer never looks complete
    assert data[-1]["type"] == "error"
    assert data[-1]["error"]["type"] == "api_error"
    assert "mid-stream" in data[-1]["error"]["message"]
    assert wait_until(lambda: app.in_flight(SMOLLM2) == 0)


def test_engine_dying_mid_stream_on_the_ollama_route_ends_with_an_error_line(
    crashable: Crashable,
) -> None:
    app = crashable.app
    body = {
        "model": SMOLLM2,
        "messages": [{"role": "user", "content": "Write a very long story about a cat."}],
        "options": {"num_predict": 1500},
    }
    with httpx.stream("POST", app.base_url + "/api/chat", json=body, timeout=60) as response:
        assert response.status_code == 200
        lines = response.iter_lines()
        first = json.loads(next(line for line in lines if line.strip()))
        crashable.kill_engine()
        rest = [json.loads(line) for line in lines if line.strip()]
    assert first["message"]["role"] == "assistant" and first["done"] is False
    assert set(rest[-1]) == {"error"}, rest[-1]  # Ollama's in-stream error
    assert "mid-stream" in rest[-1]["error"]
    assert not any(line.get("done") for line in rest)  # never a done line after the cut
    assert wait_until(lambda: app.in_flight(SMOLLM2) == 0)
