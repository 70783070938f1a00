"""HTTP for the engine: standard library threads, one per connection, HTTP/1.1 keep-alive.

Every answer has a length or chunked framing, so a kept-alive connection is always ready
for its next request; when an answer cannot be completed the connection is closed rather
than left in an unknown state. A client that goes away (streaming or not) cancels its job,
which frees the slot at the scheduler's next step.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import select
import signal
import socket
import sys
import threading
import time
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Final

from modelrunner.engines.llamacpp.answers import ChatOutput
from modelrunner.engines.llamacpp.engine import Engine
from modelrunner.engines.llamacpp.jobs import Delta, Event, Failed, Finished, Job, QueueFull
from modelrunner.engines.llamacpp.metrics import CONTENT_TYPE
from modelrunner.engines.llamacpp.tokenize import detokenize, tokenize
from modelrunner.engines.serving import (
    RequestError,
    error_body,
    model_list,
    read_json_body,
)

log = logging.getLogger("modelrunner.llamacpp")

POLL_SECONDS: Final = 0.1  # how often a waiting handler checks that its client is still there
RETRY_AFTER: Final = "1"
# Answered at once on the handler's thread (the tokenizer needs no slot); vLLM's paths.
TOKENIZER_ROUTES: Final = {"/tokenize": tokenize, "/detokenize": detokenize}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # TCP_NODELAY: a token must not wait for the peer's ACK
    server: EngineHTTPServer
    _check_at = 0.0  # when to look for a vanished client next
    _body: dict[str, Any] | None = None  # a body read already (by the fault hook)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)

    # -- dispatch -------------------------------------------------------------------------
    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        engine = self.server.engine
        if path == "/health":
            self.send_json(200, {"status": "ok"})
        elif path == "/v1/models":
            self.send_json(200, model_list([engine.name], "llama.cpp"))
        elif path == "/metrics":
            self.send_bytes(200, engine.metrics.exposition(), CONTENT_TYPE)
        else:
            self.send_error_body(RequestError(404, f"no route GET {path}"))

    def do_POST(self) -> None:
        path = self.path.split("?", 1)[0]
        engine = self.server.engine
        if self.server.fault is not None and self._faulted():
            return
        try:
            body = self._read_json()
            if path == "/v1/chat/completions":
                job, output = engine.chat_job(body)
            elif path == "/v1/completions":
                job, output = engine.completion_job(body)
            elif path == "/v1/embeddings":
                if engine.embedder is None:
                    raise RequestError(
                        400,
                        f"model {engine.name} does not serve embeddings "
                        "(set llama.cpp.embeddings: true)",
                    )
                self.send_json(200, engine.embedder.answer(body, engine.name))
                return
            elif path in TOKENIZER_ROUTES:
                self.send_json(200, TOKENIZER_ROUTES[path](engine, body))
                return
            else:
                raise RequestError(404, f"no route POST {path}")
        except RequestError as exc:
            self.send_error_body(exc)
            return
        except Exception as exc:  # one failed request must not end the server
            log.exception("POST %s failed", path)
            self.send_error_body(RequestError(500, f"{type(exc).__name__}: {exc}"))
            return
        self._run(job, output)

    def _faulted(self) -> bool:
        """The test fault hook: a request naming a model (a client's, as mr relays it;
        mr's own readiness request names none, so the instance starts) fails."""
        try:
            body = self._read_json()
        except RequestError as exc:
            self.send_error_body(exc)
            return True
        if "model" not in body:
            self._body = body
            return False
        assert self.server.fault is not None
        self.send_error_body(RequestError(self.server.fault, "fault injected (MR_ENGINE_FAULT)"))
        return True

    def _read_json(self) -> dict[str, Any]:
        if self._body is not None:
            body, self._body = self._body, None
            return body
        return read_json_body(self)

    # -- running a job --------------------------------------------------------------------
    def _run(self, job: Job, output: ChatOutput) -> None:
        scheduler = self.server.engine.scheduler
        try:
            scheduler.submit(job)
        except QueueFull:
            job.chain.close()
            self.server.engine.metrics.rejected()
            self.send_error_body(
                RequestError(503, "the model is busy: every slot and the queue are full"),
                {"Retry-After": RETRY_AFTER},
            )
            return
        if job.generation.stream:
            self._stream(job, output)
        else:
            self._collect(job, output)

    def _next(self, job: Job) -> Event | None:
        """The job's next event, or None once the client has gone (the job is cancelled).
        The client is looked at every POLL_SECONDS, also while tokens keep coming."""
        while True:
            now = time.monotonic()
            if now >= self._check_at:
                self._check_at = now + POLL_SECONDS
                if self._client_gone():
                    self.server.engine.scheduler.cancel(job)
                    self.close_connection = True
                    return None
            try:
                return job.events.get(timeout=POLL_SECONDS)
            except queue.Empty:
                continue

    def _client_gone(self) -> bool:
        try:
            readable, _, _ = select.select([self.connection], [], [], 0)
            return bool(readable) and self.connection.recv(1, socket.MSG_PEEK) == b""
        except OSError:
            return True

    def _collect(self, job: Job, output: ChatOutput) -> None:
        parts: list[str] = []
        while True:
            event = self._next(job)
            if event is None:
                return
            if isinstance(event, Delta):
                parts.append(event.text)
                output.collect(event)
            elif isinstance(event, Finished):
                parts.append(event.text)
                self.send_json(200, output.message("".join(parts), event))
                return
            else:
                self.send_error_body(RequestError(500, event.message))
                return

    def _stream(self, job: Job, output: ChatOutput) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        try:
            self._events(output.start_chunks())
            while True:
                event = self._next(job)
                if event is None:
                    return
                if isinstance(event, Delta):
                    self._events(output.feed(event.text, event))
                elif isinstance(event, Finished):
                    self._events(output.feed(event.text, None))
                    self._events(output.finish_chunks(event))
                    if job.generation.include_usage:
                        self._events([output.usage_chunk(event.usage)])
                    break
                else:
                    assert isinstance(event, Failed)
                    self._events([error_body(500, event.message)])
                    break
            self._write_chunk(b"data: [DONE]\n\n")
            self._write_chunk(b"")
        except OSError:  # the client left mid-stream
            self.server.engine.scheduler.cancel(job)
            self.close_connection = True

    def _events(self, events: list[dict[str, Any]]) -> None:
        if events:
            data = b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in events)
            self._write_chunk(data)

    def _write_chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    # -- plain answers --------------------------------------------------------------------
    def send_json(
        self, status: int, body: Mapping[str, Any], headers: Mapping[str, str] | None = None
    ) -> None:
        self.send_bytes(status, json.dumps(body).encode(), "application/json", headers)

    def send_error_body(self, exc: RequestError, headers: Mapping[str, str] | None = None) -> None:
        self.send_json(exc.status, error_body(exc.status, str(exc), exc.param), headers)

    def send_bytes(
        self, status: int, data: bytes, content_type: str, headers: Mapping[str, str] | None = None
    ) -> None:
        try:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(data)
        except OSError:
            self.close_connection = True


class EngineHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 1024  # mr opens many connections at once under load

    def __init__(self, address: tuple[str, int], engine: Engine, fault: int | None = None) -> None:
        super().__init__(address, Handler)
        self.engine = engine
        # A fault hook for tests of what mr does with an engine that answers badly (a
        # canary to roll back): every POST is answered with this status.
        self.fault = fault


def serve(host: str, port: int, engine: Engine) -> None:
    """Serve until SIGTERM or SIGINT, then stop the scheduler and return.
    ``MR_ENGINE_FAULT=5xx`` (a manifest's ``env``, for tests): every request naming a
    model fails with that status."""
    fault = os.environ.get("MR_ENGINE_FAULT", "")
    server = EngineHTTPServer((host, port), engine, int(fault) if fault.isdigit() else None)

    def shut_down(signum: int, frame: object) -> None:
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, shut_down)
    signal.signal(signal.SIGINT, shut_down)
    engine.start()
    print(f"serving on http://{host}:{port}", file=sys.stderr, flush=True)
    try:
        server.serve_forever(poll_interval=0.5)
    finally:
        server.server_close()
        engine.stop()
