"""The liveness probe against scripted engines on loopback sockets that answer well, badly,
not at all, or in ways HTTP allows but a simple parser forgets (chunked, framed by the close,
in pieces)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from modelrunner.engines.health import HealthProbe
from tests.fixtures.loopback import Engine, Handler, scripted

OK = b'HTTP/1.1 200 OK\r\nContent-Length: 15\r\n\r\n{"status":"ok"}'
SILENCE = None


def replying(answer: Callable[[int], bytes | None]) -> Callable[[Engine], Handler]:
    """Request n (counted over all connections) answered with ``answer(n)``: a 1-byte write
    at a time; ``SILENCE`` says nothing until the probe hangs up; an answer that says
    ``Connection: close`` is followed by the close."""

    def make(eng: Engine) -> Handler:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            while True:
                await eng.read_request(reader)
                reply = answer(len(eng.requests))
                if reply is SILENCE:
                    await reader.read()
                    return
                for at in range(len(reply)):
                    writer.write(reply[at : at + 1])
                    await writer.drain()
                if b"connection: close" in reply.lower():
                    return

        return handle

    return make


def probe_all(
    answer: Callable[[int], bytes | None], timeouts: list[float]
) -> tuple[list[bool], Engine]:
    """One probe asked once per timeout, against a server answering ``answer``."""

    async def main() -> tuple[list[bool], Engine]:
        async with scripted(replying(answer)) as eng:
            probe = HealthProbe("127.0.0.1", eng.port, "/health")
            results = [await probe.healthy(timeout=t) for t in timeouts]
            probe.close()
            return results, eng

    return asyncio.run(main())


def test_healthy_answers_reuse_one_connection() -> None:
    results, eng = probe_all(lambda _: OK, [5] * 5)
    assert results == [True] * 5
    assert eng.connections == 1
    assert eng.requests[0].startswith(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1:")


def test_a_bad_status_is_unhealthy_and_the_connection_kept() -> None:
    answers = {2: b"HTTP/1.1 503 Busy\r\nContent-Length: 0\r\n\r\n"}
    results, eng = probe_all(lambda n: answers.get(n, OK), [5, 5, 5])
    assert results == [True, False, True]
    assert eng.connections == 1


def test_garbage_silence_and_a_closed_port_are_unhealthy_then_it_recovers() -> None:
    answers: dict[int, bytes | None] = {1: b"garbage\r\n\r\n", 2: SILENCE}
    results, eng = probe_all(lambda n: answers.get(n, OK), [5, 0.3, 5])
    assert results == [False, False, True]  # not HTTP; no answer in time; a new connection
    assert eng.connections == 3

    async def closed_port() -> bool:
        async with scripted(replying(lambda _: OK)) as eng:
            pass
        return await HealthProbe("127.0.0.1", eng.port, "/health").healthy(timeout=5)

    assert asyncio.run(closed_port()) is False


def test_a_chunked_answer_keeps_the_connection() -> None:
    chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n"
    results, eng = probe_all(lambda _: chunked, [5, 5, 5])
    assert results == [True] * 3
    assert eng.connections == 1


def test_an_answer_ended_by_the_close_is_read_whole_on_a_new_connection_each_time() -> None:
    closing = b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nok"
    results, eng = probe_all(lambda _: closing, [5, 5, 5])
    assert results == [True] * 3
    assert eng.connections == 3


def test_an_answer_cut_short_or_too_long_is_unhealthy() -> None:
    cut = b"HTTP/1.1 200 OK\r\nContent-Length: 15\r\nConnection: close\r\n\r\n{}"
    huge = b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + b"x" * 100_000
    answers = {1: cut, 2: huge}
    results, eng = probe_all(lambda n: answers.get(n, OK), [5, 30, 5])
    assert results == [False, False, True]
    assert eng.connections == 3
