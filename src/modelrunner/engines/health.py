"""The liveness probe: ``GET /health`` over one kept-alive connection, every second.

httpx cost 1.8 ms of mr's CPU per probe (its request, response and pool objects, on a
cold cache); this asks the same question in 0.3-0.4 ms, so an idle mr stays idle and a
busy one leaves the cores to the engines. The answer is parsed as the relay parses its
own (``wire.ResponseParser``); only the status matters: the body is read (to keep the
connection usable) and dropped.
"""

from __future__ import annotations

import asyncio
from typing import Final

from modelrunner.wire import MalformedResponse, ResponseParser

_READ: Final = 16 * 1024
_MAX_ANSWER: Final = 64 * 1024  # an engine's health answer is a few short headers and a word


class HealthProbe:
    """Asks ``GET path`` on ``host:port``; ``healthy`` says whether a 200 came in time."""

    def __init__(self, host: str, port: int, path: str) -> None:
        self._address = (host, port)
        self._request = f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode("latin-1")
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def healthy(self, timeout: float) -> bool:
        """True for a 200 within ``timeout`` seconds; False for any other status, a
        broken connection, an answer that is not HTTP or too long, or silence (the
        connection is then dropped and the next probe opens a new one)."""
        try:
            async with asyncio.timeout(timeout):
                return await self._ask()
        except (OSError, TimeoutError, MalformedResponse):
            self.close()
            return False

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        self._reader = self._writer = None

    async def _ask(self) -> bool:
        if self._writer is None or self._writer.is_closing():
            self._reader, self._writer = await asyncio.open_connection(*self._address)
        assert self._reader is not None
        self._writer.write(self._request)
        answer = ResponseParser()
        received = 0
        while not answer.complete:
            data = await self._reader.read(_READ)
            if not data:
                if answer.eof():
                    break  # an answer framed by the close itself
                raise MalformedResponse("the engine closed the connection mid-answer")
            received += len(data)
            if received > _MAX_ANSWER:
                raise MalformedResponse(f"a health answer longer than {_MAX_ANSWER} bytes")
            answer.feed(data)
            answer.take()  # only the status matters
        if not answer.keep_alive:
            self.close()
        return answer.status == 200
