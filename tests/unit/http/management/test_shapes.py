"""Model management's deciding half: Docker Model Runner's shapes, store errors as HTTP
problems, and the progress lines of a transfer run in a thread."""

from __future__ import annotations

import asyncio
import json
import threading

import pytest

from modelrunner.errors import (
    DigestMismatch,
    InvalidReference,
    ModelInUse,
    ModelNotFound,
    RegistryError,
    RegistryUnauthorized,
    RegistryUnavailable,
    StoreError,
    UnknownModel,
    UsageError,
)
from modelrunner.http.management.shapes import (
    DeleteAction,
    UnloadRequest,
    created_unix,
    delete_actions,
    running_models,
    split_action,
    store_problem,
    stored_model,
    tag_target,
    unload_targets,
)
from modelrunner.http.management.transfer import LineProgress, start_transfer
from modelrunner.registry import Endpoint, ServedModel
from modelrunner.status import ModelStatus


@pytest.mark.parametrize(
    ("exc", "status", "code"),
    [
        (InvalidReference("bad"), 400, "invalid_reference"),
        (UsageError("no tag"), 400, None),
        (ModelNotFound("gone"), 404, "model_not_found"),
        (ModelInUse("served"), 409, "model_in_use"),
        (RegistryUnauthorized("denied"), 403, "registry_unauthorized"),
        (RegistryUnavailable("down"), 503, "registry_unavailable"),
        (RegistryError("500"), 502, "registry_failed"),
        (DigestMismatch("hash"), 502, "registry_failed"),
        (StoreError("not a model"), 422, "invalid_model"),
    ],
)
def test_store_errors_as_problems(exc: Exception, status: int, code: str | None) -> None:
    found = store_problem(exc, "DELETE /models/x")
    assert found is not None
    assert (found.status, found.body.error.code) == (status, code)
    assert found.body.error.message == f"DELETE /models/x: {exc}"


def test_other_errors_are_not_store_problems() -> None:
    assert store_problem(UnknownModel("x"), "here") is None
    assert store_problem(ValueError("x"), "here") is None


@pytest.mark.parametrize(
    ("path", "name", "action"),
    [
        ("ai/smollm2:q4/tag", "ai/smollm2:q4", "tag"),
        ("/127.0.0.1:5000/team/m:v1/push", "127.0.0.1:5000/team/m:v1", "push"),
        ("push", "", "push"),
    ],
)
def test_split_action(path: str, name: str, action: str) -> None:
    assert split_action(path) == (name, action)


def test_tag_target_needs_repo_and_tag() -> None:
    assert tag_target("team/chat", "prod") == "team/chat:prod"
    with pytest.raises(UsageError, match="repo and tag"):
        tag_target(None, "")
    with pytest.raises(UsageError, match=r"tag$"):
        tag_target("team/chat", None)


def test_delete_actions() -> None:
    assert delete_actions(["a:1"], "sha256:d", still_tagged=True) == [DeleteAction(Untagged="a:1")]
    assert delete_actions(["a:1", "b:2"], "sha256:d", still_tagged=False) == [
        DeleteAction(Untagged="a:1"),
        DeleteAction(Untagged="b:2"),
        DeleteAction(Deleted="sha256:d"),
    ]


@pytest.mark.parametrize(
    ("created", "unix"),
    [
        ("2026-01-02T03:04:05Z", 1767323045),
        ("2026-01-02T03:04:05+00:00", 1767323045),
        ("yesterday", 0),
        (None, 0),
    ],
)
def test_created_unix(created: object, unix: int) -> None:
    assert created_unix(created) == unix


def test_stored_model_shape() -> None:
    info = {
        "digest": "sha256:abc",
        "tags": ["ai/smollm2:latest"],
        "config": {
            "config": {"format": "gguf", "quantization": "Q4_1"},
            "descriptor": {"created": "2026-01-02T03:04:05Z"},
        },
    }
    model = stored_model(info)
    assert (model.id, model.tags, model.created) == (
        "sha256:abc",
        ["ai/smollm2:latest"],
        1767323045,
    )
    assert model.config == {"format": "gguf", "quantization": "Q4_1"}


def _models() -> list[ServedModel]:
    busy = Endpoint("chat-1", "llama.cpp", "http://127.0.0.1:1", in_flight=2, last_used=100.0)
    return [
        ServedModel(name="chat", engine="llama.cpp", aliases=("ai/chat",), endpoint=busy),
        ServedModel(
            name="embed",
            engine="llama.cpp",
            embeddings=True,
            endpoint=Endpoint("embed-1", "llama.cpp", "http://127.0.0.1:2", last_used=50.0),
        ),
        ServedModel(name="sd", engine="diffusers"),
        ServedModel(name="idle", engine="vllm"),
    ]


