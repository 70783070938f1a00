"""The translated routes' ASGI answers: the messages they send, and that the engine's stream
is closed however the answer ends (read to its end, client gone mid-stream, never started)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from typing import Any

import pytest

from modelrunner.http.translated.answers import JsonAnswer, StreamAnswer


class Client:
    def __init__(self, leave_after: float | None = None, fail_send: bool = False) -> None:
        self.sent: list[dict[str, Any]] = []
        self.leave_after = leave_after
        self.fail_send = fail_send

    async def receive(self) -> dict[str, Any]:
        if self.leave_after is None:
            await asyncio.Event().wait()  # never
        await asyncio.sleep(self.leave_after or 0)
        return {"type": "http.disconnect"}

    async def send(self, message: dict[str, Any]) -> None:
        if self.fail_send:
            raise OSError("client gone")
        self.sent.append(message)


class Engine:
    """Stands for the engine's stream: records whether it was closed."""

    def __init__(self) -> None:
        self.closed = 0
        self.finalized = False

    async def close(self) -> None:
        self.closed += 1

    async def pieces(self, hang: bool = False) -> AsyncGenerator[bytes, None]:
        try:
            yield b"a"
            if hang:
                await asyncio.Event().wait()
            yield b"b"
        finally:
            self.finalized = True


def test_json_answer() -> None:
    client = Client()
    asyncio.run(JsonAnswer(b'{"x":1}', {"warning": "w"}, 201)({}, client.receive, client.send))  # type: ignore[arg-type]
    start, body = client.sent
    assert start["status"] == 201
    assert dict(start["headers"]) == {
        b"content-type": b"application/json",
        b"warning": b"w",
        b"content-length": b"7",
    }
    assert body == {"type": "http.response.body", "body": b'{"x":1}', "more_body": False}


def test_stream_read_to_its_end() -> None:
    client, engine = Client(), Engine()
    answer = StreamAnswer(engine.pieces(), "application/x-ndjson", {}, engine.close)
    asyncio.run(answer({}, client.receive, client.send))  # type: ignore[arg-type]
    assert [m.get("body") for m in client.sent] == [None, b"a", b"b", b""]
    headers = dict(client.sent[0]["headers"])
    assert headers[b"content-type"] == b"application/x-ndjson"
    assert headers[b"cache-control"] == b"no-cache"
    assert engine.closed == 1 and engine.finalized


def test_client_leaving_mid_stream_closes_the_engine_stream() -> None:
    client, engine = Client(leave_after=0.1), Engine()
    answer = StreamAnswer(engine.pieces(hang=True), "text/event-stream", {}, engine.close)

    async def run() -> None:
        await asyncio.wait_for(answer({}, client.receive, client.send), 5)  # type: ignore[arg-type]

    asyncio.run(run())  # returns normally: a client leaving is not an error
    assert [m.get("body") for m in client.sent] == [None, b"a"]
    assert engine.closed == 1 and engine.finalized


def test_a_stream_never_started_still_closes_the_engine_stream() -> None:
    client, engine = Client(fail_send=True), Engine()
    answer = StreamAnswer(engine.pieces(), "text/event-stream", {}, engine.close)
    with pytest.raises(OSError):
        asyncio.run(answer({}, client.receive, client.send))  # type: ignore[arg-type]
    assert engine.closed == 1
