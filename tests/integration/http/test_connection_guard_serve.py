"""A real `mr serve` under header floods, measured as the issue found them: memory stays
flat under 8 concurrent 32 MiB headers, 10,000 headers are refused, slowloris connections
are closed."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

from tests.fixtures.serve import Server
from tests.integration.http.test_connection_guard import exchange, read_answer, status_of

MIB = 1 << 20


def rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def port(server: Server) -> int:
    return int(server.url.rsplit(":", 1)[1])


def test_header_floods_cost_no_memory(start_server: Callable[..., Server]) -> None:
    server = start_server(MR_API_KEYS="k1")
    before = rss(server.process.pid)
    statuses: list[int] = []
    chunk = b"a" * MIB

    def flood() -> None:
        with socket.create_connection(("127.0.0.1", port(server)), timeout=30) as sock:
            try:
                sock.sendall(b"GET /status HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: ")
                for _ in range(32):
                    sock.sendall(chunk)
                sock.sendall(b"\r\n\r\n")
            except OSError:
                pass  # refused part-way: expected
            statuses.append(status_of(read_answer(sock)[0]))

    threads = [threading.Thread(target=flood) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    grown = rss(server.process.pid) - before
    assert statuses == [431] * 8
    # Before the limits each of them was held in full (62 MB -> 435 MB); now at most the
    # cap and one socket read per connection.
    assert grown < 16 * MIB, f"mr serve grew by {grown / MIB:.1f} MiB"


def test_ten_thousand_headers_are_refused(start_server: Callable[..., Server]) -> None:
    server = start_server()
    lines = b"".join(b"X-%d: 1\r\n" % i for i in range(10_000))
    answer, closed = exchange(port(server), b"GET /status HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                              + lines + b"\r\n")  # fmt: skip
    assert status_of(answer) == 431 and closed


def test_slowloris_connections_are_closed(start_server: Callable[..., Server]) -> None:
    server = start_server()
    socks = [socket.create_connection(("127.0.0.1", port(server)), timeout=2) for _ in range(50)]
    try:
        start = time.monotonic()
        open_ = list(socks)
        request = b"GET /status HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        sent = 0
        while open_ and time.monotonic() - start < 20:
            for sock in list(open_):
                try:
                    sock.send(request[sent % len(request) : sent % len(request) + 1])
                except OSError:
                    open_.remove(sock)
            sent += 1
            time.sleep(1.0)
        assert not open_, f"{len(open_)} of 50 slow connections still open after 20 s"
        assert server.process.poll() is None
        assert status_of(exchange(port(server), request + b"\r\n")[0]) == 200
    finally:
        for sock in socks:
            sock.close()
