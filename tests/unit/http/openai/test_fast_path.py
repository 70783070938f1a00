"""The proxied routes' short way: well-formed requests go straight to the forwarder, anything
else down Litestar's pipeline with the body intact."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import pytest

from modelrunner.http.keys import KeyCheck
from modelrunner.http.openai.fast_path import FastPath
from modelrunner.http.openai.shapes import ChatCompletionRequest

CHAT = b'{"model": "smollm2", "messages": [{"role": "user", "content": "hi"}]}'


class Recorder:
    """Stands in for the forwarder (``call``) and for Litestar's pipeline (the next app)."""

    def __init__(self) -> None:
        self.forwarded: list[tuple[str, str | None, str, bytes, str]] = []
        self.streams: list[bool] = []
        self.fell_back: list[list[dict[str, Any]]] = []

    def call(
        self, op: str, segment: str | None, model: str, body: bytes, query: str, *, stream: bool
    ) -> Any:
        self.forwarded.append((op, segment, model, body, query))
        self.streams.append(stream)

        async def answer(scope: Any, receive: Any, send: Any) -> None:
            pass

        return answer

    async def next_app(self, scope: Any, receive: Any, send: Any) -> None:
        self.fell_back.append([await receive(), await receive()])


def run(
    body: bytes,
    *,
    headers: list[tuple[bytes, bytes]] | None = None,
    engine: str = "",
    keys: tuple[str, ...] = (),
    pieces: int = 1,
) -> Recorder:
    recorder = Recorder()
    fast = FastPath(cast(Any, recorder), KeyCheck(keys), max_body=1000)
    app = fast.middleware("chat/completions", ChatCompletionRequest)(recorder.next_app)
    if headers is None:
        headers = [(b"content-length", str(len(body)).encode())]
    scope = {"type": "http", "headers": headers, "query_string": b"a=1",
             "path_params": {"engine": engine} if engine else {}}  # fmt: skip
    step = -(-len(body) // pieces) or 1
    messages: list[dict[str, Any]] = [
        {"type": "http.request", "body": body[i : i + step], "more_body": i + step < len(body)}
        for i in range(0, max(len(body), 1), step)
    ]
    messages.append({"type": "http.disconnect"})

    async def receive() -> dict[str, Any]:
        return messages.pop(0)

    asyncio.run(cast(Any, app)(scope, receive, None))
    return recorder


@pytest.mark.parametrize("pieces", [1, 3])
def test_well_formed_request_is_forwarded_directly(pieces: int) -> None:
    found = run(CHAT, pieces=pieces)
    assert found.forwarded == [("chat/completions", None, "smollm2", CHAT, "a=1")]
    assert not found.fell_back


@pytest.mark.parametrize(
    ("extra", "stream"), [("", False), (', "stream": false', False), (', "stream": true', True)]
)
def test_whether_the_body_asks_for_a_stream_is_passed_on(extra: str, stream: bool) -> None:
    body = CHAT[:-1] + extra.encode() + b"}"
    assert run(body).streams == [stream]


def test_engine_segment_is_passed_on() -> None:
    assert run(CHAT, engine="llama.cpp").forwarded[0][1] == "llama.cpp"


@pytest.mark.parametrize(
    "body", [b"{not json", b'{"model": "smollm2"}', b'{"model": 5, "messages": [{}]}', b"[]"]
)
def test_invalid_body_goes_to_litestar_with_the_body_replayed(body: bytes) -> None:
    found = run(body)
    assert not found.forwarded
    assert found.fell_back == [[
        {"type": "http.request", "body": body, "more_body": False},
        {"type": "http.disconnect"},
    ]]  # fmt: skip


def test_unknown_engine_goes_to_litestar() -> None:
    found = run(CHAT, engine="llamacpp")
    assert not found.forwarded and found.fell_back


@pytest.mark.parametrize(
    "headers",
    [[], [(b"content-length", b"5000")], [(b"content-length", b"x")]],
    ids=["no length", "over the limit", "bad length"],
)
def test_unannounced_or_large_body_goes_to_litestar_unread(
    headers: list[tuple[bytes, bytes]],
) -> None:
    found = run(CHAT, headers=headers)
    assert not found.forwarded
    assert found.fell_back[0][0]["body"] == CHAT  # the body was left for Litestar to read


def test_keys_are_checked() -> None:
    length = (b"content-length", str(len(CHAT)).encode())
    assert run(CHAT, keys=("k",)).fell_back  # no key: Litestar's guard answers 401
    assert run(CHAT, headers=[length, (b"authorization", b"Bearer no")], keys=("k",)).fell_back
    good = run(CHAT, headers=[length, (b"authorization", b"Bearer k")], keys=("k",))
    assert good.forwarded and not good.fell_back


def test_client_leaving_while_sending_ends_quietly() -> None:
    recorder = Recorder()
    fast = FastPath(cast(Any, recorder), KeyCheck(()), max_body=1000)
    app = fast.middleware("chat/completions", ChatCompletionRequest)(recorder.next_app)
    messages: list[dict[str, Any]] = [
        {"type": "http.request", "body": CHAT[:5], "more_body": True},
        {"type": "http.disconnect"},
    ]

    async def receive() -> dict[str, Any]:
        return messages.pop(0)

    scope = {"type": "http", "headers": [(b"content-length", b"70")], "query_string": b"",
             "path_params": {}}  # fmt: skip
    asyncio.run(cast(Any, app)(scope, receive, None))
    assert not recorder.forwarded and not recorder.fell_back
