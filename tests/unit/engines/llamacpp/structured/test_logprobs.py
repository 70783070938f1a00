"""logprobs / top_logprobs: the request fields, the numbers and OpenAI's shape."""

from __future__ import annotations

import math
from typing import Any

import pytest

from modelrunner.engines.llamacpp.structured import logprobs
from modelrunner.engines.llamacpp.structured.errors import InvalidRequest


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({}, None),
        ({"logprobs": False}, None),
        ({"logprobs": True}, 0),
        ({"logprobs": True, "top_logprobs": 20}, 20),
    ],
)
def test_requested(body: dict[str, Any], expected: int | None) -> None:
    assert logprobs.requested(body) == expected


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"logprobs": "yes"}, "logprobs"),
        ({"logprobs": True, "top_logprobs": 21}, "top_logprobs"),
        ({"logprobs": True, "top_logprobs": -1}, "top_logprobs"),
        ({"logprobs": True, "top_logprobs": 2.0}, "top_logprobs"),
        ({"top_logprobs": 3}, "top_logprobs"),
    ],
)
def test_bad_requests(body: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        logprobs.requested(body)
    assert caught.value.param == param


def test_top_is_a_sorted_log_softmax() -> None:
    logits = [0.0, 2.0, -1.0, 2.0, 5.0]
    ids, values, row = logprobs.top(logits, 3)
    assert ids == [4, 1, 3]  # ties keep the lower id first
    norm = math.log(sum(math.exp(x) for x in logits))
    assert values == pytest.approx([5.0 - norm, 2.0 - norm, 2.0 - norm])
    assert sum(math.exp(v) for v in row) == pytest.approx(1.0)
    assert logprobs.top(logits, 0)[:2] == ([], [])


def test_entry_shape_and_partial_utf8() -> None:
    entry = logprobs.entry(b"\xf0\x9f", -0.25, [(b"\xf0\x9f", -0.25), (b" a", float("-inf"))])
    assert entry == {
        "token": "\ufffd",
        "logprob": -0.25,
        "bytes": [240, 159],
        "top_logprobs": [
            {"token": "\ufffd", "logprob": -0.25, "bytes": [240, 159]},
            {"token": " a", "logprob": -9999.0, "bytes": [32, 97]},
        ],
    }
    assert logprobs.choice_logprobs([entry]) == {"content": [entry], "refusal": None}
