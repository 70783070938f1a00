"""Through `mr serve` to the llama.cpp engine: every answer shape validated against the
schemas extracted from OpenAI's OpenAPI document (openai_answer_schemas.json), with the
official client where it applies, and the fixes the OpenAI conformance check asked for."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from jsonschema import Draft202012Validator
from prometheus_client.parser import text_string_to_metric_families

from modelrunner.engines.ports import free_port
from tests.fixtures.http import NO_EOS, wait_until
from tests.fixtures.serve import Server, _healthy, manifest

pytestmark = pytest.mark.engine
SCHEMAS = json.loads((Path(__file__).parent / "openai_answer_schemas.json").read_text())
MODEL = "smollm2"


def check(answer: Any, schema: str) -> None:
    """Fail with every violation of OpenAI's schema ``schema``."""
    root = {"$defs": SCHEMAS["$defs"], "$ref": f"#/$defs/{schema}"}
    errors = [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
        for e in Draft202012Validator(root).iter_errors(answer)
    ]
    assert not errors, f"{schema}: {errors}"


@pytest.fixture(scope="module")
def mr(smollm2_gguf: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """`mr serve` with SmolLM2 on 2 slots, embeddings on."""
    root = tmp_path_factory.mktemp("mr")
    models = root / "models.d"
    models.mkdir()
    (models / "smollm2.yaml").write_text(
        manifest(
            smollm2_gguf,
            MODEL,
            context_size=512,
            **{"llama.cpp": {"threads": 1, "parallel": 2, "embeddings": True}},
        )
    )
    port = free_port()
    env = {
        **os.environ,
        "MR_PORT": str(port),
        "MR_STORE_DIR": str(root / "store"),
        "MR_LOG_DIR": str(root / "logs"),
    }
    log = root / "serve.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "modelrunner", "serve", "--models-dir", str(models)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = Server(f"http://127.0.0.1:{port}", models, root / "store", env, process, log)
    try:
        server.wait_for("/healthz", lambda: _healthy(server.url), 30)
        server.wait_for("smollm2 ready", lambda: server.ready(MODEL), 120)
        yield server
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def post(mr: Server, path: str, body: dict[str, Any]) -> dict[str, Any]:
    response = httpx.post(f"{mr.url}{path}", json={"model": MODEL, **body}, timeout=120)
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def events(mr: Server, path: str, body: dict[str, Any]) -> list[dict[str, Any]]:
    body = {"model": MODEL, **body, "stream": True}
    with httpx.stream("POST", f"{mr.url}{path}", json=body, timeout=120) as response:
        assert response.status_code == 200
        data = [line[6:] for line in response.iter_lines() if line.startswith("data: ")]
    assert data[-1] == "[DONE]"
    return [json.loads(d) for d in data[:-1]]


def ask(prompt: str, **fields: Any) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": prompt}], **fields}


def test_chat_answer_conforms_with_refusal_null(mr: Server) -> None:
    answer = post(mr, "/v1/chat/completions", ask("What is 2+2?", max_tokens=16, temperature=0))
    check(answer, "CreateChatCompletionResponse")
    message = answer["choices"][0]["message"]
    assert message["refusal"] is None
    assert answer["usage"]["prompt_tokens_details"]["cached_tokens"] >= 0


def test_stream_chunks_conform_and_include_usage_ends_with_it(mr: Server) -> None:
    body = ask("Say hello", max_tokens=10, temperature=0, stream_options={"include_usage": True})
    chunks = events(mr, "/v1/chat/completions", body)
    for chunk in chunks:
        check(chunk, "CreateChatCompletionStreamResponse")
    last = chunks[-1]
    assert last["choices"] == []
    usage = last["usage"]
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks[:-1])
    assert text and usage["completion_tokens"] <= 10
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert all("usage" not in c for c in chunks[:-1])
    plain = events(mr, "/v1/chat/completions", ask("Say hello", max_tokens=3))
    assert all(c["choices"] for c in plain)  # no usage chunk unless asked


def test_completions_conform(mr: Server) -> None:
    answer = post(mr, "/v1/completions", {"prompt": "Once upon a time", "max_tokens": 6})
    check(answer, "CreateCompletionResponse")
    assert answer["usage"]["completion_tokens"] <= 6
    # OpenAI publishes no chunk schema for completions: its streams send this shape with
    # finish_reason null until the last chunk, which must conform as a whole.
    chunks = events(mr, "/v1/completions", {"prompt": "Once upon a time", "max_tokens": 4})
    check(chunks[-1], "CreateCompletionResponse")
    for chunk in chunks[:-1]:
        check(
            {**chunk, "choices": [{**chunk["choices"][0], "finish_reason": "stop"}]},
            "CreateCompletionResponse",
        )
        assert chunk["choices"][0]["finish_reason"] is None


