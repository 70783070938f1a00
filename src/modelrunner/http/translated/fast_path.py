"""The short way through the translated POST routes (Ollama, Anthropic), as ``fast_path``
is for the OpenAI routes: a route middleware that, for a body of announced size within the
limit with an accepted key (``Authorization: Bearer`` or ``x-api-key``), decodes it
strictly into the route's Struct and calls the route's answer function itself, skipping
Litestar's handler pipeline (kwargs, guards, body validation: ~0.1 ms a request).

Anything else (no ``content-length``, too large, no or wrong key, a body that does not
decode) continues down Litestar's pipeline with the body replayed, so every error is the
route's own, as before. Exceptions the answer function raises reach the route's exception
handlers, which wrap this middleware.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Generic, TypeVar

import msgspec

from modelrunner.http.keys import KeyCheck
from modelrunner.http.openai.fast_path import eligible, read_body, replaying

if TYPE_CHECKING:
    from litestar.types import ASGIApp, Receive, Scope, Send

T = TypeVar("T")
# The route's answer (an ASGI app) to the decoded body and the path's engine segment ("").
Answer = Callable[[T, str], Awaitable["ASGIApp"]]


class TranslatedFastPath:
    def __init__(self, keys: KeyCheck, max_body: int) -> None:
        self.keys = keys
        self.max_body = max_body

    def middleware(self, shape: type[T], answer: Answer[T]) -> Callable[[ASGIApp], ASGIApp]:
        decoder: msgspec.json.Decoder[T] = msgspec.json.Decoder(shape)

        def wrap(app: ASGIApp) -> ASGIApp:
            return _TranslatedShortWay(app, self, decoder, answer)

        return wrap


class _TranslatedShortWay(Generic[T]):
    __slots__ = ("_answer", "_app", "_decoder", "_fast")

    def __init__(
        self,
        app: ASGIApp,
        fast: TranslatedFastPath,
        decoder: msgspec.json.Decoder[T],
        answer: Answer[T],
    ) -> None:
        self._app = app
        self._fast = fast
        self._decoder = decoder
        self._answer = answer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not self._eligible(scope):
            await self._app(scope, receive, send)
            return
        body = await read_body(receive)
        if body is None:
            return  # the client left while sending
        try:
            data = self._decoder.decode(body)
        except (msgspec.DecodeError, msgspec.ValidationError):
            await self._app(scope, replaying(body, receive), send)
            return
        answer = await self._answer(data, scope["path_params"].get("engine") or "")
        await answer(scope, receive, send)

    def _eligible(self, scope: Scope) -> bool:
        return eligible(scope, self._fast.max_body, self._fast.keys, x_api_key=True)
