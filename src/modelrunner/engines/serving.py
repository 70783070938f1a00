"""The HTTP plumbing shared by the project's own engine servers (llama.cpp, Diffusers).

Standard library only: a threading server (one thread per connection, HTTP/1.1 keep-alive),
so a slow generation never blocks ``/health``; JSON bodies, OpenAI-style error bodies and
server-sent events over chunked encoding. Every answer has a length or chunked framing, so
a kept-alive connection is always ready for its next request; when an answer cannot be
completed the connection is closed rather than left in an unknown state. The servers run
as engine processes on loopback, behind modelrunner's own HTTP layer.
"""

from __future__ import annotations

import json
import logging
import select
import signal
import socket
import sys
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Final

import msgspec

log = logging.getLogger("modelrunner.engine_server")

MAX_BODY: Final = 32 * 1024 * 1024


class RequestError(Exception):
    """A request the server refuses: becomes an OpenAI-style error body."""

    def __init__(
        self,
        status: int,
        message: str,
        param: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.param = param
        self.headers = headers or {}


def error_body(status: int, message: str, param: str | None = None) -> dict[str, Any]:
    kind = "invalid_request_error" if status < 500 else "server_error"
    return {"error": {"message": message, "type": kind, "param": param, "code": None}}


class ClientGone(Exception):
    """Raised by a long route that sees its client has closed the connection."""


_current = threading.local()


def client_gone() -> bool:
    """Whether the client of the request this thread is answering has closed its end, so a
    long computation for it (a Diffusers generation) can stop instead of running on."""
    connection: socket.socket | None = getattr(_current, "connection", None)
    if connection is None:
        return False
    try:
        readable, _, _ = select.select([connection], [], [], 0)
        return bool(readable) and connection.recv(1, socket.MSG_PEEK) == b""
    except OSError:
        return True


@contextmanager
def watching(connection: socket.socket) -> Iterator[None]:
    """Make ``client_gone()`` on this thread watch ``connection`` (a hand-off's control
    socket, whose closing means the client left: engines/handoff.py)."""
    previous = getattr(_current, "connection", None)
    _current.connection = connection
    try:
        yield
    finally:
        _current.connection = previous


@dataclass(frozen=True)
class RawReply:
    """An answer that is not JSON (a Prometheus exposition)."""

    data: bytes
    content_type: str


class SelfWritten(ABC):
    """An answer that writes itself to the connection (a stream fed by another thread)."""

    @abstractmethod
    def write(self, handler: Handler) -> None:
        """Write the whole answer, head included; raise ClientGone if the client left."""


def chunk(data: bytes) -> bytes:
    """One piece of a chunked body (``b""`` is the last)."""
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


@dataclass(frozen=True)
class Refusal:
    """A request a route refused (or failed on): its status, OpenAI-style error body and
    headers."""

    status: int
    body: dict[str, Any]
    headers: Mapping[str, str]


Event = dict[str, Any]
# A route answers a request's JSON body (``{}`` for a GET). It returns a JSON-able body, a
# RawReply, or an iterable of events sent as server-sent events followed by
# ``data: [DONE]``; a list of events is written as one chunk (one write per token step).
Answer = dict[str, Any] | RawReply | SelfWritten | Iterable[Event | list[Event]]
Route = Callable[[dict[str, Any]], Answer]
Routes = dict[tuple[str, str], Route]


def run_route(
    routes: Routes, method: str, path: str, read_body: Callable[[], dict[str, Any]]
) -> Answer | Refusal:
    """A request's answer from its route, or its refusal: a ``RequestError`` (the body
    unreadable, no route, the route's own) or any other failure (500, logged). A route that
    sees its client leave raises ``ClientGone``, which passes through."""
    try:
        body = read_body()
        route = routes.get((method, path))
        if route is None:
            raise RequestError(404, f"no route {method} {path}")
        return route(body)
    except ClientGone:
        raise
    except RequestError as exc:
        return Refusal(exc.status, error_body(exc.status, str(exc), exc.param), exc.headers)
    except Exception as exc:  # one failed request must not end the server
        log.exception("%s %s failed", method, path)
        return Refusal(500, error_body(500, f"{type(exc).__name__}: {exc}"), {})


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive for the upstream forwarder
    # Headers and body go out in two writes; with Nagle's algorithm on, the second waits for
    # the peer's delayed ACK (~40 ms on every short answer).
    disable_nagle_algorithm = True
    server: EngineHTTPServer

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def _dispatch(self, method: str) -> None:
        path = self.path.split("?", 1)[0]
        _current.connection = self.connection
        try:
            result = run_route(
                self.server.routes, method, path, self._read_json if method == "POST" else dict
            )
        except ClientGone:
            self.close_connection = True  # nobody to answer
            return
        if isinstance(result, Refusal):
            self.send_json(result.status, result.body, result.headers)
            return
        if isinstance(result, dict):
            self.send_json(200, result)
        elif isinstance(result, SelfWritten):
            try:
                result.write(self)
            except (OSError, ClientGone):
                self.close_connection = True  # the answer could not be completed
        elif isinstance(result, RawReply):
            self.send_bytes(200, result.data, result.content_type)
        else:
            self.send_events(result)

    def _read_json(self) -> dict[str, Any]:
        return read_json_body(self)

    def send_json(
        self, status: int, body: Mapping[str, Any], headers: Mapping[str, str] | None = None
    ) -> None:
        self.send_bytes(status, json.dumps(body).encode(), "application/json", headers)

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
        except OSError:  # the client left before its answer
            self.close_connection = True

    def send_events(self, events: Iterable[Event | list[Event]]) -> None:
        iterator = iter(events)
        try:
            self.start_events()
            try:
                for item in iterator:
                    batch = item if isinstance(item, list) else [item]
                    if batch:
                        self._chunk(b"".join(sse(event) for event in batch))
            except (OSError, ClientGone):
                raise
            except Exception as exc:  # headers are gone: report in-band, as OpenAI does
                log.exception("stream failed")
                self._chunk(sse(error_body(500, str(exc))))
            self._chunk(b"data: [DONE]\n\n")
            self._chunk(b"")
        except (OSError, ClientGone):
            self.close_connection = True  # the client left; closing the events stops its work
        finally:
            close = getattr(iterator, "close", None)
            if close is not None:
                close()

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(chunk(data))
        self.wfile.flush()

    def start_events(self) -> None:
        """The head of a server-sent event stream (chunked; the body follows)."""
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()


_encode_json = msgspec.json.Encoder().encode


def sse(event: Event) -> bytes:
    """One server-sent event. msgspec, not json: it runs once per generated token, and
    costs a tenth of json.dumps (compact, UTF-8, a non-finite float written as null)."""
    return b"data: " + _encode_json(event) + b"\n\n"


class EngineHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    # The router opens many connections at once under load; Python's default backlog of 5
    # made the kernel drop some (seen as 502s at 32 concurrent streams).
    request_queue_size = 1024

    def __init__(self, address: tuple[str, int], routes: Routes) -> None:
        super().__init__(address, Handler)
        self.routes = routes


def with_fault(routes: Routes, fault: str) -> Routes:
    """The test fault hook (``MR_ENGINE_FAULT=5xx`` in a manifest's ``env``): a POST naming
    a model (a client's, as mr relays it) fails with that status, so tests can see what mr
    does with an engine that answers badly (a canary to roll back). mr's own readiness
    request names no model, so the instance still starts. Anything else: routes unchanged."""
    if not (fault.isdigit() and 400 <= int(fault) <= 599):
        return routes
    status = int(fault)

    def faulty(route: Route) -> Route:
        def answer(body: dict[str, Any]) -> Answer:
            if "model" in body:
                raise RequestError(status, "fault injected (MR_ENGINE_FAULT)")
            return route(body)

        return answer

    return {key: faulty(r) if key[0] == "POST" else r for key, r in routes.items()}


def serve(host: str, port: int, routes: Routes) -> None:
    """Serve until SIGTERM or SIGINT, then return (the caller exits)."""
    server = EngineHTTPServer((host, port), routes)

    def shut_down(signum: int, frame: object) -> None:
        # shutdown() waits for serve_forever to return, so it must not run on its thread.
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, shut_down)
    signal.signal(signal.SIGINT, shut_down)
    print(f"serving on http://{host}:{port}", file=sys.stderr, flush=True)
    try:
        server.serve_forever(poll_interval=0.5)
    finally:
        server.server_close()


