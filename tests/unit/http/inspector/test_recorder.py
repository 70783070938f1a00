"""The request inspector's pure parts: media shortening, the size limit, stream reassembly,
and the recorder's bounds and redaction (driven with plain ASGI messages)."""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

import msgspec
import pytest

from modelrunner.http.inspector.body import (
    MAX_RECORDED,
    MEDIA_KEPT,
    StreamAssembler,
    cut,
    recorded_text,
    shorten_base64,
)
from modelrunner.http.inspector.recorder import FEED_BATCH, Recorder, abandon
from modelrunner.registry import Registry, ServedModel

PNG = base64.b64encode(bytes(range(256)) * 40).decode()  # 13,654 base64 characters


@pytest.mark.parametrize(
    ("text", "kept"),
    [
        ("hello", "hello"),
        ("a" * 300 + " words with spaces", "a" * 300 + " words with spaces"),  # not base64
        (PNG, PNG[:MEDIA_KEPT] + f"...[truncated {len(PNG) - MEDIA_KEPT} chars]"),
        (
            "data:image/png;base64," + PNG,
            "data:image/png;base64,"
            + PNG[:MEDIA_KEPT]
            + f"...[truncated {len(PNG) - MEDIA_KEPT} chars]",
        ),
        ("data:text/plain,not-base64-" + "x" * 400, "data:text/plain,not-base64-" + "x" * 400),
        ("Q" * 255, "Q" * 255),  # too short to be media
    ],
)
def test_shorten_base64(text: str, kept: str) -> None:
    assert shorten_base64(text) == kept


def test_recorded_text_shortens_media_anywhere_in_json() -> None:
    body = {
        "model": "m",
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "what is this?"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64," + PNG}},
                ],
            },
        ],
    }
    text = recorded_text(json.dumps(body).encode())
    shown = json.loads(text)
    url = shown["messages"][0]["content"][1]["image_url"]["url"]
    assert url.endswith(f"...[truncated {len(PNG) - MEDIA_KEPT} chars]")
    assert shown["messages"][0]["content"][0]["text"] == "what is this?"
    images = recorded_text(json.dumps({"data": [{"b64_json": PNG}]}).encode())
    assert len(images) < 300


@pytest.mark.parametrize(
    ("body", "expected_len"),
    [
        (b"short", 5),
        (b"x" * MAX_RECORDED, MAX_RECORDED),
        (b"x" * (MAX_RECORDED + 10), MAX_RECORDED + len("...[truncated 10 bytes]")),
        (json.dumps({"text": "word " * 20000}).encode(), None),
    ],
)
def test_recorded_text_is_cut_at_the_limit(body: bytes, expected_len: int | None) -> None:
    text = recorded_text(body)
    if expected_len is not None:
        assert len(text) == expected_len
    else:
        assert text.endswith("bytes]") and len(text.encode()) <= MAX_RECORDED + 40


def test_cut_never_splits_a_character() -> None:
    assert cut("é" * 10, 5) == "éé...[truncated 16 bytes]"


def _sse(*events: Any) -> bytes:
    return b"".join(
        b"data: " + (e if isinstance(e, bytes) else json.dumps(e).encode()) + b"\n\n"
        for e in events
    )


