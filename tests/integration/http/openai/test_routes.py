"""The official openai client against the app in front of the product's llama.cpp engine."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from openai import OpenAI
from openai.types.chat import ChatCompletionMessageParam

from modelrunner.registry import Endpoint, Registry, ServedModel
from tests.fixtures.engines import LoopThread
from tests.fixtures.http import (
    SMOLLM2,
    SMOLLM2_ALIAS,
    RunningApp,
    serve_in_thread,
    smollm2_instance,
)

pytestmark = pytest.mark.engine
HELLO: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Say hello."}]


@pytest.mark.parametrize("prefix", ["/v1", "/engines/v1", "/engines/llama.cpp/v1"])
def test_chat(api: RunningApp, prefix: str) -> None:
    client = OpenAI(base_url=api.base_url + prefix, api_key="unused", max_retries=0)
    answer = client.chat.completions.create(model=SMOLLM2, messages=HELLO, max_tokens=8)
    assert answer.choices[0].message.content
    assert answer.usage is not None and answer.usage.completion_tokens > 0


def test_chat_by_alias(openai_client: OpenAI) -> None:
    answer = openai_client.chat.completions.create(
        model=SMOLLM2_ALIAS, messages=HELLO, max_tokens=4
    )
    assert answer.choices[0].message.content


def test_streaming_chat_arrives_in_many_chunks(openai_client: OpenAI) -> None:
    stream = openai_client.chat.completions.create(
        model=SMOLLM2,
        messages=HELLO,
        max_tokens=16,
        stream=True,
    )
    pieces = [
        c.choices[0].delta.content for c in stream if c.choices and c.choices[0].delta.content
    ]
    assert len(pieces) > 3
    assert "".join(pieces).strip()


def test_completion(openai_client: OpenAI) -> None:
    answer = openai_client.completions.create(
        model=SMOLLM2, prompt="Once upon a time", max_tokens=6
    )
    assert answer.choices[0].text
    assert answer.usage is not None and answer.usage.prompt_tokens > 0


def test_streaming_completion(openai_client: OpenAI) -> None:
    stream = openai_client.completions.create(
        model=SMOLLM2, prompt="One, two,", max_tokens=8, stream=True
    )
    assert "".join(c.choices[0].text for c in stream if c.choices)


def test_models_list_and_retrieve(api: RunningApp) -> None:
    client = OpenAI(
        base_url=api.base_url + "/engines/llama.cpp/v1", api_key="unused", max_retries=0
    )
    listed = {m.id for m in client.models.list()}
    assert listed == {SMOLLM2, "warming"}  # the vllm model is not listed under llama.cpp
    every = OpenAI(base_url=api.base_url + "/v1", api_key="unused", max_retries=0)
    assert {m.id for m in every.models.list()} == {SMOLLM2, "warming", "tiny-vllm"}
    assert every.models.retrieve(SMOLLM2_ALIAS).id == SMOLLM2  # "ai/smollm2": slash in the id


@pytest.fixture(scope="module")
def embedding_app(
    loop_thread: LoopThread, smollm2_gguf: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningApp]:
    log_dir = tmp_path_factory.mktemp("embed")
    name = "smollm2-embed"
    with smollm2_instance(loop_thread, smollm2_gguf, log_dir, name, embeddings=True) as smol:
        registry = Registry()
        registry.publish(
            ServedModel(name, "llama.cpp", endpoint=Endpoint("e1", "llama.cpp", smol.base_url))
        )
        with serve_in_thread(registry) as running:
            yield running


def test_embeddings(embedding_app: RunningApp) -> None:
    client = OpenAI(
        base_url=embedding_app.base_url + "/engines/v1", api_key="unused", max_retries=0
    )
    answer = client.embeddings.create(model="smollm2-embed", input=["a cat", "a dog"])
    assert len(answer.data) == 2
    assert answer.data[0].embedding
    # One pooled vector per input (the engine mean-pools a chat model's per-token vectors).
    first, second = (item.embedding for item in answer.data)
    assert len(first) == len(second) == 576  # SmolLM2-135M's hidden size
    assert all(isinstance(x, float) for x in first)
    assert first != second
