"""What a client can make the server hold before authentication: header size and count,
header-read time and open connections, under both of uvicorn's HTTP parsers (raw sockets
against a real uvicorn serving the app; the whole `mr serve` is in test_serve_limits.py)."""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Iterator

import pytest

from modelrunner.registry import Registry
from modelrunner.settings import Settings
from tests.fixtures.http import RunningApp, free_port, serve_in_thread

KEY = "k1"


def head(extra: bytes = b"", path: str = "/status") -> bytes:
    return (
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {KEY}\r\n".encode()
        + extra + b"\r\n"
    )  # fmt: skip


def exchange(port: int, data: bytes, timeout: float = 15.0) -> tuple[bytes, bool]:
    """Send ``data`` (as much as the server takes), then read until the server closes or
    the answer is complete. Returns (the answer, whether the server closed)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        # The server may stop reading and close part-way: its answer is still there.
        with contextlib.suppress(OSError):
            sock.sendall(data)
        return read_answer(sock)


def read_answer(sock: socket.socket) -> tuple[bytes, bool]:
    answer = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except (ConnectionResetError, TimeoutError):
            return answer, True
        if not chunk:
            return answer, True
        answer += chunk
        top, sep, body = answer.partition(b"\r\n\r\n")
        complete = sep and any(
            line.startswith(b"content-length:") and len(body) >= int(line[15:])
            for line in top.lower().split(b"\r\n")
        )
        if complete and b"connection: close" not in top.lower():
            return answer, False


def status_of(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.1 ") else 0


@pytest.fixture(scope="module", params=["httptools", "h11"])
def app(request: pytest.FixtureRequest) -> Iterator[RunningApp]:
    settings = Settings(port=free_port(), api_keys=(KEY,), max_connections=16)
    with serve_in_thread(Registry(), settings, parser=request.param) as running:
        yield running


def port_of(app: RunningApp) -> int:
    return int(app.base_url.rsplit(":", 1)[1])


def test_normal_and_60_kib_headers_are_served(app: RunningApp) -> None:
    answer, _ = exchange(port_of(app), head())
    assert status_of(answer) == 200
    answer, _ = exchange(port_of(app), head(b"X-Big: " + b"a" * 60_000 + b"\r\n"))
    assert status_of(answer) == 200


@pytest.mark.parametrize("size", [70_000, 16 << 20])
def test_an_oversized_header_gets_431_and_is_closed(app: RunningApp, size: int) -> None:
    answer, closed = exchange(port_of(app), head(b"X-Big: " + b"a" * size + b"\r\n"))
    assert status_of(answer) == 431
    assert b"request headers larger than 65536 bytes" in answer
    assert closed


@pytest.mark.parametrize("count", [101, 10_000])
def test_too_many_headers_get_431(app: RunningApp, count: int) -> None:
    # Host and Authorization are two of them.
    lines = b"".join(b"X-%d: 1\r\n" % i for i in range(count - 2))
    answer, _ = exchange(port_of(app), head(lines))
    assert status_of(answer) == 431


def test_one_hundred_headers_are_fine(app: RunningApp) -> None:
    lines = b"".join(b"X-%d: 1\r\n" % i for i in range(98))
    assert status_of(exchange(port_of(app), head(lines))[0]) == 200


def test_a_large_body_arriving_with_its_head_is_not_a_large_head(app: RunningApp) -> None:
    body = b'{"model": "absent", "prompt": "' + b"a" * 300_000 + b'"}'
    request = (
        b"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer k1\r\n"
        b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body) + body
    )
    assert status_of(exchange(port_of(app), request)[0]) == 404  # model_not_found


def test_slow_headers_are_cut_off(app: RunningApp) -> None:
    """A client sending its head one byte a second is answered 408 and closed after the
    10 s header deadline, however long it keeps sending."""
    with socket.create_connection(("127.0.0.1", port_of(app)), timeout=20) as sock:
        sent = 0
        start = time.monotonic()
        request = head()
        while time.monotonic() - start < 16 and sent < len(request) - 1:
            try:
                sock.send(request[sent : sent + 1])
            except OSError:
                break
            sent += 1
            time.sleep(1.0)
        answer, closed = read_answer(sock)
    assert closed
    assert status_of(answer) == 408
    assert sent < len(request) - 1


def test_a_keep_alive_connection_also_gets_the_header_deadline(app: RunningApp) -> None:
    with socket.create_connection(("127.0.0.1", port_of(app)), timeout=20) as sock:
        sock.sendall(head())
        first, closed = read_answer(sock)
        assert status_of(first) == 200 and not closed
        sock.sendall(b"GET /status HTTP/1.1\r\n")  # ... and never the rest
        answer, closed = read_answer(sock)
    assert closed
    assert status_of(answer) == 408


def test_connections_over_the_cap_are_refused(app: RunningApp) -> None:
    socks = [socket.create_connection(("127.0.0.1", port_of(app)), timeout=5) for _ in range(24)]
    try:
        refused = 0
        for sock in socks:
            sock.settimeout(0.5)
            with contextlib.suppress(TimeoutError):
                refused += sock.recv(64).startswith(b"HTTP/1.1 503")
        assert refused == 24 - 16
    finally:
        for sock in socks:
            sock.close()
    time.sleep(0.2)  # the server sees the closes
    assert status_of(exchange(port_of(app), head())[0]) == 200
