"""`limits` on every API that reaches an engine, through a real `mr serve`: a model with
``{max_concurrent_requests: 1, request_timeout: 2s}`` gets four long requests at once on
each API; one runs, two wait, the fourth is refused (429, or the API's equivalent), and the
three long ones are cut at the timeout (504 in the API's error shape, the engine's request
cancelled). Then a short request is answered: nothing kept the model's slot.

The long requests cannot end early: the chat ones are constrained by a grammar to write at
least 400 integers (JSON schema ``minItems``), the embeddings ones are many long inputs, the
image one many inference steps."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.fixtures.serve import Server, launch, manifest, stop

pytestmark = pytest.mark.engine

LIMITS = {"max_concurrent_requests": 1, "request_timeout": "2s"}
TIMEOUT_SAYS = "limits.request_timeout (2s)"
BUSY_SAYS = "limits.max_concurrent_requests: 1"
# At least 400 integers (800+ tokens): seconds of decoding for SmolLM2 on one thread.
NUMBERS = {"type": "array", "items": {"type": "integer"}, "minItems": 400}
OBJECT = {"type": "object", "properties": {"n": NUMBERS}, "required": ["n"]}
LONG_TEXT = " ".join(["the quick brown fox jumps over the lazy dog"] * 40)


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, smollm2_gguf: Path, tiny_sd_dduf: Path
) -> Iterator[Server]:
    served = launch(tmp_path_factory.mktemp("limits"))
    try:
        served.write("smol.yaml", manifest(smollm2_gguf, "smol", context_size=4096, limits=LIMITS))
        embed = {"llama.cpp": {"threads": 1, "embeddings": True}}
        served.write("embed.yaml", manifest(smollm2_gguf, "embed", limits=LIMITS, **embed))
        sd = {"apiVersion": "modelrunner/v1", "name": "sd", "model": str(tiny_sd_dduf),
              "engine": "diffusers", "diffusers": {"dtype": "float32"},
              "limits": LIMITS}  # fmt: skip
        served.write("sd.yaml", yaml.safe_dump(sd, sort_keys=False))
        for name in ("smol", "embed", "sd"):
            served.wait_for(name, lambda name=name: served.ready(name), timeout=300)
        yield served
    finally:
        stop(served)


def four_at_once(post: Callable[[], httpx.Response]) -> list[httpx.Response]:
    """The same request four times at once, sorted by status."""
    answers: list[httpx.Response] = []
    barrier = threading.Barrier(4)

    def client() -> None:
        barrier.wait()
        answers.append(post())

    threads = [threading.Thread(target=client) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sorted(answers, key=lambda r: r.status_code)


def poster(server: Server, path: str, body: dict[str, Any]) -> Callable[[], httpx.Response]:
    return lambda: httpx.post(server.url + path, json=body, timeout=120)


def crowd(server: Server, path: str, body: dict[str, Any]) -> tuple[httpx.Response, list[Any]]:
    """Four long requests: the refused one, and the bodies of the three cut at the timeout."""
    answers = four_at_once(poster(server, path, body))
    assert [r.status_code for r in answers] == [429, 504, 504, 504], [
        r.text for r in answers if r.status_code not in (429, 504)
    ]
    refused = answers[0]
    assert refused.headers["retry-after"] == "1"
    return refused, [r.json() for r in answers[1:]]


def last_lines(server: Server, path: str, body: dict[str, Any]) -> list[str]:
    with httpx.stream("POST", server.url + path, json=body, timeout=120) as answer:
        assert answer.status_code == 200
        return [line for line in answer.read().decode().splitlines() if line.strip()]


def test_ollama(server: Server) -> None:
    body = {"model": "smol", "stream": False, "format": NUMBERS,
            "options": {"num_predict": 3000},
            "messages": [{"role": "user", "content": "List numbers"}]}  # fmt: skip
    refused, cut = crowd(server, "/api/chat", body)
    assert BUSY_SAYS in refused.json()["error"]
    assert all(TIMEOUT_SAYS in answer["error"] for answer in cut)
    # A stream that has begun ends with Ollama's error line.
    last = last_lines(server, "/api/chat", {**body, "stream": True})[-1]
    assert TIMEOUT_SAYS in yaml.safe_load(last)["error"]
    short = {"model": "smol", "stream": False, "prompt": "Hi", "options": {"num_predict": 2}}
    assert httpx.post(f"{server.url}/api/generate", json=short, timeout=60).status_code == 200


def test_anthropic(server: Server) -> None:
    body = {"model": "smol", "max_tokens": 3000,
            "tools": [{"name": "numbers", "input_schema": OBJECT}],
            "tool_choice": {"type": "tool", "name": "numbers"},
            "messages": [{"role": "user", "content": "List numbers"}]}  # fmt: skip
    refused, cut = crowd(server, "/anthropic/v1/messages", body)
    assert refused.json()["error"]["type"] == "rate_limit_error"
    assert BUSY_SAYS in refused.json()["error"]["message"]
    for answer in cut:
        assert answer["type"] == "error" and answer["error"]["type"] == "timeout_error"
        assert TIMEOUT_SAYS in answer["error"]["message"]
    lines = last_lines(server, "/anthropic/v1/messages", {**body, "stream": True})
    assert lines[-2] == "event: error" and "timeout_error" in lines[-1]
    short = {"model": "smol", "max_tokens": 2, "messages": [{"role": "user", "content": "Hi"}]}
    assert httpx.post(f"{server.url}/v1/messages", json=short, timeout=60).status_code == 200


def test_responses(server: Server) -> None:
    schema = {"type": "json_schema", "name": "numbers", "schema": OBJECT}
    body = {"model": "smol", "max_output_tokens": 3000, "input": "List numbers",
            "text": {"format": schema}}  # fmt: skip
    refused, cut = crowd(server, "/v1/responses", body)
    assert refused.json()["error"]["code"] == "rate_limit_exceeded"
    for answer in cut:
        assert answer["error"]["code"] == "timeout"
        assert TIMEOUT_SAYS in answer["error"]["message"]
    lines = last_lines(server, "/v1/responses", {**body, "stream": True})
    assert lines[-2] == "event: response.failed"
    failed = yaml.safe_load(lines[-1].removeprefix("data: "))
    assert failed["response"]["error"]["code"] == "timeout"
    short = {"model": "smol", "max_output_tokens": 2, "input": "Hi"}
    assert httpx.post(f"{server.url}/v1/responses", json=short, timeout=60).status_code == 200


def test_embeddings_on_the_ollama_and_openai_routes(server: Server) -> None:
    inputs = [LONG_TEXT] * 3
    for path, shape in (("/api/embed", "ollama"), ("/v1/embeddings", "openai")):
        refused, cut = crowd(server, path, {"model": "embed", "input": inputs})
        said = [a["error"] if shape == "ollama" else a["error"]["message"] for a in cut]
        assert all(TIMEOUT_SAYS in message for message in said), said
        message = refused.json()["error"]
        assert BUSY_SAYS in (message if shape == "ollama" else message["message"])
    # The engine finishes the embeddings it was sent (it cannot stop one midway), so the
    # short request may be cut too until it has.
    short = poster(server, "/api/embed", {"model": "embed", "input": "Hi"})
    server.wait_for("a short embedding", lambda: short().status_code == 200, timeout=180)


def test_images(server: Server) -> None:
    body = {"model": "sd", "prompt": "a red fox", "size": "256x256", "steps": 999,
            "response_format": "b64_json"}  # fmt: skip
    refused, cut = crowd(server, "/v1/images/generations", body)
    assert refused.json()["error"]["code"] == "rate_limit_exceeded"
    assert all(answer["error"]["code"] == "timeout" for answer in cut)
    short = poster(server, "/v1/images/generations", {**body, "size": "64x64", "steps": 1})
    server.wait_for("a short image", lambda: short().status_code == 200, timeout=300)
