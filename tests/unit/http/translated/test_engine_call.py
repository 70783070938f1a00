"""The server-sent event splitter of engine_call: every way an engine's bytes can arrive."""

from __future__ import annotations

import pytest

from modelrunner.http.translated.engine_call import split_events


@pytest.mark.parametrize(
    ("buffer", "events", "rest"),
    [
        (b"", [], b""),
        (b'data: {"a":1}\n\n', [b'{"a":1}'], b""),
        (b'data: {"a":1}\n\ndata: [DONE]\n\n', [b'{"a":1}', b"[DONE]"], b""),
        (b'data: {"a":1}\n\ndata: {"b"', [b'{"a":1}'], b'data: {"b"'),
        (b'data:{"a":1}\r\n\r\n', [b'{"a":1}'], b""),
        (b": keep-alive\n\n", [], b""),
        (b"event: x\nid: 3\ndata: 1\ndata: 2\n\n", [b"1\n2"], b""),
        (b"data: {}\n", [], b"data: {}\n"),
        (b"data:  two spaces\n\n", [b" two spaces"], b""),
    ],
)
def test_split_events(buffer: bytes, events: list[bytes], rest: bytes) -> None:
    assert split_events(buffer) == (events, rest)


def test_split_at_every_byte_gives_the_same_events() -> None:
    stream = b'data: {"x":"a"}\r\n\r\ndata: {"x":"b"}\n\n: comment\n\ndata: [DONE]\n\n'
    for cut in range(len(stream) + 1):
        found, rest = split_events(stream[:cut])
        more, rest = split_events(rest + stream[cut:])
        assert found + more == [b'{"x":"a"}', b'{"x":"b"}', b"[DONE]"], cut
        assert rest == b""
