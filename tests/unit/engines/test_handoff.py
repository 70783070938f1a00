"""The hand-off's framing (engines/handoff.py): pure, no sockets."""

from __future__ import annotations

import json

import pytest

from modelrunner.engines.handoff import (
    ANSWER,
    DONE,
    GO,
    MAX_FRAME,
    REQUEST,
    STREAM,
    FrameError,
    FrameReader,
    HandoffResult,
    answer_frame,
    done_frame,
    frame,
    parse_answer,
    parse_request,
    request_frame,
)

FRAMES = [
    request_frame("/v1/chat/completions", True, b'{"stream": true}\n{odd}'),
    frame(STREAM),
    frame(GO),
    done_frame(HandoffResult(True, True, (34, 20)), b"data: {}\n\n"),
]


@pytest.mark.parametrize("step", [1, 2, 5, 7, 1000])
def test_frames_split_anywhere_come_out_whole_and_in_order(step: int) -> None:
    stream = b"".join(FRAMES)
    reader = FrameReader()
    found = []
    for start in range(0, len(stream), step):
        reader.feed(stream[start : start + step])
        while (got := reader.next()) is not None:
            found.append(got)
    assert [kind for kind, _ in found] == [REQUEST, STREAM, GO, DONE]
    assert reader.next() is None


def test_a_request_keeps_its_target_echo_and_body() -> None:
    reader = FrameReader()
    reader.feed(request_frame("/v1/completions", False, b'{"a": "b\\nc"}\n'))
    got = reader.next()
    assert got is not None and got[0] == REQUEST
    assert parse_request(got[1]) == ("/v1/completions", False, b'{"a": "b\\nc"}\n')


def test_an_answer_keeps_its_status_type_headers_and_body() -> None:
    reader = FrameReader()
    reader.feed(answer_frame(503, b'{"error": {}}', "application/json", {"Retry-After": "1"}))
    got = reader.next()
    assert got is not None and got[0] == ANSWER
    assert parse_answer(got[1]) == (503, "application/json", {"Retry-After": "1"}, b'{"error": {}}')


@pytest.mark.parametrize(
    ("result", "echo"),
    [
        (HandoffResult(True, True, (3, 7)), b""),
        (HandoffResult(False, False, None), b"data: x\n\n"),
    ],
)
def test_done_carries_the_outcome_then_the_echo(result: HandoffResult, echo: bytes) -> None:
    reader = FrameReader()
    reader.feed(done_frame(result, echo))
    got = reader.next()
    assert got is not None and got[0] == DONE
    head, _, rest = got[1].partition(b"\n")
    prompt, completion = result.usage or (None, None)
    assert json.loads(head) == {
        "clean": result.clean,
        "finished": result.finished,
        "prompt_tokens": prompt,
        "completion_tokens": completion,
    }
    assert rest == echo


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"X\x00\x00\x00\x00", "unknown frame kind"),
        (b"R" + (MAX_FRAME + 1).to_bytes(4, "big"), "over"),
    ],
)
def test_broken_framing_is_an_error_naming_what_is_wrong(data: bytes, message: str) -> None:
    reader = FrameReader()
    reader.feed(data)
    with pytest.raises(FrameError, match=message):
        reader.next()