CHAT_STREAM = _sse(
    {
        "id": "c1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "m",
        "choices": [
            {"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}
        ],
    },
    {
        "id": "c1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "m",
        "choices": [{"index": 0, "delta": {"content": "Hel"}, "finish_reason": None}],
    },
    {
        "id": "c1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "m",
        "choices": [{"index": 0, "delta": {"content": "lo"}, "finish_reason": None}],
    },
    {
        "id": "c1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "m",
        "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
    },
    {
        "id": "c1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "m",
        "choices": [],
        "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7},
    },
    b"[DONE]",
)


@pytest.mark.parametrize("piece", [1, 7, 64, len(CHAT_STREAM)])
def test_chat_stream_is_reassembled_however_it_is_split(piece: int) -> None:
    assembler = StreamAssembler()
    for start in range(0, len(CHAT_STREAM), piece):
        assembler.feed(CHAT_STREAM[start : start + piece])
    assert assembler.result() == {
        "id": "c1",
        "object": "chat.completion",
        "created": 1,
        "model": "m",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Hello"},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7},
    }


def test_tool_calls_and_completions_are_reassembled() -> None:
    tools = StreamAssembler()
    tools.feed(
        _sse(
            {
                "object": "chat.completion.chunk",
                "choices": [
                    {
                        "index": 0,
                        "delta": {
                            "tool_calls": [
                                {
                                    "index": 0,
                                    "id": "call_1",
                                    "type": "function",
                                    "function": {"name": "get_weather", "arguments": ""},
                                }
                            ]
                        },
                    }
                ],
            },
            {
                "object": "chat.completion.chunk",
                "choices": [
                    {
                        "index": 0,
                        "delta": {
                            "tool_calls": [{"index": 0, "function": {"arguments": '{"city": '}}]
                        },
                    }
                ],
            },
            {
                "object": "chat.completion.chunk",
                "choices": [
                    {
                        "index": 0,
                        "delta": {
                            "tool_calls": [{"index": 0, "function": {"arguments": '"Paris"}'}}]
                        },
                        "finish_reason": "tool_calls",
                    }
                ],
            },
        )
    )
    message = tools.result()["choices"][0]["message"]  # type: ignore[index]
    assert message["tool_calls"] == [
        {
            "id": "call_1",
            "type": "function",
            "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
        }
    ]
    text = StreamAssembler()
    text.feed(
        _sse(
            {"object": "text_completion", "choices": [{"index": 0, "text": "a"}]},
            {
                "object": "text_completion",
                "choices": [{"index": 0, "text": "b", "finish_reason": "length"}],
            },
        )
    )
    assert text.result()["choices"] == [{"index": 0, "text": "ab", "finish_reason": "length"}]  # type: ignore[index]


def test_stream_error_event_and_foreign_streams() -> None:
    failing = StreamAssembler()
    failing.feed(_sse({"choices": [{"delta": {"content": "x"}}]}, {"error": {"message": "boom"}}))
    assert failing.error == {"error": {"message": "boom"}}
    foreign = StreamAssembler()
    foreign.feed(b"event: ping\ndata: not json\n\n")
    assert foreign.result() is None


def test_reassembled_text_is_bounded() -> None:
    assembler = StreamAssembler(limit=10)
    for _ in range(5):
        assembler.feed(
            _sse({"object": "chat.completion.chunk", "choices": [{"delta": {"content": "abcd"}}]})
        )
    assert assembler.truncated
    assert assembler.result()["choices"][0]["message"]["content"] == "abcdabcdab"  # type: ignore[index]


# -- the recorder, driven with ASGI messages --------------------------------------------
def _registry() -> Registry:
    registry = Registry()
    registry.publish(ServedModel(name="smollm2", engine="llama.cpp", aliases=("ai/smollm2",)))
    return registry


def _scope(agent: bytes = b"test-agent/1") -> dict[str, Any]:
    headers = [
        (b"authorization", b"Bearer sk-secret-key"),
        (b"x-api-key", b"sk-other-secret"),
        (b"user-agent", agent),
    ]
    return {
        "type": "http",
        "method": "POST",
        "path": "/v1/chat/completions",
        "query_string": b"key=sk-in-query",
        "headers": headers,
    }


async def _answer(recorder: Recorder, model: str, messages: list[dict[str, Any]]) -> list[Any]:
    sent: list[Any] = []

    async def send(message: Any) -> None:
        sent.append(message)

    watched = recorder.watch(model, _scope(), b'{"model": "%s"}' % model.encode(), send)  # type: ignore[arg-type]
    for message in messages:
        await watched(message)
    abandon(watched)
    return sent


def _start(content_type: bytes, status: int = 200) -> dict[str, Any]:
    return {
        "type": "http.response.start",
        "status": status,
        "headers": [(b"content-type", content_type)],
    }


def test_recorder_keeps_the_last_n_per_model_and_never_a_key() -> None:
    recorder = Recorder(3, _registry())
    for n in range(5):
        body = {"type": "http.response.body", "body": b'{"n": %d}' % n, "more_body": False}
        asyncio.run(_answer(recorder, "ai/smollm2", [_start(b"application/json"), body]))
    asyncio.run(_answer(recorder, "unknown-model", [_start(b"application/json")]))
    [group] = recorder.snapshot()
    assert group.model == "smollm2" and group.count == 3
    assert [json.loads(r.response or "")["n"] for r in group.records] == [2, 3, 4]
    record = group.records[-1]
    assert (record.method, record.url, record.status_code, record.user_agent) == (
        "POST",
        "/v1/chat/completions",
        200,
        "test-agent/1",
    )
    assert record.complete and record.duration_ms is not None
    shown = msgspec.json.encode(recorder.snapshot())
    assert b"test-agent/1" in shown and b"sk-" not in shown  # no key header, no query string


def test_recorder_reassembles_a_stream_and_passes_every_message_on_unchanged() -> None:
    recorder = Recorder(10, _registry())
    chunks = [CHAT_STREAM[:50], CHAT_STREAM[50:300], CHAT_STREAM[300:]]
    messages = [
        _start(b"text/event-stream"),
        *({"type": "http.response.body", "body": c, "more_body": True} for c in chunks),
        {"type": "http.response.body", "body": b"", "more_body": False},
    ]
    sent = asyncio.run(_answer(recorder, "smollm2", messages))
    assert sent == messages
    [record] = recorder.snapshot("ai/smollm2")[0].records
    assert record.stream
    assert json.loads(record.response or "")["choices"][0]["message"]["content"] == "Hello"


def _token_chunks(count: int) -> list[bytes]:
    """A streamed chat answer as an engine sends it: one chunk per token."""
    events = [
        {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m",
         "choices": [{"index": 0, "delta": {"content": f"t{i} "}, "finish_reason": None}]}
        for i in range(count)
    ]  # fmt: skip
    return [_sse(event) for event in events]


@pytest.mark.parametrize("abandoned", [False, True])
def test_a_long_stream_is_read_in_batches_and_whole(abandoned: bool) -> None:
    """Chunks reach the assembler FEED_BATCH bytes at a time: a stream many batches long is
    still reassembled whole, and one cut short keeps every token that passed."""
    chunks = _token_chunks(600)
    assert sum(map(len, chunks)) > 4 * FEED_BATCH
    recorder = Recorder(10, _registry())
    messages = [
        _start(b"text/event-stream"),
        *({"type": "http.response.body", "body": c, "more_body": True} for c in chunks),
    ]
    if not abandoned:
        messages.append({"type": "http.response.body", "body": b"", "more_body": False})
    sent = asyncio.run(_answer(recorder, "smollm2", messages))
    assert sent == messages  # every message passed on, in order
    [record] = recorder.snapshot("ai/smollm2")[0].records
    content = json.loads(record.response or "")["choices"][0]["message"]["content"]
    assert content == "".join(f"t{i} " for i in range(600))
    assert record.complete is not abandoned


def test_failed_and_abandoned_answers() -> None:
    recorder = Recorder(10, _registry())
    problem = b'{"error": {"message": "bad"}}'
    asyncio.run(
        _answer(
            recorder,
            "smollm2",
            [
                _start(b"application/json", 400),
                {"type": "http.response.body", "body": problem, "more_body": False},
            ],
        )
    )
    asyncio.run(
        _answer(
            recorder,
            "smollm2",
            [
                _start(b"text/event-stream"),
                {"type": "http.response.body", "body": CHAT_STREAM[:200], "more_body": True},
            ],
        )
    )
    failed, abandoned = recorder.snapshot("smollm2")[0].records
    assert failed.error == '{"error":{"message":"bad"}}' and failed.response is None
    assert not abandoned.complete and abandoned.status_code == 200


def test_followers_get_finished_pairs() -> None:
    async def scenario() -> list[str]:
        recorder = Recorder(10, _registry())
        with recorder.follow() as queue:
            await _answer(
                recorder,
                "smollm2",
                [
                    _start(b"application/json"),
                    {"type": "http.response.body", "body": b"{}", "more_body": False},
                ],
            )
            return [queue.get_nowait().model]

    assert asyncio.run(scenario()) == ["smollm2"]


# -- MR_RECORD_REQUESTS, through the whole app (no engine: a model still starting) -------
@pytest.mark.parametrize(
    ("path", "extra", "says"),
    [
        ("/v1/chat/completions", {}, lambda e: e["error"]["code"] == "model_unavailable"),
        ("/api/chat", {}, lambda e: "smollm2" in e["error"]),  # Ollama's shape
        ("/v1/messages", {"max_tokens": 4}, lambda e: e["error"]["type"] == "overloaded_error"),
    ],
)
@pytest.mark.parametrize(("kept", "recorded"), [(0, 0), (2, 2)])
def test_the_switch_and_the_bound_through_the_app(
    tmp_path: Any, kept: int, recorded: int, path: str, extra: dict[str, Any], says: Any
) -> None:
    from litestar.testing import TestClient

    from modelrunner.http.app import create_app
    from modelrunner.metrics import Metrics
    from modelrunner.settings import Settings
    from tests.fixtures.http import RegistryStatus

    registry = _registry()
    settings = Settings(store_dir=tmp_path, record_requests=kept)
    app = create_app(settings, registry, RegistryStatus(registry), Metrics())
    body = {"model": "smollm2", "messages": [{"role": "user", "content": "Hi"}], **extra}
    # A loopback Host: the request policy refuses TestClient's default "testserver.local".
    with TestClient(app, base_url="http://127.0.0.1") as client:
        for _ in range(3):
            assert client.post(path, json=body).status_code == 503
        listed = client.get("/engines/requests").json()
    assert sum(group["count"] for group in listed) == recorded
    if recorded:
        last = listed[0]["records"][-1]
        assert (last["url"], last["status_code"], last["response"]) == (path, 503, None)
        assert json.loads(last["request"]) == body
        assert says(json.loads(last["error"]))


def test_a_big_request_is_cut_once_answered() -> None:
    recorder = Recorder(10, _registry())
    image = "data:image/png;base64," + PNG * 20  # ~270 KB
    body = json.dumps({"model": "smollm2", "messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": image}}]}]}).encode()  # fmt: skip
    entry = recorder.begin("smollm2", "POST", "/v1/chat/completions", None, body)
    entry.finish(200, b"{}", complete=True)
    assert isinstance(entry._request, str) and len(entry._request) < 1000
    shown = json.loads(entry.view().request)
    assert shown["messages"][0]["content"][0]["image_url"]["url"].endswith("chars]")


