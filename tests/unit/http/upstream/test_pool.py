"""The upstream client against scripted engines on loopback sockets: keep-alive reuse,
answers arriving in odd pieces, engines that close, stall or refuse."""

from __future__ import annotations

import asyncio
import socket

import pytest

from modelrunner.http.upstream.connection import BrokenAnswer, CannotConnect
from modelrunner.http.upstream.pool import UpstreamPool
from tests.fixtures.loopback import ANSWER, CHUNKED, PLAIN, Engine, Handler, answering, scripted


async def body_of(pool: UpstreamPool, url: str, body: bytes = b"{}") -> tuple[int, str, bytes]:
    response = await pool.post(url, "/v1/completions", body)
    try:
        return response.status, response.content_type, await response.read()
    finally:
        response.close()


def test_keep_alive_reuses_one_connection() -> None:
    async def main() -> None:
        pool = UpstreamPool()
        async with scripted(answering(PLAIN)) as eng:
            for _ in range(3):
                assert await body_of(pool, eng.url) == (200, "application/json", ANSWER)
            assert eng.connections == 1
            first = eng.requests[0]
            assert first.startswith(b"POST /v1/completions HTTP/1.1\r\n")
            assert f"host: 127.0.0.1:{eng.port}\r\n".encode() in first
            assert first.endswith(b"\r\n\r\n{}")
        pool.close()

    asyncio.run(main())


def test_concurrent_requests_use_their_own_connections_then_reuse_them() -> None:
    async def main() -> None:
        pool = UpstreamPool()
        async with scripted(answering(PLAIN, piece=5)) as eng:
            for _ in range(2):
                results = await asyncio.gather(*(body_of(pool, eng.url) for _ in range(4)))
                assert {r[2] for r in results} == {ANSWER}
            assert eng.connections == 4
        pool.close()

    asyncio.run(main())


@pytest.mark.parametrize("piece", [1, 3, 17])
def test_chunked_answer_in_odd_pieces(piece: int) -> None:
    async def main() -> None:
        pool = UpstreamPool()
        async with scripted(answering(CHUNKED, piece)) as eng:
            response = await pool.post(eng.url, "/v1/completions", b"{}")
            assert (response.status, response.content_type) == (200, "text/event-stream")
            pieces = []
            while (chunk := await response.chunk()) is not None:
                pieces.append(chunk)
            response.close()
            assert b"".join(pieces) == b"data: 1\ndata: 2\n"
            assert await body_of(pool, eng.url) == (200, "text/event-stream", b"data: 1\ndata: 2\n")
            assert eng.connections == 1
        pool.close()

    asyncio.run(main())


def test_engine_closing_mid_answer_is_a_broken_answer() -> None:
    def make(eng: Engine) -> Handler:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await eng.read_request(reader)
            writer.write(PLAIN[:-5])  # promised 12 bytes, sends 7, then closes
            await writer.drain()

        return handle

    async def main() -> None:
        pool = UpstreamPool()
        async with scripted(make) as eng:
            response = await pool.post(eng.url, "/v1/completions", b"{}")
            with pytest.raises(BrokenAnswer, match="closed the connection before its answer"):
                await response.read()
            response.close()
        pool.close()

    asyncio.run(main())


def test_engine_closing_before_the_head_is_a_broken_answer() -> None:
    def make(eng: Engine) -> Handler:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await eng.read_request(reader)

        return handle

    async def main() -> None:
        pool = UpstreamPool()
        async with scripted(make) as eng:
            with pytest.raises(BrokenAnswer):
                await pool.post(eng.url, "/v1/completions", b"{}")
        pool.close()

    asyncio.run(main())


def test_idle_connection_closed_by_the_engine_is_not_reused() -> None:
    def make(eng: Engine) -> Handler:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await eng.read_request(reader)
            writer.write(PLAIN)  # keep-alive promised, then closed while idle
            await writer.drain()

        return handle

    async def main() -> None:
        pool = UpstreamPool()
        async with scripted(make) as eng:
            assert (await body_of(pool, eng.url))[2] == ANSWER
            await asyncio.sleep(0.05)  # the close reaches the pooled connection
            assert not pool._idle  # dropped at once: stopped instances leave nothing behind
            assert (await body_of(pool, eng.url))[2] == ANSWER
            assert eng.connections == 2
        pool.close()

    asyncio.run(main())


def test_abandoned_answer_closes_its_connection() -> None:
    async def main() -> None:
        pool = UpstreamPool()
        async with scripted(answering(CHUNKED, piece=8)) as eng:
            response = await pool.post(eng.url, "/v1/completions", b"{}")
            await response.chunk()
            response.close()  # the client left mid-stream
            assert (await body_of(pool, eng.url))[0] == 200
            assert eng.connections == 2
        pool.close()

    asyncio.run(main())


def test_silent_engine_times_out() -> None:
    def make(eng: Engine) -> Handler:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await eng.read_request(reader)
            writer.write(PLAIN[:40])
            await asyncio.sleep(5)

        return handle

    async def main() -> None:
        pool = UpstreamPool(read_timeout=0.2)
        async with scripted(make) as eng:
            with pytest.raises(BrokenAnswer, match=r"no answer from the engine for 0\.2 s"):
                await pool.post(eng.url, "/v1/completions", b"{}")
        pool.close()

    asyncio.run(main())


def test_large_body_is_sent_whole() -> None:
    async def main() -> None:
        pool = UpstreamPool()
        big = b'{"prompt": "' + b"x" * 300_000 + b'"}'
        async with scripted(answering(PLAIN)) as eng:
            assert (await body_of(pool, eng.url, big))[2] == ANSWER
            assert eng.requests[0].endswith(big)
        pool.close()

    asyncio.run(main())


def test_nothing_listening_cannot_connect() -> None:
    async def main() -> None:
        with socket.socket() as sock:  # a port nothing listens on
            sock.bind(("127.0.0.1", 0))
            url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        with pytest.raises(CannotConnect, match=r"refused|Connect call failed"):
            await UpstreamPool().post(url, "/v1/completions", b"{}")
        with pytest.raises(CannotConnect, match="unsupported engine address"):
            await UpstreamPool().post("https://127.0.0.1:1", "/v1/completions", b"{}")

    asyncio.run(main())