def test_embeddings_conform_and_base64_decodes_to_the_floats(mr: Server) -> None:
    floats = post(mr, "/v1/embeddings", {"input": ["hello", "world"]})
    check(floats, "CreateEmbeddingResponse")
    encoded = post(mr, "/v1/embeddings", {"input": ["hello", "world"], "encoding_format": "base64"})
    for item, plain in zip(encoded["data"], floats["data"], strict=True):
        vector = np.frombuffer(base64.b64decode(item["embedding"]), dtype="<f4")
        assert vector.tolist() == pytest.approx(plain["embedding"], rel=1e-6)
    # the official client asks for base64 by default and decodes it
    sdk = mr.client(max_retries=0).embeddings.create(model=MODEL, input="hello")
    assert sdk.data[0].embedding == pytest.approx(floats["data"][0]["embedding"], rel=1e-4)


def test_seeded_temperature_zero_is_repeatable(mr: Server) -> None:
    body = ask("Describe a sunset.", max_tokens=32, temperature=0, seed=42)
    first = post(mr, "/v1/chat/completions", body)
    twin = post(mr, "/v1/chat/completions", body)  # right after its twin: prompt cached
    post(mr, "/v1/chat/completions", ask("Unrelated question?", max_tokens=8))
    after = post(mr, "/v1/chat/completions", body)
    texts = {a["choices"][0]["message"]["content"] for a in (first, twin, after)}
    assert len(texts) == 1
    assert twin["usage"]["prompt_tokens_details"]["cached_tokens"] > 0


def test_max_completion_tokens_is_honoured(mr: Server) -> None:
    body = ask("Write a long story.", max_completion_tokens=5, logit_bias=NO_EOS)
    answer = post(mr, "/v1/chat/completions", body)
    assert answer["usage"]["completion_tokens"] == 5
    assert answer["choices"][0]["finish_reason"] == "length"


def engine_metric(mr: Server, name: str) -> float:
    text = httpx.get(f"{mr.url}/metrics", timeout=10).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels.get("model") == MODEL:
                return float(sample.value)
    raise AssertionError(f"{name}{{model={MODEL!r}}} not in mr's /metrics")


def test_engine_metrics_reach_mrs_metrics_with_a_model_label(mr: Server) -> None:
    post(mr, "/v1/chat/completions", ask("Hi", max_tokens=2))
    assert engine_metric(mr, "llamacpp:slots") == 2
    assert engine_metric(mr, "llamacpp:tokens_predicted_total") >= 2
    assert engine_metric(mr, "llamacpp:step_seconds_count") >= 1


def test_a_plain_request_whose_client_gave_up_frees_the_engine(mr: Server) -> None:
    before = engine_metric(mr, "llamacpp:tokens_predicted_total")
    body = {"model": MODEL, **ask("Write a very long story.", max_tokens=400, logit_bias=NO_EOS)}
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{mr.url}/v1/chat/completions", json=body, timeout=1.0)
    assert wait_until(lambda: engine_metric(mr, "llamacpp:requests_processing") == 0)
    generated = engine_metric(mr, "llamacpp:tokens_predicted_total") - before
    assert generated < 400


def test_the_openai_client_streams_through_mr_serve(mr: Server) -> None:
    client = mr.client(max_retries=0)
    stream = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Name three colours."}],
        max_tokens=20,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.strip()
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0
    plain = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Name three colours."}],
        max_tokens=20,
        temperature=0,
    )
    assert plain.choices[0].message.content == text


def mr_tokens(mr: Server) -> tuple[float, float]:
    """mr's own token counters for the model: (prompt, completion)."""
    text = httpx.get(f"{mr.url}/metrics", timeout=10).text
    found = {"prompt": 0.0, "completion": 0.0}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "mr_tokens_total" and sample.labels.get("model") == MODEL:
                found[sample.labels["kind"]] = float(sample.value)
    return found["prompt"], found["completion"]


@pytest.mark.parametrize("prefix", ["/v1", "/engines/v1"])
def test_n_choices_through_mr_serve(mr: Server, prefix: str) -> None:
    """n=2 on both of mr's OpenAI prefixes, plain and streamed: two choices, conforming, and
    mr counts the usage as the engine reports it (the prompt once, the completions summed)."""
    path = f"{prefix}/chat/completions"
    body = ask("Name a colour.", n=2, max_tokens=6, logit_bias=NO_EOS, temperature=1.0, seed=3)
    before = mr_tokens(mr)
    answer = post(mr, path, body)
    check(answer, "CreateChatCompletionResponse")
    assert [c["index"] for c in answer["choices"]] == [0, 1]
    usage = answer["usage"]
    assert usage["completion_tokens"] == 2 * 6
    after = mr_tokens(mr)
    assert (after[0] - before[0], after[1] - before[1]) == (usage["prompt_tokens"], 12)
    chunks = events(mr, path, {**body, "stream_options": {"include_usage": True}})
    for chunk in chunks:
        check(chunk, "CreateChatCompletionStreamResponse")
    texts = ["", ""]
    for chunk in chunks[:-1]:
        texts[chunk["choices"][0]["index"]] += chunk["choices"][0]["delta"].get("content") or ""
    assert texts == [c["message"]["content"] for c in answer["choices"]]
    assert chunks[-1]["usage"]["completion_tokens"] == 12
    assert mr_tokens(mr)[1] - after[1] == 12
