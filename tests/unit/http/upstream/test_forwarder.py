"""A proxied request as the client sees it when the engine misbehaves: the ASGI messages
``ProxyCall`` sends for an engine that closes mid-answer, mid-stream, or is not there."""

from __future__ import annotations

import asyncio
import json
import socket
from typing import Any, cast

from modelrunner.http.upstream.forwarder import Forwarder
from modelrunner.metrics import Metrics
from modelrunner.registry import Endpoint, Registry, ServedModel
from tests.fixtures.loopback import CHUNKED, PLAIN, Engine, Handler, scripted


def proxied(
    url: str, leave_after: float | None = None
) -> tuple[int, dict[bytes, bytes], bytes, Forwarder]:
    """POST /v1/completions for model "m" served at ``url``: status, headers, body. The
    client disconnects after ``leave_after`` seconds if given."""
    registry = Registry()
    registry.publish(ServedModel("m", "llama.cpp", endpoint=Endpoint("m-1", "llama.cpp", url)))
    fw = Forwarder(registry, Metrics())
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        if leave_after is None:
            await asyncio.Event().wait()  # the client never leaves
        await asyncio.sleep(leave_after or 0)
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def main() -> None:
        async with fw.lifespan(cast(Any, None)):
            call = fw.call("completions", None, "m", b'{"model": "m"}', "")
            await call(cast(Any, {"type": "http"}), cast(Any, receive), cast(Any, send))

    asyncio.run(main())
    if not sent:
        return 0, {}, b"", fw
    start, *bodies = sent
    body = b"".join(m["body"] for m in bodies)
    return start["status"], dict(start["headers"]), body, fw


def closing_after(raw: bytes) -> Any:
    def make(eng: Engine) -> Handler:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await eng.read_request(reader)
            writer.write(raw)
            await writer.drain()

        return handle

    return make


def run_against(make: Any) -> tuple[int, dict[bytes, bytes], bytes, Forwarder]:
    result: list[tuple[int, dict[bytes, bytes], bytes, Forwarder]] = []

    async def main() -> None:
        async with scripted(make) as eng:
            await asyncio.to_thread(lambda: result.append(proxied(eng.url)))

    asyncio.run(main())
    return result[0]


def test_engine_closing_mid_answer_is_502() -> None:
    status, _, body, fw = run_against(closing_after(PLAIN[:-5]))
    assert status == 502
    error = json.loads(body)["error"]
    assert error["code"] == "upstream_failed"
    assert "llama.cpp instance m-1" in error["message"]
    assert fw.registry.lookup("m").endpoint.in_flight == 0  # type: ignore[union-attr]


def test_engine_closing_mid_stream_ends_with_an_error_event() -> None:
    status, headers, body, _ = run_against(closing_after(CHUNKED[: CHUNKED.index(b"8\r\ndata: 2")]))
    assert status == 200
    assert headers[b"content-type"] == b"text/event-stream"
    first, error = body.split(b"\n", 1)
    assert first == b"data: 1"
    assert error.startswith(b"data: ") and b'"code":"upstream_failed"' in error
    assert b"mid-stream" in error


def test_relayed_answer_and_its_length() -> None:
    status, headers, body, _ = run_against(closing_after(PLAIN))
    assert (status, body) == (200, b'{"ok": true}')
    assert headers[b"content-length"] == b"12"


def test_nothing_listening_is_503_with_retry_after() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    status, headers, body, _ = proxied(url)
    assert status == 503
    assert headers[b"retry-after"] == b"1"
    assert json.loads(body)["error"]["message"].startswith(
        "Cannot reach the engine for POST /v1/completions for model 'm'"
    )


def test_client_leaving_closes_the_engine_connection() -> None:
    closed = asyncio.Event()

    def make(eng: Engine) -> Handler:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await eng.read_request(reader)
            writer.write(CHUNKED[: CHUNKED.index(b"8\r\ndata: 2")])  # then generates on
            await writer.drain()
            if await reader.read() == b"":  # mr closed the connection: stop generating
                closed.set()

        return handle

    async def main() -> tuple[int, bytes, Forwarder]:
        async with scripted(make) as eng:
            status, _, body, fw = await asyncio.to_thread(proxied, eng.url, 0.2)
            await asyncio.wait_for(closed.wait(), 5)
            return status, body, fw

    status, body, fw = asyncio.run(main())
    assert (status, body) == (200, b"data: 1\n")  # the stream was cut where the client left
    assert fw.registry.lookup("m").endpoint.in_flight == 0  # type: ignore[union-attr]
    text = fw.metrics.exposition().decode()
    assert 'mr_requests_total{model="m",route="completions",status="499"} 1.0' in text
