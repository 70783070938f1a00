"""The engine with threads = all cores answers exactly as with one thread: seeded answers,
plain and streamed, alone and beside three other streams; a client that leaves frees its
slot; a full queue is a 503; bad input is a 400 while streams run. (Speed is the
benchmark's, bench/bench_threads.py: no timings here.)"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from modelrunner import engines
from modelrunner.engines.process import EngineProcess
from modelrunner.model_files import ModelFiles
from modelrunner.settings import Settings
from tests.fixtures.engines import LoopThread, make_manifest
from tests.fixtures.http import NO_EOS, wait_until
from tests.integration.engines.llamacpp.test_engine import (
    CHAT,
    PROMPTS,
    ask,
    in_parallel,
    metric,
    stream,
    streamed_text,
)

pytestmark = pytest.mark.engine
CORES = os.cpu_count() or 1
SAMPLINGS = ({"temperature": 0}, {"temperature": 0.9, "seed": 1234})


def _engine(loop_thread: LoopThread, gguf: Path, logs: Path, threads: int, **flags: Any) -> Any:
    manifest = make_manifest(
        name="smollm2",
        context_size=512,
        **{"llama.cpp": {"threads": threads, "parallel": flags.pop("parallel", 4)}},
        runtime_flags=["--seed=7", *flags.pop("runtime_flags", [])],
    )
    instance = engines.create_instance(manifest, ModelFiles("gguf", gguf), Settings(log_dir=logs))
    loop_thread.run(instance.start())
    return instance


@pytest.fixture(scope="module")
def engines_by_threads(
    loop_thread: LoopThread, smollm2_gguf: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[int, EngineProcess]]:
    logs = tmp_path_factory.mktemp("logs")
    started = {t: _engine(loop_thread, smollm2_gguf, logs, t) for t in sorted({1, CORES})}
    yield started
    for instance in started.values():
        loop_thread.run(instance.stop())


def _answers(base_url: str, bodies: list[dict[str, Any]], together: bool) -> list[str]:
    def plain(i: int) -> str:
        answer = httpx.post(base_url + CHAT, json=bodies[i], timeout=120).json()
        return str(answer["choices"][0]["message"]["content"])

    def streamed(i: int) -> str:
        return streamed_text(stream(base_url, bodies[i]))

    def one(i: int) -> str:  # half of them streamed, so both paths run side by side
        return streamed(i) if i % 2 else plain(i)

    if together:
        return in_parallel(len(bodies), one)
    return [one(i) for i in range(len(bodies))]


@pytest.mark.parametrize("sampling", SAMPLINGS)
def test_seeded_answers_are_the_same_at_one_thread_and_all_cores(
    engines_by_threads: dict[int, EngineProcess], sampling: dict[str, Any]
) -> None:
    bodies = [ask(p, max_tokens=32, **sampling) for p in PROMPTS]
    reference = _answers(engines_by_threads[1].base_url, bodies, together=False)
    assert len(set(reference)) == 4
    for threads, instance in engines_by_threads.items():
        for together in (False, True):
            got = _answers(instance.base_url, bodies, together)
            assert got == reference, (threads, together)


def test_a_client_that_leaves_frees_its_slot_at_all_cores(
    engines_by_threads: dict[int, EngineProcess],
) -> None:
    base_url = engines_by_threads[CORES].base_url
    body = ask("Write a very long story about a cat.", max_tokens=400, logit_bias=NO_EOS)
    for streaming in (True, False):
        before = metric(base_url, "llamacpp:tokens_predicted_total")
        payload = json.dumps({**body, "stream": streaming}).encode()
        with socket.create_connection(("127.0.0.1", int(base_url.rsplit(":", 1)[1]))) as s:
            s.sendall(
                b"POST /v1/chat/completions HTTP/1.1\r\nContent-Type: application/json\r\n"
                + f"Content-Length: {len(payload)}\r\n\r\n".encode()
                + payload
            )
            if streaming:  # the answer has begun: the head and a first token arrived
                assert s.recv(65536).startswith(b"HTTP/1.1 200")
            assert wait_until(lambda: metric(base_url, "llamacpp:requests_processing") == 1)
        assert wait_until(lambda: metric(base_url, "llamacpp:requests_processing") == 0)
        generated = metric(base_url, "llamacpp:tokens_predicted_total") - before
        assert generated < 400, f"the abandoned request ran to its end (stream={streaming})"
    # and the engine serves on
    assert streamed_text(stream(base_url, ask("Say hi", max_tokens=4, temperature=0)))


def test_bad_input_beside_running_streams_at_all_cores(
    engines_by_threads: dict[int, EngineProcess],
) -> None:
    base_url = engines_by_threads[CORES].base_url
    bodies: list[Any] = [
        b"{not json",
        {"messages": "hi"},
        {"messages": [], "max_tokens": 1},
        {"messages": [{"role": "user", "content": "x"}], "max_tokens": -1},
    ]

    def work(i: int) -> Any:
        if i < 2:
            return stream(base_url, ask(PROMPTS[i], max_tokens=24, temperature=0))
        bad = bodies[i - 2]
        sent = {"content": bad} if isinstance(bad, bytes) else {"json": bad}
        return httpx.post(base_url + CHAT, timeout=60, **sent)

    results = in_parallel(2 + len(bodies), work)
    for events in results[:2]:
        assert events[-1] == "[DONE]" and streamed_text(events)
    for response in results[2:]:
        assert response.status_code == 400, response.text
        assert response.json()["error"]["type"] == "invalid_request_error"


def test_a_full_queue_is_a_503_at_all_cores(
    loop_thread: LoopThread, smollm2_gguf: Path, tmp_path: Path
) -> None:
    instance = _engine(
        loop_thread, smollm2_gguf, tmp_path, CORES, parallel=2, runtime_flags=["--max_queue", "2"]
    )
    try:
        body = ask("Write a story.", max_tokens=60, logit_bias=NO_EOS, temperature=0)
        # 300 s: the last queued answer waits for two others, at all cores on a machine
        # that may be busy (CI ran into 120 s once while benchmarks ran beside it).
        answers = in_parallel(
            8, lambda i: httpx.post(instance.base_url + CHAT, json=body, timeout=300)
        )
        assert all(isinstance(a, httpx.Response) for a in answers), answers
        statuses = sorted(a.status_code for a in answers)
        assert statuses.count(200) >= 4 and 503 in statuses, statuses  # 2 slots + 2 queued
        refused = next(a for a in answers if a.status_code == 503)
        assert refused.headers["retry-after"] == "1"
        assert all(
            a.json()["usage"]["completion_tokens"] == 60 for a in answers if a.status_code == 200
        )
    finally:
        loop_thread.run(instance.stop())
