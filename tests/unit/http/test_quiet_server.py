"""QuietServer: uvicorn waking once a second still stops at once when asked, and still
keeps its Date header fresh."""

from __future__ import annotations

import asyncio
import threading
import time
from email.utils import parsedate_to_datetime
from typing import Any

import httpx
import pytest
import uvicorn

from modelrunner.engines.ports import free_port
from modelrunner.http import quiet_server
from modelrunner.http.quiet_server import QuietServer


async def _app(scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


def _running(server: QuietServer) -> threading.Thread:
    thread = threading.Thread(target=asyncio.run, args=(server.serve(),), daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.02)
    return thread


def test_should_exit_from_another_thread_stops_it_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(quiet_server, "_TICK", 60.0)  # a missed wake would wait this out
    port = free_port()
    server = QuietServer(uvicorn.Config(_app, port=port, log_level="warning", lifespan="off"))
    thread = _running(server)
    assert httpx.get(f"http://127.0.0.1:{port}/").text == "ok"
    server.should_exit = True
    thread.join(20)
    assert not thread.is_alive()


def test_the_date_header_moves_on_every_tick(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(quiet_server, "_TICK", 0.2)
    port = free_port()
    server = QuietServer(uvicorn.Config(_app, port=port, log_level="warning", lifespan="off"))
    thread = _running(server)
    try:
        first = parsedate_to_datetime(httpx.get(f"http://127.0.0.1:{port}/").headers["date"])
        time.sleep(2.2)
        later = parsedate_to_datetime(httpx.get(f"http://127.0.0.1:{port}/").headers["date"])
        assert (later - first).total_seconds() >= 1
    finally:
        server.should_exit = True
        thread.join(20)
