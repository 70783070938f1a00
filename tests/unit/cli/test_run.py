"""`mr run`'s pure parts: the server address and the stream parser."""

from __future__ import annotations

import pytest

from modelrunner.cli.run import api_key, deltas, server_url
from modelrunner.errors import ModelRunnerError


@pytest.mark.parametrize(
    ("env", "url"),
    [({}, "http://127.0.0.1:12434"), ({"MR_HOST": "0.0.0.0", "MR_PORT": "8080"}, "http://127.0.0.1:8080"),
     ({"MR_HOST": "::1"}, "http://[::1]:12434"), ({"MR_HOST": "box"}, "http://box:12434")],
)  # fmt: skip
def test_server_url(env: dict[str, str], url: str) -> None:
    assert server_url(env) == url


def test_api_key() -> None:
    assert api_key({"MR_API_KEY": "a", "MR_API_KEYS": "b,c"}) == "a"
    assert api_key({"MR_API_KEYS": " b , c"}) == "b"
    assert api_key({}) is None


def test_deltas() -> None:
    lines = [
        'data: {"choices": [{"delta": {"role": "assistant"}}]}',
        "",
        'data: {"choices": [{"delta": {"content": "Hel"}}]}',
        ": keep-alive",
        'data: {"choices": [{"delta": {"content": "lo"}}]}',
        "data: [DONE]",
        'data: {"choices": [{"delta": {"content": "ignored"}}]}',
    ]
    assert "".join(deltas(lines)) == "Hello"


def test_error_event_raises() -> None:
    lines = ['data: {"error": {"message": "engine died", "type": "server_error"}}']
    with pytest.raises(ModelRunnerError, match="engine died"):
        list(deltas(lines))