def model_list(names: Iterable[str], owner: str) -> dict[str, Any]:
    return {
        "object": "list",
        "data": [
            {"id": name, "object": "model", "created": 0, "owned_by": owner} for name in names
        ],
    }


def parse_bool(value: str) -> bool:
    lowered = value.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"expected true or false, got {value!r}")


def body_length(transfer_encoding: str | None, lengths: list[str]) -> int:
    """The length of a request's body from its headers: a ``Content-Length`` of ASCII
    digits (repeated only with one value), at most ``MAX_BODY``; none means no body.
    A chunked body is refused (411): these servers read bodies by length only."""
    if "chunked" in (transfer_encoding or "").lower():
        raise RequestError(411, "send the body with a Content-Length, not chunked")
    values = {v.strip() for v in lengths}
    if len(values) > 1:
        raise RequestError(400, f"Content-Length given twice with different values: {lengths}")
    if not values:
        return 0
    value = values.pop()
    if not (value.isascii() and value.isdigit()):
        raise RequestError(400, f"Content-Length is not a number of bytes: {value[:40]!r}")
    length = int(value)
    if length > MAX_BODY:
        raise RequestError(413, f"request body of {length} bytes is over {MAX_BODY}")
    return length


def read_json_body(handler: BaseHTTPRequestHandler) -> dict[str, Any]:
    """A request's body, one JSON object (``body_length``, ``json_object``). A body that
    cannot be read leaves the connection unusable: it is closed after the answer."""
    headers = handler.headers
    try:
        length = body_length(
            headers.get("Transfer-Encoding"), headers.get_all("Content-Length") or []
        )
    except RequestError:
        handler.close_connection = True
        raise
    return json_object(handler.rfile.read(length) if length else b"{}")


def json_object(raw: bytes) -> dict[str, Any]:
    """A request body that must be one JSON object; anything else is a 400."""
    try:
        body = json.loads(raw)
    except ValueError as exc:
        raise RequestError(400, f"request body is not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise RequestError(400, "request body must be a JSON object")
    return body
