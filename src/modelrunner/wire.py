"""HTTP/1.1 on the wire between mr and its engines: the request head mr sends, and the
incremental parse of an engine's answer (llhttp, through ``httptools``, which
uvicorn[standard] brings along). Below both layers that speak to engines: the relay
(``http.upstream``) and the liveness probe (``engines.health``).

No I/O here: ``ResponseParser`` is fed bytes as they arrive, split anywhere, and collects
the status, headers and body pieces (chunked transfer encoding already removed).
"""

from __future__ import annotations

from typing import Final

import httptools

_FIXED_HEADERS: Final = b"content-type: application/json\r\naccept-encoding: identity\r\n"


class MalformedResponse(Exception):
    """The engine sent something that is not a valid HTTP/1.1 answer."""


def request_head(target: str, host: str, length: int) -> bytes:
    """The head of ``POST target`` with a JSON body of ``length`` bytes."""
    return (
        f"POST {target} HTTP/1.1\r\nhost: {host}\r\ncontent-length: {length}\r\n".encode("latin-1")
        + _FIXED_HEADERS
        + b"\r\n"
    )


class ResponseParser:
    """One response, parsed as its bytes arrive.

    ``body`` holds the pieces not yet taken (``take``); ``complete`` is set once the last
    byte was parsed. An answer framed by neither ``content-length`` nor chunked encoding
    ends when the engine closes the connection (``eof``).
    """

    __slots__ = (
        "_framed",
        "_parser",
        "body",
        "buffered",
        "complete",
        "content_type",
        "headers_done",
        "keep_alive",
        "status",
    )

    def __init__(self) -> None:
        self._parser = httptools.HttpResponseParser(self)
        self._framed = False
        self.status = 0
        self.content_type = b""
        self.headers_done = False
        self.body: list[bytes] = []
        self.buffered = 0  # bytes in ``body``
        self.complete = False
        self.keep_alive = False

    def feed(self, data: bytes) -> None:
        if self.complete:
            if data:  # bytes after the answer: the connection is out of step; never reuse it
                self.keep_alive = False
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            raise MalformedResponse(f"invalid HTTP answer ({exc})") from None
        except httptools.HttpParserUpgrade:
            raise MalformedResponse("the engine switched protocols") from None

    def eof(self) -> bool:
        """The connection closed: True if that is how this answer ends (no framing)."""
        if self.headers_done and not self._framed and not self.complete:
            self.complete = True
            self.keep_alive = False
        return self.complete

    def take(self) -> bytes:
        """All body bytes received and not yet taken."""
        pieces = self.body
        if not pieces:
            return b""
        data = pieces[0] if len(pieces) == 1 else b"".join(pieces)
        pieces.clear()
        self.buffered = 0
        return data

    # -- httptools callbacks ------------------------------------------------------
    def on_header(self, name: bytes, value: bytes) -> None:
        lower = name.lower()
        if lower == b"content-type":
            self.content_type = value
        elif lower == b"content-length" or (
            lower == b"transfer-encoding" and b"chunked" in value.lower()
        ):
            self._framed = True

    def on_headers_complete(self) -> None:
        self.status = self._parser.get_status_code()
        self.headers_done = True
        if 100 <= self.status < 200 or self.status in (204, 304):
            self._framed = True  # no body by definition

    def on_body(self, body: bytes) -> None:
        self.body.append(body)
        self.buffered += len(body)

    def on_message_complete(self) -> None:
        if 100 <= self.status < 200:
            # An interim answer (100 Continue): the real one follows on the same connection.
            self.headers_done = False
            self._framed = False
            self.content_type = b""
            return
        self.keep_alive = self._parser.should_keep_alive()
        self.complete = True
