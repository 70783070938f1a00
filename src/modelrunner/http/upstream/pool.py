"""Keep-alive connections to the engines, kept per address, and the answer to one request.

``UpstreamPool.post`` reuses an idle connection to the engine's address (the most recently
used first) or opens one; ``UpstreamResponse.close`` gives it back when the answer was read
to its end, and closes it otherwise (an abandoned answer: the engine stops generating).
"""

from __future__ import annotations

import asyncio
from typing import Final
from urllib.parse import urlsplit

from modelrunner.http.upstream.connection import CannotConnect, UpstreamConnection
from modelrunner.wire import request_head

# Below uvicorn's 5 s keep-alive (vLLM's server): an idle connection is dropped before
# the engine could close it under a request just sent.
_IDLE_TTL: Final = 4.0
_MAX_IDLE: Final = 64  # per address


class UpstreamResponse:
    """An answer whose status and headers arrived; the body is read with ``chunk``/``read``."""

    __slots__ = ("_conn", "_pool", "content_type", "status")

    def __init__(
        self, pool: UpstreamPool, conn: UpstreamConnection, status: int, ctype: bytes
    ) -> None:
        self._pool = pool
        self._conn = conn
        self.status = status
        self.content_type = ctype.decode("latin-1")

    async def chunk(self) -> bytes | None:
        """The next piece of the body as it arrived (transfer encoding removed); None at the end."""
        return await self._conn.chunk()

    async def read(self) -> bytes:
        pieces = []
        while (piece := await self._conn.chunk()) is not None:
            pieces.append(piece)
        return pieces[0] if len(pieces) == 1 else b"".join(pieces)

    def close(self) -> None:
        conn = self._conn
        conn.finish()
        if not conn.closed:
            self._pool.give_back(conn)


class UpstreamPool:
    def __init__(self, connect_timeout: float = 5.0, read_timeout: float = 600.0) -> None:
        self._connect_timeout = connect_timeout
        self._read_timeout = read_timeout
        self._idle: dict[str, list[UpstreamConnection]] = {}

    async def post(self, base_url: str, target: str, body: bytes) -> UpstreamResponse:
        """Send ``POST base_url+target`` with a JSON ``body``; returns once the headers
        arrived. Raises ``CannotConnect`` or ``BrokenAnswer``."""
        netloc = base_url.partition("://")[2]
        conn = self._reuse(netloc) or await self._connect(base_url, netloc)
        head = request_head(target, netloc, len(body))
        try:
            conn.send(head, body)
            parsed = await conn.head()
        except BaseException:
            conn.finish()  # closes it: the answer was not read
            raise
        return UpstreamResponse(self, conn, parsed.status, parsed.content_type)

    def give_back(self, conn: UpstreamConnection) -> None:
        idle = self._idle.setdefault(conn.key, [])
        if len(idle) < _MAX_IDLE:
            conn.on_idle_close = self._forget
            idle.append(conn)
        else:
            conn.abort()

    def _forget(self, conn: UpstreamConnection) -> None:
        """An idle connection the engine closed (e.g. the instance stopped): drop it now, so
        the addresses of stopped instances do not accumulate."""
        idle = self._idle.get(conn.key)
        if idle is not None and conn in idle:
            idle.remove(conn)
            if not idle:
                del self._idle[conn.key]

    def close(self) -> None:
        """Close every idle connection (connections in use close when their answer ends)."""
        every, self._idle = self._idle, {}
        for idle in every.values():
            for conn in idle:
                conn.abort()

    def _reuse(self, key: str) -> UpstreamConnection | None:
        idle = self._idle.get(key)
        if not idle:
            return None
        now = asyncio.get_running_loop().time()
        while idle:
            conn = idle.pop()
            if not conn.closed and now - conn.idle_since < _IDLE_TTL:
                conn.on_idle_close = None
                if not idle:
                    del self._idle[key]
                return conn
            conn.abort()
        del self._idle[key]
        return None

    async def _connect(self, base_url: str, key: str) -> UpstreamConnection:
        url = urlsplit(base_url)
        if url.scheme != "http" or not url.hostname:
            raise CannotConnect(f"unsupported engine address {base_url!r} (expected http://)")
        loop = asyncio.get_running_loop()
        conn = UpstreamConnection(loop, self._read_timeout, key)
        try:
            async with asyncio.timeout(self._connect_timeout):
                await loop.create_connection(lambda: conn, url.hostname, url.port or 80)
        except TimeoutError:
            raise CannotConnect(f"no connection within {self._connect_timeout:g} s") from None
        except OSError as exc:
            raise CannotConnect(str(exc) or type(exc).__name__) from None
        return conn
