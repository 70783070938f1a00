"""What /api/tags, /api/ps and /api/show say about a model, from its facts (pure)."""

from __future__ import annotations

import time

import pytest

from modelrunner.http.ollama.models import OllamaFacts, ps_entry, show_answer, tags_entry
from modelrunner.registry import Endpoint, ServedModel

FACTS = OllamaFacts(
    format="gguf",
    family="llama",
    parameter_size="134.52M",
    quantization="Q4_1",
    size=98362432,
    digest="sha256:" + "ab" * 32,
    modified=0.0,
    metadata={
        "general.architecture": "llama",
        "tokenizer.chat_template": "{{ messages }}",
        "tokenizer.ggml.model": "gpt2",
    },
)


def test_tags_entry() -> None:
    assert tags_entry("smol", FACTS) == {
        "name": "smol",
        "model": "smol",
        "modified_at": "1970-01-01T00:00:00Z",
        "size": 98362432,
        "digest": "ab" * 32,
        "details": {
            "parent_model": "",
            "format": "gguf",
            "family": "llama",
            "families": ["llama"],
            "parameter_size": "134.52M",
            "quantization_level": "Q4_1",
        },
    }


def test_tags_entry_of_unknown_facts_is_still_complete() -> None:
    entry = tags_entry("m", OllamaFacts(modified=0.0))
    assert entry["digest"] == "" and entry["size"] == 0
    assert entry["details"]["families"] == []


def _loaded(in_flight: int = 0, last_used: float = 100.0) -> ServedModel:
    endpoint = Endpoint("i-1", "llama.cpp", "http://127.0.0.1:1", in_flight=in_flight)
    endpoint.last_used = last_used
    return ServedModel(name="smol", engine="llama.cpp", endpoint=endpoint)


def test_ps_expires_at_counts_idle_time_against_keep_alive() -> None:
    # idle for 60 s of a 600 s keep_alive: 540 s left
    entry = ps_entry(_loaded(last_used=100.0), FACTS, 600.0, now_unix=0.0, now_mono=160.0)
    assert entry["expires_at"] == "1970-01-01T00:09:00Z"
    assert "modified_at" not in entry and entry["size_vram"] == 0


def test_ps_a_busy_model_has_its_whole_keep_alive_left() -> None:
    entry = ps_entry(_loaded(in_flight=1, last_used=0.0), FACTS, 60.0, 0.0, 1000.0)
    assert entry["expires_at"] == "1970-01-01T00:01:00Z"


@pytest.mark.parametrize("keep_alive", [float("inf"), 1e300, 1e12])
def test_ps_kept_loaded_never_expires(keep_alive: float) -> None:
    # 1e300 s once overflowed the date (a 500 on /api/ps, found by the fuzz test)
    entry = ps_entry(_loaded(), FACTS, keep_alive, time.time(), 0.0)
    assert entry["expires_at"].startswith("2318-")


def test_show_answer() -> None:
    shown = show_answer(_loaded(), FACTS, verbose=False)
    assert shown["template"] == "{{ messages }}"
    assert shown["model_info"] == {"general.architecture": "llama"}
    assert shown["capabilities"] == ["completion"]
    assert 'TEMPLATE """{{ messages }}"""' in shown["modelfile"]
    verbose = show_answer(_loaded(), FACTS, verbose=True)
    assert verbose["model_info"]["tokenizer.ggml.model"] == "gpt2"
    embedder = ServedModel(name="e", engine="llama.cpp", embeddings=True)
    assert show_answer(embedder, FACTS, verbose=False)["capabilities"] == ["embedding"]
