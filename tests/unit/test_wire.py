"""The engine answer parser: any split of the bytes gives the same answer."""

from __future__ import annotations

import pytest

from modelrunner.wire import MalformedResponse, ResponseParser, request_head

BODY = b'{"choices": [{"text": " world"}], "usage": {"prompt_tokens": 1}}'
PLAIN = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
    + str(len(BODY)).encode()
    + b"\r\n\r\n"
    + BODY
)
EVENTS = [b'data: {"n": 1}\n\n', b'data: {"n": 2}\n\n', b"data: [DONE]\n\n"]
CHUNKED = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
    + b"".join(f"{len(e):x}\r\n".encode() + e + b"\r\n" for e in EVENTS)
    + b"0\r\n\r\n"
)


def parse(*pieces: bytes) -> tuple[ResponseParser, bytes]:
    parser = ResponseParser()
    body = b""
    for piece in pieces:
        parser.feed(piece)
        body += parser.take()
    return parser, body


@pytest.mark.parametrize("raw", [PLAIN, CHUNKED], ids=["content-length", "chunked"])
def test_every_split_point_gives_the_same_answer(raw: bytes) -> None:
    _, whole = parse(raw)
    for cut in range(1, len(raw)):
        for second in (cut + 1, cut + 7, len(raw)):
            parser, body = parse(raw[:cut], raw[cut:second], raw[second:])
            assert parser.complete and parser.keep_alive, (cut, second)
            assert body == whole, (cut, second)


def test_byte_by_byte() -> None:
    parser, body = parse(*(CHUNKED[i : i + 1] for i in range(len(CHUNKED))))
    assert (parser.status, parser.content_type) == (200, b"text/event-stream")
    assert body == b"".join(EVENTS)  # transfer encoding removed, events intact
    assert parser.complete and parser.keep_alive


def test_content_length_answer() -> None:
    parser, body = parse(PLAIN)
    assert (parser.status, parser.content_type, body) == (200, b"application/json", BODY)


def test_headers_before_the_body_is_complete() -> None:
    parser, body = parse(CHUNKED[: CHUNKED.index(b'data: {"n": 2}')])
    assert parser.headers_done and not parser.complete
    assert body == EVENTS[0]


def test_connection_close_is_not_kept_alive() -> None:
    parser, _ = parse(PLAIN.replace(b"OK\r\n", b"OK\r\nConnection: close\r\n"))
    assert parser.complete and not parser.keep_alive
    parser, _ = parse(PLAIN.replace(b"HTTP/1.1", b"HTTP/1.0"))
    assert parser.complete and not parser.keep_alive


def test_unframed_answer_ends_at_eof() -> None:
    parser, body = parse(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\r\n", b"{}")
    assert body == b"{}" and not parser.complete
    assert parser.eof()
    assert parser.complete and not parser.keep_alive


@pytest.mark.parametrize("cut", [0, 10, len(PLAIN) - 1], ids=["nothing", "head", "body"])
def test_eof_before_the_end_is_incomplete(cut: int) -> None:
    parser, _ = parse(PLAIN[:cut])
    assert not parser.eof()
    assert not parser.complete


def test_no_body_statuses_complete_at_the_head() -> None:
    parser, body = parse(b"HTTP/1.1 204 No Content\r\n\r\n")
    assert (parser.status, body, parser.complete) == (204, b"", True)


def test_interim_answer_is_skipped() -> None:
    parser, body = parse(b"HTTP/1.1 100 Continue\r\n\r\n", PLAIN)
    assert (parser.status, body, parser.complete) == (200, BODY, True)


def test_bytes_after_the_answer_spoil_keep_alive() -> None:
    parser, _ = parse(PLAIN, b"HTTP/1.1 200 OK\r\n")
    assert parser.complete and not parser.keep_alive


@pytest.mark.parametrize(
    "raw",
    [b"garbage\r\n\r\n", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"],
    ids=["status line", "chunk size"],
)
def test_invalid_answers_are_refused(raw: bytes) -> None:
    with pytest.raises(MalformedResponse, match="invalid HTTP answer"):
        parse(raw)


def test_request_head() -> None:
    assert request_head("/v1/completions?x=1", "127.0.0.1:8080", 12) == (
        b"POST /v1/completions?x=1 HTTP/1.1\r\nhost: 127.0.0.1:8080\r\ncontent-length: 12\r\n"
        b"content-type: application/json\r\naccept-encoding: identity\r\n\r\n"
    )
