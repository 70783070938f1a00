"""The answers of the translated routes as plain ASGI apps, as ``ProxyCall`` is for the
OpenAI routes: a JSON body, or a stream written piece by piece as the translation yields.

Litestar's ``Stream`` response starts a task group and a disconnect listener for every
stream, which cost more than the translation itself on short streams. ``StreamAnswer``
watches for a disconnect only once the answer has taken ``_WATCH_AFTER`` (a client that
left earlier is seen then: uvicorn keeps the message); a disconnect cancels the writing and
closes the pieces' generator, which closes the engine's connection and stops generation.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from litestar.types import Receive, Scope, Send

_WATCH_AFTER: Final = 0.05  # seconds


def _headers(media_type: str, headers: Mapping[str, str], length: int | None) -> list[Any]:
    found = [(b"content-type", media_type.encode("latin-1"))]
    found += [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
    if length is not None:
        found.append((b"content-length", str(length).encode()))
    return found


class JsonAnswer:
    __slots__ = ("_body", "_headers", "_status")

    def __init__(self, body: bytes, headers: Mapping[str, str] = {}, status: int = 200) -> None:
        self._body = body
        self._headers = headers
        self._status = status

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = _headers("application/json", self._headers, len(self._body))
        await send({"type": "http.response.start", "status": self._status, "headers": headers})
        await send({"type": "http.response.body", "body": self._body, "more_body": False})


class StreamAnswer:
    __slots__ = ("_close", "_done", "_headers", "_left", "_media_type", "_pieces")

    def __init__(
        self,
        pieces: AsyncGenerator[bytes, None],
        media_type: str,
        headers: Mapping[str, str],
        close: Callable[[], Awaitable[None]],
    ) -> None:
        """``close`` ends what the pieces come from (the engine's stream): closing a
        generator that never started runs none of its code."""
        self._pieces = pieces
        self._close = close
        self._media_type = media_type
        self._headers = {"cache-control": "no-cache", "x-accel-buffering": "no", **headers}
        self._left = False
        self._done = False  # the last byte is being sent: a disconnect now is normal

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        task = asyncio.current_task()
        if task is None:
            raise RuntimeError("StreamAnswer must run inside an asyncio task")
        loop = asyncio.get_running_loop()
        watcher: list[asyncio.Task[None]] = []
        timer = loop.call_later(
            _WATCH_AFTER, lambda: watcher.append(loop.create_task(self._watch(receive, task)))
        )
        try:
            headers = _headers(self._media_type, self._headers, None)
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            async for piece in self._pieces:
                await send({"type": "http.response.body", "body": piece, "more_body": True})
            self._done = True
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except asyncio.CancelledError:
            if not self._left:
                raise
            task.uncancel()
        finally:
            timer.cancel()
            for watch in watcher:
                watch.cancel()
            with contextlib.suppress(Exception):
                await self._pieces.aclose()
            await self._close()  # the engine's stream, if not read to its end

    async def _watch(self, receive: Receive, task: asyncio.Task[Any]) -> None:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                if self._done:
                    return
                self._left = True
                task.cancel()
                return
