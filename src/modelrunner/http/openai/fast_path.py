"""The short way through the proxied POST routes: a Litestar middleware on each of them.

Litestar's handler pipeline (request object, guards, kwargs, body extraction and
validation) cost ~0.1 ms per proxied request, a fifth of mr's CPU once the upstream
client was lean. For the common case, a well-formed JSON body within the size limit with
an accepted key, this middleware reads the body, checks it against the route's Struct
(msgspec, strict: never looser than Litestar) and hands it to ``ProxyCall`` directly.

Anything else (no ``content-length``, a body over the limit, a missing or wrong key, an
unknown engine, a body that does not validate) goes down Litestar's own pipeline with the
body replayed, so every error is produced exactly as before. Routing, CORS and the
exception handlers stay Litestar's: they wrap this middleware.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import msgspec

from modelrunner.http.errors import malformed_body, send_problem
from modelrunner.http.keys import KeyCheck
from modelrunner.http.openai.shapes import AnyRequest
from modelrunner.http.routing import unknown_engine_message
from modelrunner.http.upstream.forwarder import Forwarder

if TYPE_CHECKING:
    from litestar.types import ASGIApp, Receive, ReceiveMessage, Scope, Send


class FastPath:
    """What the short way needs to know; ``middleware`` makes one route's middleware."""

    def __init__(self, fw: Forwarder, keys: KeyCheck, max_body: int) -> None:
        self.fw = fw
        self.keys = keys
        self.max_body = max_body

    def middleware(self, op: str, shape: type[AnyRequest]) -> Callable[[ASGIApp], ASGIApp]:
        decoder: msgspec.json.Decoder[AnyRequest] = msgspec.json.Decoder(shape)

        def wrap(app: ASGIApp) -> ASGIApp:
            return _ProxyShortWay(app, self, op, decoder)

        return wrap


class _ProxyShortWay:
    __slots__ = ("_app", "_decoder", "_fast", "_op")

    def __init__(
        self, app: ASGIApp, fast: FastPath, op: str, decoder: msgspec.json.Decoder[AnyRequest]
    ) -> None:
        self._app = app
        self._fast = fast
        self._op = op
        self._decoder = decoder

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not self._eligible(scope):
            await self._app(scope, receive, send)
            return
        body = await read_body(receive)
        if body is None:
            return  # the client left while sending
        segment = scope["path_params"].get("engine") or None
        try:
            data = self._decoder.decode(body)
        except (msgspec.DecodeError, msgspec.ValidationError):
            data = None
        except (RecursionError, UnicodeError) as exc:
            # msgspec's own errors cover syntax and types; nesting deeper than the stack
            # (and text it cannot decode) surface as these, which Litestar would 500 on.
            await send_problem(send, malformed_body(exc, f"POST {scope['path']}"))
            return
        if data is None or (segment is not None and unknown_engine_message(segment)):
            await self._app(scope, replaying(body, receive), send)
            return
        query = scope["query_string"].decode("latin-1")
        stream = bool(getattr(data, "stream", False))
        call = self._fast.fw.call(self._op, segment, data.model, body, query, stream=stream)
        await call(scope, receive, send)

    def _eligible(self, scope: Scope) -> bool:
        return eligible(scope, self._fast.max_body, self._fast.keys, x_api_key=False)


def eligible(scope: Scope, max_body: int, keys: KeyCheck, *, x_api_key: bool) -> bool:
    """Whether a request may take the short way: a body of announced size within the
    limit, and an accepted key if keys are required (``x-api-key`` too where the route's
    own guard takes it)."""
    length = -1
    authorization = api_key = None
    for name, value in scope["headers"]:
        if name == b"content-length":
            length = int(value) if value.isdigit() else -1
        elif name == b"authorization":
            authorization = value.decode("latin-1")
        elif x_api_key and name == b"x-api-key":
            api_key = value.decode("latin-1")
    if not 0 <= length <= max_body:
        return False
    return not keys.enabled or keys.accepts(authorization, api_key)


async def read_body(receive: Receive) -> bytes | None:
    """The whole request body; None if the client disconnected first."""
    pieces: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return None
        pieces.append(message.get("body", b""))
        if not message.get("more_body", False):
            return pieces[0] if len(pieces) == 1 else b"".join(pieces)


def replaying(body: bytes, receive: Receive) -> Receive:
    """``receive`` that gives the already read body once, then the client's messages."""
    pending: list[ReceiveMessage] = [{"type": "http.request", "body": body, "more_body": False}]

    async def replay() -> ReceiveMessage:
        return pending.pop() if pending else await receive()

    return replay