def test_running_models() -> None:
    status = {
        "sd": ModelStatus(name="sd", phase="starting"),
        "idle": ModelStatus(name="idle", phase="standby"),
    }
    rows = running_models(_models(), status, now_wall=1_000_000.0, now_mono=200.0)
    assert [(r.model_name, r.mode, r.in_use, r.loading, r.instance) for r in rows] == [
        ("chat", "completion", True, False, "chat-1"),
        ("embed", "embedding", False, False, "embed-1"),
        ("sd", "image-generation", False, True, None),
    ]
    assert rows[0].last_used == "1970-01-12T13:45:00Z"  # 1,000,000 - (200 - 100) seconds
    assert rows[2].last_used is None


@pytest.mark.parametrize(
    ("request_", "names"),
    [
        (UnloadRequest(all=True), ["chat", "embed", "sd", "idle"]),
        (UnloadRequest(models=["ai/chat", "nope"]), ["chat"]),
        (UnloadRequest(backend="llama.cpp"), ["chat", "embed"]),
        (UnloadRequest(backend="llama.cpp", models=["sd"]), ["sd"]),
        (UnloadRequest(), []),
    ],
)
def test_unload_targets(request_: UnloadRequest, names: list[str]) -> None:
    assert unload_targets(request_, _models()) == names


def test_a_transfer_that_fails_before_any_byte_is_an_error_not_a_stream() -> None:
    def work(progress: LineProgress) -> str:
        raise ModelNotFound("ai/nothing: not found")

    started = asyncio.run(start_transfer(work, "pull"))
    assert isinstance(started.failed, ModelNotFound) and started.lines is None


def test_a_transfer_streams_progress_then_success() -> None:
    go_on = threading.Event()

    def work(progress: LineProgress) -> str:
        task = progress.task("sha256:aaa gguf", 3 * 1024 * 1024)
        task.advance(1024 * 1024)
        go_on.wait(5)  # the stream has started by now
        task.advance(2 * 1024 * 1024)
        task.close()
        return "Model pulled successfully"

    async def run() -> list[dict[str, object]]:
        started = await start_transfer(work, "pull")
        assert started.failed is None and started.lines is not None
        lines = []
        async for line in started.lines:
            go_on.set()
            lines.append(json.loads(line))
        return lines

    lines = asyncio.run(run())
    assert lines[0]["type"] == "progress" and lines[0]["layer"] == {
        "id": "sha256:aaa gguf",
        "size": 3 * 1024 * 1024,
        "current": 1024 * 1024,
    }
    assert lines[-2]["layer"]["current"] == 3 * 1024 * 1024  # type: ignore[index]
    assert lines[-2]["message"] == "Downloaded: 3.00 MB"
    assert lines[-1] == {
        "type": "success",
        "message": "Model pulled successfully",
        "total": 0,
        "layer": None,
        "mode": "pull",
    }


def test_a_transfer_that_fails_midway_ends_with_an_error_line() -> None:
    def work(progress: LineProgress) -> str:
        progress.task("sha256:bbb", 10).close()
        raise RegistryUnavailable("the registry went away")

    async def run() -> list[dict[str, object]]:
        started = await start_transfer(work, "push")
        assert started.lines is not None
        return [json.loads(line) async for line in started.lines]

    lines = asyncio.run(run())
    assert lines[0]["message"] == "Uploaded: 0.00 MB"
    assert lines[-1]["type"] == "error" and lines[-1]["message"] == "the registry went away"


def test_mr_requests_prints_three_lines_a_pair() -> None:
    from modelrunner.cli.requests import format_record, pairs

    record = {
        "method": "POST",
        "url": "/v1/chat/completions",
        "status_code": 200,
        "duration_ms": 41.6,
        "timestamp": 0,
        "stream": True,
        "complete": True,
        "user_agent": "OpenAI/Python 3.57.0",
        "request": '{"model": "smol",\n "messages": []}',
        "response": "x" * 500,
    }
    [(model, found)] = list(pairs([{"model": "smol", "count": 1, "records": [record]}]))
    head, asked, answered = format_record(model, found)
    assert head.endswith(
        "smol  POST /v1/chat/completions  200  42 ms  stream  OpenAI/Python 3.57.0"
    )
    assert asked == '  > {"model": "smol", "messages": []}'
    assert answered == "  < " + "x" * 300 + "..."
    failed = format_record("smol", {**record, "status_code": 503, "error": "{}", "complete": False})
    assert "503" in failed[0] and "(cut short)" in failed[0] and failed[2] == "  < {}"
