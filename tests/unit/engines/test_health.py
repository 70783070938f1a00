"""The liveness probe: the head parse (table) and the probe against real sockets that
answer well, badly or not at all."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import pytest

from modelrunner.engines.health import HealthProbe, parse_head


@pytest.mark.parametrize(
    ("head", "expected"),
    [
        (b"HTTP/1.1 200 OK\r\nContent-Length: 15\r\n\r\n", (200, 15, True)),
        (b"HTTP/1.1 503 Busy\r\ncontent-length: 0\r\n\r\n", (503, 0, True)),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n", (200, 2, False)),
        (b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\n", (200, 2, False)),
        (b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\n", (200, 2, True)),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", (200, None, False)),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n",
            (200, None, False),
        ),
        (b"HTTP/1.1 200 OK\r\n\r\n", (200, None, False)),  # ends at close: not reusable
    ],
)
def test_a_head_gives_status_length_and_reuse(
    head: bytes, expected: tuple[int, int | None, bool]
) -> None:
    assert parse_head(head) == expected


@pytest.mark.parametrize(
    "head",
    [
        b"SSH-2.0-OpenSSH\r\n\r\n",
        b"HTTP/2 200\r\n\r\n",
        b"HTTP/1.1 abc\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
    ],
)
def test_a_head_that_is_not_http_is_refused(head: bytes) -> None:
    with pytest.raises(ValueError):
        parse_head(head)


Answer = Callable[[int], bytes | None]  # the request's number -> what to send (None: silence)


@asynccontextmanager
async def server(answer: Answer) -> AsyncIterator[tuple[int, list[int]]]:
    """A loopback server answering each request with ``answer(n)``; yields (port, the
    number of requests each connection carried)."""
    connections: list[int] = []
    asked = 0

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal asked
        connections.append(0)
        try:
            while await reader.readuntil(b"\r\n\r\n"):
                connections[-1] += 1
                asked += 1
                reply = answer(asked)
                if reply is None:
                    await asyncio.sleep(30)
                    return
                writer.write(reply)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    listener = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    try:
        yield port, connections
    finally:
        listener.close()


OK = b'HTTP/1.1 200 OK\r\nContent-Length: 15\r\n\r\n{"status":"ok"}'


def test_healthy_answers_reuse_one_connection() -> None:
    asyncio.run(_test_healthy_answers_reuse_one_connection())


async def _test_healthy_answers_reuse_one_connection() -> None:
    async with server(lambda _: OK) as (port, connections):
        probe = HealthProbe("127.0.0.1", port, "/health")
        assert [await probe.healthy(timeout=5) for _ in range(5)] == [True] * 5
        probe.close()
    assert connections == [5]


def test_a_bad_status_is_unhealthy_and_the_connection_kept() -> None:
    asyncio.run(_test_a_bad_status_is_unhealthy_and_the_connection_kept())


async def _test_a_bad_status_is_unhealthy_and_the_connection_kept() -> None:
    answers = {2: b"HTTP/1.1 503 Busy\r\nContent-Length: 0\r\n\r\n"}
    async with server(lambda n: answers.get(n, OK)) as (port, connections):
        probe = HealthProbe("127.0.0.1", port, "/health")
        assert [await probe.healthy(timeout=5) for _ in range(3)] == [True, False, True]
        probe.close()
    assert connections == [3]


def test_garbage_silence_and_a_closed_port_are_unhealthy_then_it_recovers() -> None:
    asyncio.run(_test_garbage_silence_and_a_closed_port_are_unhealthy_then_it_recovers())


async def _test_garbage_silence_and_a_closed_port_are_unhealthy_then_it_recovers() -> None:
    answers: dict[int, bytes | None] = {1: b"garbage\r\n\r\n", 2: None}
    async with server(lambda n: answers.get(n, OK)) as (port, connections):
        probe = HealthProbe("127.0.0.1", port, "/health")
        assert await probe.healthy(timeout=5) is False  # not HTTP
        assert await probe.healthy(timeout=0.3) is False  # no answer in time
        assert await probe.healthy(timeout=5) is True  # a new connection each time
        probe.close()
    assert connections == [1, 1, 1]
    async with server(lambda _: OK) as (closed_port, _):
        pass
    assert await HealthProbe("127.0.0.1", closed_port, "/health").healthy(timeout=5) is False


def test_an_answer_ending_at_close_is_read_on_a_new_connection_each_time() -> None:
    asyncio.run(_test_an_answer_ending_at_close_is_read_on_a_new_connection_each_time())


async def _test_an_answer_ending_at_close_is_read_on_a_new_connection_each_time() -> None:
    chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n"
    async with server(lambda _: chunked) as (port, connections):
        probe = HealthProbe("127.0.0.1", port, "/health")
        assert [await probe.healthy(timeout=5) for _ in range(3)] == [True] * 3
        probe.close()
    assert connections == [1, 1, 1]
