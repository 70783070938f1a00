"""The Ollama API end to end: the official `ollama` client -> `mr serve` (keys on) -> the
llama.cpp engine on SmolLM2, and pull/delete against a real OCI registry."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import ollama
import pytest

from modelrunner.store.store import Store
from tests.fixtures.registry import Registry
from tests.fixtures.serve import Server

pytestmark = [pytest.mark.engine]
PROMPT = [{"role": "user", "content": "Name three colours."}]
GREEDY: dict[str, Any] = {"temperature": 0, "num_predict": 12, "seed": 1}


@pytest.fixture
def client(smol_server: Server) -> ollama.Client:
    return ollama.Client(host=smol_server.url, headers=smol_server.auth, timeout=120)


def openai_text(server: Server, **body: Any) -> str:
    """The same request through mr's OpenAI route: what the translation must reproduce.
    Asked twice: llama.cpp reuses the cached prompt of the previous request, which can shift
    a greedy choice against a cold evaluation, so the second answer is the repeatable one."""
    for _ in range(2):
        answer = server.client(max_retries=0).chat.completions.create(
            model="smol", temperature=0, max_tokens=12, seed=1, **body
        )
    return answer.choices[0].message.content or ""


def test_version_and_list(client: ollama.Client, smollm2_gguf: Path) -> None:
    version = httpx.get(
        client._client.base_url.join("/api/version"), headers=client._client.headers
    )
    assert version.status_code == 200 and version.json()["version"]
    models = {m.model: m for m in client.list().models}
    assert set(models) == {"smol", "smol-embed"}
    smol = models["smol"]
    assert smol.size == smollm2_gguf.stat().st_size
    assert smol.details is not None
    assert (smol.details.format, smol.details.family) == ("gguf", "llama")
    assert smol.details.quantization_level == "Q4_1"
    assert smol.details.parameter_size and smol.details.parameter_size.endswith("M")
    assert smol.modified_at is not None


def test_show_has_template_and_gguf_metadata(client: ollama.Client) -> None:
    shown = client.show("smol")
    assert shown.template and "<|im_start|>" in shown.template
    assert shown.modelinfo is not None
    assert shown.modelinfo["general.architecture"] == "llama"
    assert shown.details is not None and shown.details.family == "llama"
    assert shown.capabilities == ["completion"]
    assert client.show("smol-embed").capabilities == ["embedding"]


def test_ps_shows_the_keep_alive_deadline(client: ollama.Client) -> None:
    # The deadline counts from the last request; the server is shared, so make one now.
    client.chat(model="smol", messages=PROMPT, options={**GREEDY, "num_predict": 1})
    loaded = {m.model: m for m in client.ps().models}
    assert {"smol", "smol-embed"} <= set(loaded)
    expires = loaded["smol"].expires_at
    assert expires is not None
    left = expires - datetime.now(UTC)
    assert timedelta(minutes=9) < left <= timedelta(minutes=10, seconds=5)  # keep_alive: 10m
    never = loaded["smol-embed"].expires_at
    assert never is not None and never.year > 2100  # no keep_alive: stays loaded


def test_chat_matches_the_openai_route(client: ollama.Client, smol_server: Server) -> None:
    expected = openai_text(smol_server, messages=PROMPT)
    answer = client.chat(model="smol", messages=PROMPT, options=GREEDY, stream=False)
    assert expected and answer.message.content == expected
    assert answer.done and answer.done_reason in ("stop", "length")
    assert answer.prompt_eval_count and answer.prompt_eval_count > 5
    assert answer.eval_count and 0 < answer.eval_count <= 12
    assert answer.total_duration and answer.total_duration > 0

    parts = list(client.chat(model="smol:latest", messages=PROMPT, options=GREEDY, stream=True))
    assert len(parts) > 2, "streamed as it was generated, not in one piece"
    assert all(not p.done for p in parts[:-1]) and parts[-1].done
    assert "".join(p.message.content or "" for p in parts) == expected
    assert parts[-1].eval_count == answer.eval_count


def test_generate_chat_turn_and_raw(client: ollama.Client, smol_server: Server) -> None:
    expected = openai_text(smol_server, messages=PROMPT)
    answer = client.generate(model="smol", prompt=PROMPT[0]["content"], options=GREEDY)
    assert answer.response == expected and answer.done
    streamed = list(
        client.generate(model="smol", prompt=PROMPT[0]["content"], options=GREEDY, stream=True)
    )
    assert "".join(p.response for p in streamed) == expected
    raw = client.generate(model="smol", prompt="Once upon a time", raw=True, options=GREEDY)
    direct = smol_server.client(max_retries=0).completions.create(
        model="smol", prompt="Once upon a time", temperature=0, max_tokens=12, seed=1
    )
    assert raw.response == direct.choices[0].text


def test_empty_prompt_loads_the_model(client: ollama.Client) -> None:
    answer = client.generate(model="smol", prompt="")
    assert (answer.done, answer.done_reason, answer.response) == (True, "load", "")


def test_json_format_constrains_the_answer(client: ollama.Client) -> None:
    ask = [{"role": "user", "content": "Describe a cat."}]
    options = {"temperature": 0, "num_predict": 12}
    prose = client.chat(model="smol", messages=ask, options=options, stream=False)
    constrained = client.chat(
        model="smol", messages=ask, format="json", options=options, stream=True
    )
    text = "".join(part.message.content or "" for part in constrained)
    assert not (prose.message.content or "").lstrip().startswith("{")
    # A grammar holds the answer to JSON (a JSON object, the llama.cpp engine's json_object).
    assert text.lstrip().startswith("{"), text


# The grammar can only write ["a","a"]; uniqueItems, checked after generation, refuses it.
DUPLICATES = {"type": "array", "items": {"enum": ["a"]}, "minItems": 2, "maxItems": 2,
              "uniqueItems": True}  # fmt: skip


@pytest.mark.parametrize("stream", [False, True])
def test_a_format_schema_the_answer_fails_is_not_done_as_stop(
    client: ollama.Client, stream: bool
) -> None:
    ask = [{"role": "user", "content": "Two letters."}]
    answer = client.chat(
        model="smol",
        messages=ask,
        format=DUPLICATES,
        options={"num_predict": 80, "temperature": 0},
        stream=stream,
    )
    last = list(answer)[-1] if stream else answer
    assert last.done_reason == "schema_invalid"


def test_embed_and_embeddings(client: ollama.Client) -> None:
    many = client.embed(model="smol-embed", input=["the red fox", "a blue sky"])
    assert len(many.embeddings) == 2
    assert len(many.embeddings[0]) == len(many.embeddings[1]) == 576  # SmolLM2's width
    assert many.embeddings[0] != many.embeddings[1]
    one = client.embeddings(model="smol-embed", prompt="the red fox")
    assert list(one.embedding) == pytest.approx(list(many.embeddings[0]), rel=1e-4)


def test_num_ctx_is_ignored_with_a_warning(smol_server: Server) -> None:
    answer = httpx.post(
        f"{smol_server.url}/api/chat",
        headers=smol_server.auth,
        json={"model": "smol", "messages": PROMPT, "stream": False,
              "options": {"num_ctx": 8192, "num_predict": 2}},
        timeout=60,
    )  # fmt: skip
    assert answer.status_code == 200
    assert "num_ctx is ignored" in answer.headers["warning"]


@pytest.mark.parametrize(
    ("path", "body", "status", "says"),
    [
        ("/api/chat", {"model": "nope", "messages": PROMPT}, 404, "'nope' does not exist"),
        ("/api/chat", {"model": "smol", "messages": [{"role": "user", "content": "x",
                                                      "images": ["aGk="]}]},
         400, "messages[0].images"),
        ("/api/chat", {"model": "smol"}, 200, ""),  # no messages: Ollama's "load"
        ("/api/chat", {"messages": PROMPT}, 400, "model"),
        ("/api/generate", {"model": "smol", "prompt": "x", "options": {"top_k": "many"}},
         400, "top_k"),
        ("/api/generate", {"model": "smol", "prompt": "x", "suffix": "y"}, 400, "suffix"),
        ("/api/embed", {"model": "smol-embed"}, 400, "input"),
        ("/api/show", {"model": "nope"}, 404, "does not exist"),
        ("/api/show", {}, 400, "model is required"),
        ("/api/pull", {"model": "Not A Reference!"}, 400, ""),
    ],
)  # fmt: skip
def test_errors_in_ollamas_shape(
    smol_server: Server, path: str, body: dict[str, Any], status: int, says: str
) -> None:
    answer = httpx.post(smol_server.url + path, headers=smol_server.auth, json=body, timeout=60)
    assert answer.status_code == status, answer.text
    if status != 200:
        assert set(answer.json()) == {"error"}
        assert says in answer.json()["error"]


def test_bad_json_and_missing_key(smol_server: Server) -> None:
    url, auth = f"{smol_server.url}/api/chat", smol_server.auth
    json_type = {**auth, "content-type": "application/json"}
    answer = httpx.post(url, headers=json_type, content=b'{"model": ', timeout=10)
    assert answer.status_code == 400 and set(answer.json()) == {"error"}
    # A body a web page could send cross-site without asking (no JSON content type): 415.
    untyped = httpx.post(url, headers=auth, content=b'{"model": "smol"}', timeout=10)
    assert untyped.status_code == 415
    anonymous = httpx.post(f"{smol_server.url}/api/chat", json={"model": "smol"}, timeout=10)
    assert anonymous.status_code == 401
    assert "API key" in anonymous.json()["error"]
    with pytest.raises(ollama.ResponseError) as caught:
        ollama.Client(host=smol_server.url).list()
    assert caught.value.status_code == 401


@pytest.mark.registry
def test_pull_and_delete_on_the_store(
    client: ollama.Client, smol_server: Server, registry: Registry, smollm2_gguf: Path,
    tmp_path: Path,
) -> None:  # fmt: skip
    ref = f"{registry.address}/ai/smollm2:ollama"
    publisher = Store(tmp_path / "publisher")
    publisher.package(ref, gguf=smollm2_gguf)
    publisher.push(ref)

    lines = list(client.pull(ref, stream=True))
    statuses = [line.status for line in lines]
    assert statuses[0] == "pulling manifest" and statuses[-1] == "success"
    by_digest: dict[str, list[Any]] = {}
    for line in lines:
        if line.digest:
            by_digest.setdefault(line.digest, []).append(line)
    assert by_digest, statuses
    # The GGUF layer: its lines count up to its size, the last one says it is complete.
    gguf = max(by_digest.values(), key=lambda found: found[0].total or 0)
    assert gguf[0].status == f"pulling {gguf[0].digest.removeprefix('sha256:')[:12]}"
    assert gguf[-1].total == smollm2_gguf.stat().st_size
    assert gguf[-1].completed == gguf[-1].total
    assert [line.completed for line in gguf] == sorted(line.completed or 0 for line in gguf)
    stored = Store(smol_server.store_dir)
    assert any(ref in info.tags for info in stored.list())

    assert client.pull(ref, stream=False).status == "success"  # already there: no download

    assert client.delete(ref).status == "success"
    assert not any(ref in info.tags for info in stored.list())
    with pytest.raises(ollama.ResponseError) as caught:
        client.delete(ref)
    assert caught.value.status_code == 404


def test_wrong_method_and_unknown_path_in_ollamas_shape(smol_server: Server) -> None:
    wrong = httpx.get(f"{smol_server.url}/api/chat", headers=smol_server.auth, timeout=10)
    assert wrong.status_code == 405 and wrong.json() == {
        "error": "Method not allowed: GET /api/chat"
    }
    unknown = httpx.post(f"{smol_server.url}/api/nope", headers=smol_server.auth, timeout=10)
    assert unknown.status_code == 404 and set(unknown.json()) == {"error"}
