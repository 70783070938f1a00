"""Routing decisions and listings, and token usage read from answers (pure)."""

from __future__ import annotations

import pytest

from modelrunner.errors import UnknownModel
from modelrunner.http.routing import (
    check_engine,
    dmr_models,
    model_list,
    readiness,
    unknown_engine_message,
)
from modelrunner.http.upstream.forwarder import Usage, usage_of_json, usage_of_sse
from modelrunner.registry import Endpoint, ServedModel
from modelrunner.status import ModelStatus

LLAMA = ServedModel(
    "smollm2", "llama.cpp", ("ai/smollm2",), Endpoint("i1", "llama.cpp", "http://a"), created=100.5
)
VLLM = ServedModel("tiny", "vllm", created=200.0, unavailable_reason="is starting")


@pytest.mark.parametrize("segment", ["llama.cpp", "vllm", "diffusers"])
def test_known_engines(segment: str) -> None:
    assert unknown_engine_message(segment) is None


def test_unknown_engine_lists_the_known_ones() -> None:
    assert unknown_engine_message("llamacpp") == (
        "Unknown engine 'llamacpp' in the path: expected one of llama.cpp, vllm, diffusers"
    )


@pytest.mark.parametrize("segment", [None, "llama.cpp"])
def test_engine_match(segment: str | None) -> None:
    check_engine(LLAMA, segment, "chat/completions")


def test_engine_mismatch_says_where_the_model_is() -> None:
    with pytest.raises(UnknownModel) as caught:
        check_engine(LLAMA, "vllm", "chat/completions")
    assert str(caught.value) == (
        "The model 'smollm2' is served by the llama.cpp engine, not vllm: use "
        "/engines/llama.cpp/v1/chat/completions or /engines/v1/chat/completions"
    )


def test_model_list_filters_by_engine() -> None:
    assert [m.id for m in model_list([LLAMA, VLLM], None).data] == ["smollm2", "tiny"]
    only = model_list([LLAMA, VLLM], "vllm").data
    assert [(m.id, m.engine, m.ready, m.created) for m in only] == [("tiny", "vllm", False, 200)]


def test_dmr_listing_uses_digest_and_reference() -> None:
    status = {
        "smollm2": ModelStatus(
            name="smollm2", digest="sha256:abc", reference="docker.io/ai/smollm2:latest"
        )
    }
    first, second = dmr_models([LLAMA, VLLM], status)
    assert first.id == "sha256:abc"
    assert first.tags == ["smollm2", "ai/smollm2", "docker.io/ai/smollm2:latest"]
    assert (first.config.format, first.created) == ("gguf", 100)
    assert (second.id, second.tags, second.config.format) == ("tiny", ["tiny"], "safetensors")


def test_readiness_lists_what_is_not_ready() -> None:
    snapshot = [
        ModelStatus(name="a", aliases=("x",), phase="ready"),
        ModelStatus(name="b", phase="starting"),
    ]
    assert readiness(snapshot, (), False).not_ready == ["b"]
    assert readiness(snapshot, ("x", "nope"), False).not_ready == ["nope"]
    assert readiness(snapshot, ("a",), True).models == ["a"]


def test_usage_of_json() -> None:
    assert usage_of_json(
        b'{"id": 1, "usage": {"prompt_tokens": 3, "completion_tokens": 5, "total_tokens": 8}}'
    ) == Usage(3, 5)
    assert usage_of_json(b'{"id": 1}') is None
    assert usage_of_json(b"not json") is None


def test_usage_of_sse_takes_the_last_report() -> None:
    chunk = (
        b'data: {"choices": [], "usage": null}\n\n'
        b'data: {"choices": [], "usage": {"prompt_tokens": 2, "completion_tokens": 9}}\n\n'
        b"data: [DONE]\n\n"
    )
    assert usage_of_sse(chunk) == Usage(2, 9)
    assert usage_of_sse(b'data: {"usage"') is None
