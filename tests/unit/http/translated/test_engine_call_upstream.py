"""EngineCall against scripted loopback engines (the only way to make an engine fail at an
exact byte): what it sends, the errors it raises, and that the model's slot and the engine
connection are given back however a stream ends."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, cast

import pytest

from modelrunner.errors import ModelUnavailable, UnknownModel, UpstreamFailed
from modelrunner.http.translated.engine_call import EngineCall, EngineRejected
from modelrunner.http.upstream.forwarder import Forwarder
from modelrunner.metrics import Metrics
from modelrunner.registry import Endpoint, Registry, ServedModel
from tests.unit.http.upstream.test_pool import Engine, Handler, answering, scripted

T = TypeVar("T")
HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"


def chunk(data: bytes) -> bytes:
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


def event(payload: dict[str, Any]) -> bytes:
    return chunk(b"data: " + json.dumps(payload).encode() + b"\n\n")


DELTA = {"choices": [{"index": 0, "delta": {"content": "hi"}}]}
STREAM = HEAD + event(DELTA) + event(DELTA) + chunk(b"data: [DONE]\n\n") + b"0\r\n\r\n"


def json_answer(status: int, body: dict[str, Any]) -> bytes:
    data = json.dumps(body).encode()
    return (
        f"HTTP/1.1 {status} X\r\ncontent-type: application/json\r\n"
        f"content-length: {len(data)}\r\n\r\n"
    ).encode() + data


def run(url: str, use: Callable[[EngineCall], Awaitable[T]]) -> tuple[T, Forwarder]:
    registry = Registry()
    endpoint = Endpoint("m-1", "llama.cpp", url)
    registry.publish(ServedModel("m", "llama.cpp", aliases=("alias",), endpoint=endpoint))
    fw = Forwarder(registry, Metrics())

    async def main() -> T:
        async with fw.lifespan(cast(Any, None)):
            return await use(EngineCall(fw))

    return asyncio.run(main()), fw


def against(
    make: Callable[[Engine], Handler], use: Callable[[EngineCall], Awaitable[T]]
) -> tuple[T, Forwarder, Engine]:
    found: list[tuple[T, Forwarder, Engine]] = []

    async def main() -> None:
        async with scripted(make) as eng:
            result, fw = await asyncio.to_thread(run, eng.url, use)
            found.append((result, fw, eng))

    asyncio.run(main())
    return found[0]


def in_flight(fw: Forwarder) -> int:
    endpoint = fw.registry.lookup("m").endpoint
    assert endpoint is not None
    return endpoint.in_flight


async def read_all(call: EngineCall) -> list[dict[str, Any]]:
    async with await call.stream("chat/completions", "alias", {"messages": []}) as stream:
        return [e async for e in stream]


def test_stream_sends_an_openai_body_and_yields_the_events() -> None:
    events, fw, eng = against(answering(STREAM), read_all)
    assert events == [DELTA, DELTA]
    body = json.loads(eng.requests[0].split(b"\r\n\r\n", 1)[1])
    assert body == {"messages": [], "model": "m", "stream": True,
                    "stream_options": {"include_usage": True}}  # fmt: skip
    assert eng.requests[0].startswith(b"POST /v1/chat/completions HTTP/1.1")
    assert in_flight(fw) == 0


def test_batches_group_what_arrived_together_and_ended_is_set_with_the_last() -> None:
    async def batches(call: EngineCall) -> list[tuple[int, bool]]:
        async with await call.stream("chat/completions", "m", {}) as stream:
            return [(len(batch), stream.ended) async for batch in stream.batches()]

    found, _, _ = against(answering(STREAM), batches)
    assert found == [(2, True)]  # one network read: both events, and the end


def test_engine_closing_mid_stream_raises_upstream_failed_and_frees_the_slot() -> None:
    def make(eng: Engine) -> Handler:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await eng.read_request(reader)
            writer.write(HEAD + event(DELTA))
            await writer.drain()

        return handle

    async def use(call: EngineCall) -> tuple[list[dict[str, Any]], str]:
        got: list[dict[str, Any]] = []
        stream = await call.stream("chat/completions", "m", {})
        try:
            async for e in stream:
                got.append(e)
        except UpstreamFailed as exc:
            return got, str(exc)
        finally:
            await stream.aclose()
        return got, ""

    (got, error), fw, _ = against(make, use)
    assert got == [DELTA]
    assert "mid-stream" in error and "instance m-1" in error
    assert in_flight(fw) == 0
    assert b'status="502"' in fw.metrics.exposition()


def test_error_event_mid_stream_is_upstream_failed() -> None:
    raw = HEAD + event(DELTA) + event({"error": {"message": "out of memory"}}) + b"0\r\n\r\n"

    async def use(call: EngineCall) -> str:
        try:
            await read_all(call)
        except UpstreamFailed as exc:
            return str(exc)
        return ""

    error, _, _ = against(answering(raw), use)
    assert "out of memory" in error


def test_engine_4xx_is_engine_rejected_with_its_openai_error() -> None:
    raw = json_answer(400, {"error": {"message": "prompt too long", "type": "invalid_request_error",
                                      "param": "messages", "code": None}})  # fmt: skip

    async def use(call: EngineCall) -> EngineRejected:
        with pytest.raises(EngineRejected) as caught:
            await call.complete("chat/completions", "m", {})
        return caught.value

    rejected, fw, _ = against(answering(raw), use)
    assert rejected.problem.status == 400
    assert rejected.problem.body.error.message == "prompt too long"
    assert rejected.problem.body.error.param == "messages"
    assert in_flight(fw) == 0


def test_engine_5xx_is_upstream_failed() -> None:
    async def use(call: EngineCall) -> str:
        with pytest.raises(UpstreamFailed) as caught:
            await call.stream("chat/completions", "m", {})
        return str(caught.value)

    message, fw, _ = against(answering(json_answer(500, {"detail": "boom"})), use)
    assert "HTTP 500" in message and "boom" in message
    assert in_flight(fw) == 0


def test_complete_returns_the_decoded_answer() -> None:
    answer = {"choices": [{"message": {"content": "ok"}}], "usage": {"prompt_tokens": 3}}

    async def use(call: EngineCall) -> dict[str, Any]:
        return (await call.complete("chat/completions", "m", {})).body

    body, fw, _ = against(answering(json_answer(200, answer)), use)
    assert body == answer
    assert 'mr_tokens_total{kind="prompt",model="m"} 3.0' in fw.metrics.exposition().decode()


def test_leaving_a_stream_early_closes_the_engine_connection() -> None:
    closed = asyncio.Event()

    def make(eng: Engine) -> Handler:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await eng.read_request(reader)
            writer.write(HEAD + event(DELTA))  # then "generates" on
            await writer.drain()
            if await reader.read() == b"":
                closed.set()

        return handle

    async def use(call: EngineCall) -> None:
        stream = await call.stream("chat/completions", "m", {})
        async for _ in stream:
            break
        await stream.aclose()

    found: list[bool] = []

    async def main() -> None:
        async with scripted(make) as eng:
            _, fw = await asyncio.to_thread(run, eng.url, use)
            await asyncio.wait_for(closed.wait(), 5)
            found.append(in_flight(fw) == 0)

    asyncio.run(main())
    assert found == [True]


def test_unknown_model_and_nothing_listening() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"

    async def use(call: EngineCall) -> tuple[str, str]:
        with pytest.raises(UnknownModel) as unknown:
            await call.complete("chat/completions", "nope", {})
        with pytest.raises(ModelUnavailable) as unavailable:
            await call.stream("chat/completions", "m", {})
        return str(unknown.value), str(unavailable.value)

    (unknown, unavailable), fw = run(url, use)
    assert unknown == "The model 'nope' does not exist"
    assert unavailable.startswith("Cannot reach the engine for POST /v1/chat/completions")
    assert in_flight(fw) == 0
