"""Streaming pass-through: chunks arrive as the engine sends them, a client that goes away
frees its slot and cancels the upstream request, and an engine dying mid-stream is reported
as an OpenAI error event."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import httpx
import pytest

from modelrunner.registry import Endpoint, Registry, ServedModel
from tests.fixtures.http import SMOLLM2, RunningApp, free_port, serve_in_thread

pytestmark = pytest.mark.engine
LONG_STREAM = {
    "model": SMOLLM2,
    "messages": [{"role": "user", "content": "Write a very long story about a cat."}],
    "max_tokens": 1500,
    "stream": True,
}


def wait_until(predicate: object, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(0.05)
    return False


def test_disconnect_mid_stream_frees_the_slot(api: RunningApp) -> None:
    with httpx.stream(
        "POST", api.base_url + "/v1/chat/completions", json=LONG_STREAM, timeout=60
    ) as r:
        assert r.status_code == 200
        chunks = r.iter_raw()
        next(chunks)
        next(chunks)
        assert api.in_flight(SMOLLM2) == 1
    assert wait_until(lambda: api.in_flight(SMOLLM2) == 0)
    # The engine serves one request at a time: this one only completes because the
    # abandoned 1500-token stream was cancelled upstream.
    answer = httpx.post(
        api.base_url + "/v1/completions",
        json={"model": SMOLLM2, "prompt": "Hi", "max_tokens": 2},
        timeout=60,
    )
    assert answer.status_code == 200


# -- a scripted engine, for what a real one cannot be made to do on cue ------------------
@dataclass
class Scripted:
    """An upstream that streams a few SSE events, then holds or dies, and records it."""

    die_mid_stream: bool
    port: int = field(default_factory=free_port)
    closed: threading.Event = field(default_factory=threading.Event)
    sent_first: threading.Event = field(default_factory=threading.Event)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(
            int(line.split(b":")[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length")
        )
        await reader.readexactly(length)
        writer.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
            b"transfer-encoding: chunked\r\n\r\n"
        )
        event = b'data: {"choices": [{"index": 0, "delta": {"content": "x"}}]}\n\n'
        writer.write(f"{len(event):x}\r\n".encode() + event + b"\r\n")
        await writer.drain()
        self.sent_first.set()
        if self.die_mid_stream:
            writer.transport.abort()
            return
        await reader.read()  # returns b"" once the proxy closes the connection
        self.closed.set()


@pytest.fixture
def scripted(request: pytest.FixtureRequest) -> Iterator[tuple[Scripted, RunningApp]]:
    engine = Scripted(die_mid_stream=request.param)
    loop = asyncio.new_event_loop()
    server = loop.run_until_complete(asyncio.start_server(engine.handle, "127.0.0.1", engine.port))
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    registry = Registry()
    url = f"http://127.0.0.1:{engine.port}"
    registry.publish(ServedModel("scripted", "vllm", endpoint=Endpoint("s1", "vllm", url)))
    try:
        with serve_in_thread(registry) as app:
            yield engine, app
    finally:
        loop.call_soon_threadsafe(server.close)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)


@pytest.mark.parametrize("scripted", [False], indirect=True)
def test_disconnect_closes_the_upstream_connection(scripted: tuple[Scripted, RunningApp]) -> None:
    engine, app = scripted
    body = {"model": "scripted", "messages": [{"role": "user", "content": "x"}], "stream": True}
    with httpx.stream("POST", app.base_url + "/v1/chat/completions", json=body, timeout=30) as r:
        first = next(r.iter_raw())
        assert first.startswith(b"data: ")
        assert not engine.closed.is_set()
    assert engine.closed.wait(10), "the upstream request was not cancelled"
    assert wait_until(lambda: app.in_flight("scripted") == 0)


@pytest.mark.parametrize("scripted", [True], indirect=True)
def test_engine_dying_mid_stream_ends_with_an_error_event(
    scripted: tuple[Scripted, RunningApp],
) -> None:
    _, app = scripted
    body = {"model": "scripted", "messages": [{"role": "user", "content": "x"}], "stream": True}
    response = httpx.post(app.base_url + "/v1/chat/completions", json=body, timeout=30)
    assert response.status_code == 200
    events = [line for line in response.text.splitlines() if line.startswith("data: ")]
    assert events[0].startswith('data: {"choices"')
    assert '"code":"upstream_failed"' in events[-1]
    assert "mid-stream" in events[-1]
