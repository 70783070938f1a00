"""Streams handed off to the llama.cpp engine (engines/handoff.py): the engine writes the
events to the client's socket, mr writes the head and the last chunk. Against the real
engine, with the official client; the relayed path answers the same requests for comparison."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest
from openai import OpenAI
from prometheus_client.parser import text_string_to_metric_families

from modelrunner.engines.process import EngineProcess
from tests.fixtures.http import SMOLLM2, RunningApp, serve_in_thread, smollm2_registry

pytestmark = pytest.mark.engine

SEEDED = {
    "model": SMOLLM2,
    "messages": [{"role": "user", "content": "Name three colours"}],
    "max_tokens": 24,
    "temperature": 0,
    "seed": 3,
}


def handed_off(instance: EngineProcess) -> float:
    """The engine's count of streams it wrote itself."""
    text = httpx.get(instance.base_url + "/metrics", timeout=10).text
    for family in text_string_to_metric_families(text):
        if family.name == "llamacpp:streams_handed_off":
            return sum(s.value for s in family.samples if s.name.endswith("_total"))
    raise AssertionError("the engine exposes no llamacpp:streams_handed_off")


def completion_tokens(app: RunningApp) -> float:
    text = httpx.get(app.base_url + "/metrics", timeout=10).text
    for family in text_string_to_metric_families(text):
        if family.name == "mr_tokens":
            return sum(
                s.value
                for s in family.samples
                if s.name == "mr_tokens_total" and s.labels.get("kind") == "completion"
            )
    return 0.0


def streamed_text(client: OpenAI, **extra: object) -> tuple[str, str | None]:
    text, finish = [], None
    for chunk in client.chat.completions.create(**{**SEEDED, **extra}, stream=True):  # type: ignore[call-overload]
        if chunk.choices:
            text.append(chunk.choices[0].delta.content or "")
            finish = chunk.choices[0].finish_reason or finish
    return "".join(text), finish


@pytest.fixture(scope="module")
def relayed(llama_instance: EngineProcess) -> Iterator[RunningApp]:
    with serve_in_thread(smollm2_registry(llama_instance.base_url)) as app:
        yield app


def test_a_stream_is_written_by_the_engine_and_is_the_relayed_answer(
    api: RunningApp, relayed: RunningApp, llama_instance: EngineProcess
) -> None:
    before, counted = handed_off(llama_instance), completion_tokens(api)
    direct = OpenAI(base_url=api.base_url + "/v1", api_key="unused", max_retries=0)
    text, finish = streamed_text(direct)
    assert handed_off(llama_instance) == before + 1
    assert text and finish == "length"
    # No include_usage asked, yet mr counts the tokens: the engine reports them at the end.
    assert completion_tokens(api) == counted + SEEDED["max_tokens"]

    through_relay = OpenAI(base_url=relayed.base_url + "/v1", api_key="unused", max_retries=0)
    assert streamed_text(through_relay) == (text, finish)
    assert handed_off(llama_instance) == before + 1  # the relay did not hand off


def test_one_connection_carries_handed_off_streams_plain_answers_and_errors(
    api: RunningApp, llama_instance: EngineProcess
) -> None:
    before = handed_off(llama_instance)
    # One connection only: a stream whose framing were off would break the next answer.
    with httpx.Client(
        base_url=api.base_url, timeout=60, limits=httpx.Limits(max_connections=1)
    ) as client:
        for round in range(2):
            with client.stream(
                "POST", "/v1/chat/completions", json={**SEEDED, "stream": True}
            ) as r:
                assert r.status_code == 200
                assert r.headers["content-type"].startswith("text/event-stream")
                lines = [line for line in r.iter_lines() if line.startswith("data: ")]
            assert lines[-1] == "data: [DONE]", round
            assert json.loads(lines[0][len("data: ") :])["choices"][0]["delta"]["role"]
            plain = client.post("/v1/chat/completions", json=SEEDED)
            assert plain.status_code == 200 and plain.json()["choices"][0]["message"]["content"]
            # Refused by the engine before its stream began: an error answer, not a stream.
            refused = client.post(
                "/v1/chat/completions", json={**SEEDED, "stream": True, "top_k": -5}
            )
            assert refused.status_code == 400, refused.text
            assert refused.json()["error"]["param"] == "top_k"
    assert handed_off(llama_instance) == before + 2