@pytest.mark.parametrize(
    ("answer", "tokens"),
    [
        (b'{"input_tokens": 12}', 12),  # Anthropic count_tokens
        (b'{"type": "message", "usage": {"input_tokens": 9, "output_tokens": 2}}', 9),
        (b'{"choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": 1}}', 7),
        (b'{"done": true, "prompt_eval_count": 5}', 5),  # Ollama
        (b'{"choices": []}', None),
        (b'{"input_tokens": true}', None),
        (b"[1, 2]", None),
        (b"not json", None),
        ('{"usage": {"prompt_tokens": 3}}', 3),
    ],
)
def test_input_tokens_from_any_api(answer: bytes | str, tokens: int | None) -> None:
    from modelrunner.http.inspector.tokens import input_tokens

    assert input_tokens(answer) == tokens


def test_a_streamed_schema_check_is_kept() -> None:
    assembler = StreamAssembler()
    check = {"checked_only": ["uniqueItems"], "valid": False}
    chunk = "chat.completion.chunk"
    last = {"index": 0, "delta": {}, "finish_reason": "schema_invalid", "schema_check": check,
            "schema_error": "at /: x"}  # fmt: skip
    assembler.feed(
        _sse(
            {"object": chunk, "choices": [{"index": 0, "delta": {"content": "[1,1]"}}]},
            {"object": chunk, "choices": [last]},
        )
    )
    result = assembler.result()
    assert result is not None
    [choice] = result["choices"]
    assert choice["finish_reason"] == "schema_invalid" and choice["message"]["content"] == "[1,1]"
    assert choice["schema_check"] == check and choice["schema_error"] == "at /: x"
