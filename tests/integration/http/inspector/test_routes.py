"""The request inspector (/engines/requests and `mr requests`) on a real `mr serve` with API
keys on and 3 pairs kept per model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from typing import Any

import httpx
import pytest

from tests.fixtures.served_store import AUTH, KEPT, KEY, Setup

pytestmark = [pytest.mark.engine, pytest.mark.registry]


def _records(setup: Setup, model: str = "smol") -> list[dict[str, Any]]:
    groups = setup.get("/engines/requests", params={"model": model}).json()
    return groups[0]["records"] if groups else []


def test_inspector_shows_a_streamed_chat_reassembled_and_never_the_key(served: Setup) -> None:
    client = served.client()
    pieces = [
        chunk.choices[0].delta.content or ""
        for chunk in client.chat.completions.create(
            model="smol",
            stream=True,
            max_tokens=16,
            messages=[{"role": "user", "content": "Tell me about the sea."}],
        )
        if chunk.choices
    ]
    last = _records(served)[-1]
    assert (last["method"], last["url"], last["status_code"]) == (
        "POST",
        "/v1/chat/completions",
        200,
    )
    assert last["stream"] and last["complete"] and last["duration_ms"] > 0
    assert last["user_agent"].startswith("OpenAI/Python")
    assert json.loads(last["request"])["messages"][0]["content"] == "Tell me about the sea."
    answer = json.loads(last["response"])
    assert answer["object"] == "chat.completion"
    assert answer["choices"][0]["message"]["content"] == "".join(pieces)
    everything = served.get("/engines/requests").text
    assert KEY not in everything and "authorization" not in everything.lower()


def test_inspector_keeps_only_the_last_n(served: Setup) -> None:
    client = served.client()
    for n in range(KEPT + 2):
        client.completions.create(model="smol", prompt=f"Number {n}", max_tokens=2)
    records = _records(served)
    assert len(records) == KEPT
    assert [json.loads(r["request"])["prompt"] for r in records] == [
        f"Number {n}" for n in range(2, KEPT + 2)
    ]
    assert served.get("/engines/requests", params={"model": "nope"}).json() == []


def test_inspector_follow_mode_and_the_cli(served: Setup) -> None:
    received: list[Any] = []
    connected = threading.Event()

    def follow() -> None:
        params = {"stream": "true", "model": "smol"}
        with httpx.stream(
            "GET", served.server.url + "/engines/requests", headers=AUTH, params=params, timeout=60
        ) as stream:
            event = None
            for line in stream.iter_lines():
                if line.startswith("event:"):
                    event = line[6:].strip()
                    if event == "connected":
                        connected.set()
                elif line.startswith("data:") and event == "new_request":
                    received.extend(json.loads(line[5:]))
                    return

    reader = threading.Thread(target=follow, daemon=True)
    reader.start()
    assert connected.wait(10)
    served.client().responses.create(model="smol", input="Hi", max_output_tokens=4)
    reader.join(60)
    [group] = received
    assert group["model"] == "smol" and group["records"][0]["url"] == "/v1/responses"
    assert json.loads(group["records"][0]["response"])["object"] == "response"
    env = {**os.environ, "MR_PORT": served.server.url.rsplit(":", 1)[1], "MR_API_KEY": KEY}
    shown = subprocess.run(
        [sys.executable, "-m", "modelrunner", "requests", "smol"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert shown.returncode == 0, shown.stderr
    assert "POST /v1/responses  200" in shown.stdout and KEY not in shown.stdout
    as_json = subprocess.run(
        [sys.executable, "-m", "modelrunner", "requests", "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert json.loads(as_json.stdout)[0]["model"] == "smol"


def test_mr_requests_follow(served: Setup) -> None:
    env = {**os.environ, "MR_PORT": served.server.url.rsplit(":", 1)[1], "MR_API_KEY": KEY}
    follower = subprocess.Popen(
        [sys.executable, "-m", "modelrunner", "requests", "smol", "-f", "--json"],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    output = follower.stdout
    assert output is not None
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.append(output.readline()), daemon=True)
    reader.start()
    try:
        for _ in range(30):  # until the follower is connected and sees one
            served.client().completions.create(model="smol", prompt="Follow me", max_tokens=1)
            reader.join(1)
            if lines:
                break
        pair = json.loads(lines[0])
        assert pair["model"] == "smol" and pair["url"] == "/v1/completions"
        assert json.loads(pair["request"])["prompt"] == "Follow me"
    finally:
        follower.terminate()
        follower.wait(10)


@pytest.mark.parametrize("stream", [False, True])
def test_mr_requests_shows_what_the_grammar_enforced_and_what_was_checked(
    served: Setup, stream: bool
) -> None:
    # The grammar can only write ["a","a"], which uniqueItems (checked after) refuses.
    schema = {"type": "array", "items": {"enum": ["a"]}, "minItems": 2, "maxItems": 2,
              "uniqueItems": True}  # fmt: skip
    request: Any = {
        "model": "smol",
        "messages": [{"role": "user", "content": "Two letters."}],
        "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}},
        "max_tokens": 80,
        "temperature": 0,
    }
    client = served.client()
    if stream:
        list(client.chat.completions.create(**request, stream=True))
    else:
        client.chat.completions.create(**request)
    choice = json.loads(_records(served)[-1]["response"])["choices"][0]
    assert choice["finish_reason"] == "schema_invalid"
    assert choice["schema_check"] == {"checked_only": ["uniqueItems"], "valid": False}
    env = {**os.environ, "MR_PORT": served.server.url.rsplit(":", 1)[1], "MR_API_KEY": KEY}
    shown = subprocess.run(
        [sys.executable, "-m", "modelrunner", "requests", "smol"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    last = [line for line in shown.stdout.splitlines() if line.startswith("20")][-1]
    assert "schema enforced by the grammar, uniqueItems checked after: INVALID" in last
