"""Recording the translated routes (Ollama, Anthropic Messages) in the request inspector.

``recording(recorder, assembler_for, handle_error, served_name)`` is a route middleware,
outermost on the route (before the key check and the short way). It keeps a reference to
the request body's pieces as the route reads them (after the key check, so an
unauthenticated client costs nothing), then records the answer with ``Recorder.watch``:
each message goes to the client first and is looked at afterwards, a stream reassembled by
the API's assembler as it passes. An error raised before the answer started is recorded as
the route's exception handler (``handle_error``) words it, then raised on to that handler.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import msgspec
from litestar import Request, Response

from modelrunner.errors import ModelRunnerError
from modelrunner.http.inspector.recorder import AssemblerFor, Recorder, abandon, fail

if TYPE_CHECKING:
    from litestar.types import ASGIApp, Message, Receive, ReceiveMessage, Scope, Send

ErrorHandler = Callable[[Request[Any, Any, Any], Exception], Response[bytes]]


class _Named(msgspec.Struct):
    model: Any = None


_named = msgspec.json.Decoder(_Named)


def requested_model(body: bytes) -> str | None:
    """The ``model`` a JSON request body names, if any."""
    try:
        found = _named.decode(body).model
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None
    return found if isinstance(found, str) and found else None


def recording(
    recorder: Recorder,
    assembler_for: AssemblerFor,
    handle_error: ErrorHandler,
    served_name: Callable[[str], str] = str,
) -> Callable[[ASGIApp], ASGIApp]:
    def wrap(app: ASGIApp) -> ASGIApp:
        async def recorded(scope: Scope, receive: Receive, send: Send) -> None:
            call = _Recorded(recorder, assembler_for, served_name, scope, receive, send)
            try:
                await app(scope, call.receive, call.send)
            except Exception as exc:
                call.failed(handle_error(Request(scope), exc))
                raise
            finally:
                if call.watch is not None:
                    abandon(call.watch)

        return recorded

    return wrap


class _Recorded:
    """One request's recording: the body as the route reads it, then the answer."""

    __slots__ = ("_assembler_for", "_pieces", "_receive", "_recorder", "_scope", "_send",
                 "_served_name", "watch")  # fmt: skip

    def __init__(
        self,
        recorder: Recorder,
        assembler_for: AssemblerFor,
        served_name: Callable[[str], str],
        scope: Scope,
        receive: Receive,
        send: Send,
    ) -> None:
        self._recorder = recorder
        self._assembler_for = assembler_for
        self._served_name = served_name
        self._scope = scope
        self._receive = receive
        self._send = send
        self._pieces: list[bytes] | None = []  # None once the body is complete
        self.watch: Send | None = None

    async def receive(self) -> ReceiveMessage:
        message = await self._receive()
        if self._pieces is not None and message["type"] == "http.request":
            self._pieces.append(message.get("body", b""))
            if not message.get("more_body", False):
                pieces, self._pieces = self._pieces, None
                self._begin(pieces[0] if len(pieces) == 1 else b"".join(pieces))
        return message

    def _begin(self, body: bytes) -> None:
        model = requested_model(body)
        if model is None:
            return
        try:
            model = self._served_name(model)
        except ModelRunnerError:
            return  # no manifest serves it: not recorded
        watched = self._recorder.watch(model, self._scope, body, self._send, self._assembler_for)
        if watched is not self._send:
            self.watch = watched

    async def send(self, message: Message) -> None:
        await (self.watch or self._send)(message)

    def failed(self, answer: Response[bytes]) -> None:
        """The route raised: record the error answer its handler is about to send."""
        if self.watch is None:
            return
        content = answer.content if isinstance(answer.content, bytes) else b""
        fail(self.watch, answer.status_code or 500, content)
