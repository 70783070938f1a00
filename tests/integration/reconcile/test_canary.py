"""Canary rollouts with a real `mr serve` and real llama.cpp engines, under steady load:
a good revision is promoted after its window, a bad one is rolled back within it, and
the serving revision never stops answering."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from modelrunner.engines.llamacpp.launch import default_threads
from tests.fixtures.serve import Server, manifest


@dataclass(frozen=True)
class Answer:
    started: float
    ended: float
    status: int
    revision: str | None


@contextmanager
def steady_load(server: Server, workers: int = 2) -> Iterator[list[Answer]]:
    """Chat requests back to back from ``workers`` threads until the block ends."""
    answers: list[Answer] = []
    stop = threading.Event()

    def work() -> None:
        with httpx.Client(base_url=server.url, timeout=60) as client:
            while not stop.is_set():
                started = time.monotonic()
                try:
                    response = client.post(
                        "/v1/chat/completions",
                        json={"model": "smol", "max_tokens": 2,
                              "messages": [{"role": "user", "content": "Hi"}]},
                    )  # fmt: skip
                    status, revision = (
                        response.status_code,
                        response.headers.get("x-model-revision"),
                    )
                except httpx.HTTPError:
                    status, revision = 0, None
                answers.append(Answer(started, time.monotonic(), status, revision))

    threads = [threading.Thread(target=work, daemon=True) for _ in range(workers)]
    for thread in threads:
        thread.start()
    try:
        yield answers
    finally:
        stop.set()
        for thread in threads:
            thread.join(60)


def mr_plan(server: Server, folder: Path, **env: str) -> str:
    command = [sys.executable, "-m", "modelrunner", "plan", "--models-dir", str(folder)]
    done = subprocess.run([*command, "--url", server.url], capture_output=True, text=True,
                          env={**server.env, **env}, timeout=60)  # fmt: skip
    assert done.returncode == 2, done.stdout + done.stderr
    return done.stdout


def rollout(server: Server, phase: str) -> dict[str, Any] | None:
    found = server.status()["smol"].get("rollout")
    return found if found and found["phase"] == phase else None


def timed(server: Server, what: str, check: Callable[[], Any], timeout: float) -> float:
    server.wait_for(what, check, timeout)
    return time.monotonic()


def test_a_canary_under_load_answers_beside_the_old_revision_then_takes_over(
    start_server: Callable[..., Server], smollm2_gguf: Path
) -> None:
    plan = {"canary_percent": 50, "window": "3s", "max_error_rate": 0.0, "min_requests": 3}
    server = start_server()
    server.write("smol.yaml", manifest(smollm2_gguf, "smol", rollout=plan))
    old = server.wait_for("smol", lambda: server.ready("smol"), 180)["revision"]
    # `mr plan` says beforehand what the change will do: a canary, or a plain replace
    # when this host's memory cannot hold both revisions.
    planned = server.models_dir.parent / "planned"
    planned.mkdir()
    (planned / "smol.yaml").write_text(
        manifest(smollm2_gguf, "smol", context_size=2048, rollout=plan)
    )
    assert "(engine settings changed; canary: 50% of requests for 3s; llama.cpp threads: 1)" in (
        mr_plan(server, planned)
    )
    assert server.status()["smol"]["threads"] == 1
    # Without llama.cpp.threads: this host's physical cores, said before the start.
    (planned / "smol.yaml").write_text(
        manifest(smollm2_gguf, "smol", context_size=2048, rollout=plan, **{"llama.cpp": {}})
    )
    assert f"; llama.cpp threads: {default_threads()})" in mr_plan(server, planned)
    (planned / "smol.yaml").write_text(
        manifest(smollm2_gguf, "smol", context_size=2048, rollout=plan)
    )
    assert "falls back to replace: memory does not allow two revisions" in mr_plan(
        server, planned, MR_MEMORY_BUDGET="300M"
    )
    with steady_load(server) as answers:
        time.sleep(0.5)
        server.write("smol.yaml", manifest(smollm2_gguf, "smol", context_size=2048, rollout=plan))
        canary_at = timed(server, "the canary", lambda: rollout(server, "canary"), 180)
        shown = server.status()["smol"]["rollout"]
        promoted_at = timed(server, "promotion", lambda: rollout(server, "promoted"), 120)
        time.sleep(2.0)
    new = server.status()["smol"]["revision"]
    assert new != old
    assert [r["role"] for r in shown["revisions"]] == ["stable", "canary"]
    assert [r["percent"] for r in shown["revisions"]] == [50, 50]
    assert all(a.status == 200 for a in answers), [a for a in answers if a.status != 200]
    during = {a.revision for a in answers if canary_at <= a.started and a.ended <= promoted_at}
    after = {a.revision for a in answers if a.started > promoted_at}
    assert during == {old, new}
    assert after == {new}
    assert rollout(server, "promoted")["detail"].startswith("promoted: 0 of ")
    metrics = httpx.get(f"{server.url}/metrics").text
    for revision in (old, new):
        assert f'mr_revision_requests_total{{model="smol",outcome="ok",revision="{revision}"}}' in (
            metrics
        )


def test_a_failing_canary_is_rolled_back_within_its_window_and_the_old_never_stops(
    start_server: Callable[..., Server], smollm2_gguf: Path
) -> None:
    plan = {"canary_percent": 50, "window": "10m", "max_error_rate": 0.1, "min_requests": 4}
    server = start_server()
    server.write("smol.yaml", manifest(smollm2_gguf, "smol", rollout=plan))
    old = server.wait_for("smol", lambda: server.ready("smol"), 180)["revision"]
    with steady_load(server) as answers:
        time.sleep(0.5)
        bad = manifest(smollm2_gguf, "smol", rollout=plan, env={"MR_ENGINE_FAULT": "500"})
        server.write("smol.yaml", bad)
        rolled_back_at = timed(server, "the rollback", lambda: rollout(server, "rolled back"), 180)
        time.sleep(1.5)
    status = server.status()["smol"]
    assert status["phase"] == "ready" and status["revision"] == old
    assert status["rollout"]["detail"].startswith("rolled back: ")
    assert "requests failed" in status["last_error"] and "> 10%)" in status["last_error"]
    assert "still serving the previous version" in status["last_error"]
    olds = [a for a in answers if a.revision == old]
    assert olds and all(a.status == 200 for a in olds)  # the old revision never failed
    failed = [a for a in answers if a.status != 200]
    assert failed and {a.revision for a in failed} != {old}  # only the canary's answers
    assert {a.revision for a in answers if a.started > rolled_back_at} == {old}

    # By hand: a new canary, aborted; then nothing to abort.
    plan["window"] = "10m"
    server.write("smol.yaml", manifest(smollm2_gguf, "smol", context_size=2048, rollout=plan))
    server.wait_for("the canary", lambda: rollout(server, "canary"), 180)
    env = {**server.env}
    abort = [sys.executable, "-m", "modelrunner", "rollout", "abort", "smol", "--url", server.url]
    done = subprocess.run(abort, capture_output=True, text=True, env=env, timeout=60)
    assert (done.returncode, done.stdout) == (0, "smol: rolled back\n"), done.stderr
    ended = server.wait_for("the rollback", lambda: rollout(server, "rolled back"), 30)
    assert ended["detail"] == "rolled back by hand (mr rollout abort)"
    again = subprocess.run(abort, capture_output=True, text=True, env=env, timeout=60)
    assert again.returncode == 1 and "has no canary rollout in progress" in again.stderr


def test_without_memory_for_two_revisions_the_change_replaces_and_says_so(
    start_server: Callable[..., Server], smollm2_gguf: Path
) -> None:
    plan = {"canary_percent": 50, "window": "10m"}
    server = start_server(MR_MEMORY_BUDGET="300M")  # one SmolLM2 (~200 MiB) fits, two do not
    server.write("smol.yaml", manifest(smollm2_gguf, "smol", rollout=plan))
    old = server.wait_for("smol", lambda: server.ready("smol"), 180)["revision"]
    server.write("smol.yaml", manifest(smollm2_gguf, "smol", context_size=2048, rollout=plan))
    ended = server.wait_for("the replace", lambda: rollout(server, "replaced"), 180)
    assert ended["detail"] == "replaced without a canary: memory does not allow two revisions"
    assert server.status()["smol"]["revision"] != old


def _translated_answers(server: Server, session: str | None = None) -> dict[str, str | None]:
    """One request on each translated route (and tokenize): route -> X-Model-Revision."""
    headers = {"x-session-id": session} if session else {}
    user = [{"role": "user", "content": "Hi"}]
    calls = {
        "ollama chat": ("/api/chat", {"model": "smol", "messages": user, "stream": False,
                                      "options": {"num_predict": 2}}),
        "ollama chat streamed": ("/api/chat", {"model": "smol", "messages": user,
                                               "options": {"num_predict": 2}}),
        "anthropic": ("/anthropic/v1/messages", {"model": "smol", "max_tokens": 2,
                                                 "messages": user}),
        "responses": ("/v1/responses", {"model": "smol", "input": "Hi",
                                        "max_output_tokens": 2}),
        "tokenize": ("/tokenize", {"model": "smol", "prompt": "Hi"}),
    }  # fmt: skip
    found = {}
    with httpx.Client(base_url=server.url, timeout=60, headers=headers) as client:
        for what, (path, body) in calls.items():
            response = client.post(path, json=body)
            assert response.status_code == 200, (what, response.text)
            found[what] = response.headers.get("x-model-revision")
    return found


def test_the_translated_routes_are_split_tagged_and_counted_per_revision(
    start_server: Callable[..., Server], smollm2_gguf: Path
) -> None:
    plan = {"canary_percent": 50, "window": "10m", "max_error_rate": 0.5, "min_requests": 1000}
    server = start_server()
    server.write("smol.yaml", manifest(smollm2_gguf, "smol", rollout=plan))
    old = server.wait_for("smol", lambda: server.ready("smol"), 180)["revision"]
    first = _translated_answers(server)
    assert set(first.values()) == {old}, first  # before a canary: the one revision

    server.write("smol.yaml", manifest(smollm2_gguf, "smol", context_size=2048, rollout=plan))
    canary = server.wait_for("the canary", lambda: rollout(server, "canary"), 180)
    new = canary["revisions"][1]["revision"]
    seen: set[str | None] = set()
    for _ in range(6):
        seen |= set(_translated_answers(server).values())
    assert seen == {old, new}  # the split reaches the translated routes, and says who answered
    # A session stays on one revision, whatever route it takes.
    for session in ("alice", "bob", "carol"):
        assert len(set(_translated_answers(server, session).values())) == 1
    counts = {r["role"]: r for r in rollout(server, "canary")["revisions"]}
    assert counts["canary"]["requests"] > 0 and counts["stable"]["requests"] > 0
    metrics = httpx.get(f"{server.url}/metrics").text
    for revision in (old, new):
        line = f'mr_revision_requests_total{{model="smol",outcome="ok",revision="{revision}"}}'
        assert line in metrics


def test_a_canary_failing_only_on_streamed_translated_calls_is_rolled_back(
    start_server: Callable[..., Server], smollm2_gguf: Path
) -> None:
    plan = {"canary_percent": 50, "window": "10m", "max_error_rate": 0.1, "min_requests": 4}
    server = start_server()
    server.write("smol.yaml", manifest(smollm2_gguf, "smol", rollout=plan))
    old = server.wait_for("smol", lambda: server.ready("smol"), 180)["revision"]
    bad = manifest(smollm2_gguf, "smol", rollout=plan, env={"MR_ENGINE_FAULT": "500"})
    server.write("smol.yaml", bad)
    server.wait_for("the canary", lambda: rollout(server, "canary"), 180)
    body = {"model": "smol", "messages": [{"role": "user", "content": "Hi"}],
            "options": {"num_predict": 2}}  # fmt: skip
    revisions: list[tuple[int, str | None]] = []
    with httpx.Client(base_url=server.url, timeout=60) as client:
        deadline = time.monotonic() + 120
        while rollout(server, "rolled back") is None:
            assert time.monotonic() < deadline, server.status()["smol"]
            with client.stream("POST", "/api/chat", json=body) as response:
                response.read()
                revisions.append((response.status_code, response.headers.get("x-model-revision")))
    status = server.status()["smol"]
    assert status["revision"] == old and status["rollout"]["detail"].startswith("rolled back: ")
    assert {r for code, r in revisions if code != 200} - {old}  # the canary's failures counted
    assert all(code == 200 for code, r in revisions if r == old)
