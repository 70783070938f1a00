"""Fuzzing the proxied routes of a running app with malformed bodies: random bytes, deep
nesting and text in random encodings, sent with a length (the short way) and chunked (the
Litestar fallback). Never a 5xx; every refusal is an OpenAI error with a message."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modelrunner.registry import Registry
from modelrunner.settings import Settings
from tests.fixtures.http import RunningApp, free_port, serve_in_thread

PREFIXES = ("/v1", "/engines/v1", "/engines/llama.cpp/v1")
OPERATIONS = ("chat/completions", "completions", "embeddings", "images/generations")
ROUTES = [f"{prefix}/{op}" for prefix in PREFIXES for op in OPERATIONS]
ENCODINGS = ["utf-8", "utf-16", "utf-16-le", "utf-32", "latin-1", "cp1252", "shift_jis"]


@pytest.fixture(scope="module")
def app() -> Iterator[RunningApp]:
    # No model is served: a body that gets through validation is a 404, never an engine's.
    with serve_in_thread(Registry(), Settings(port=free_port())) as running:
        yield running


@pytest.fixture(scope="module")
def client(app: RunningApp) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=app.base_url, timeout=30) as c:
        yield c


def _nested(depth: int, opener: str) -> bytes:
    closer = {"[": "]", '{"a":': "}"}[opener]
    return b'{"model": "m", "messages": ' + (opener * depth).encode() + b"1" + (
        closer * depth).encode() + b"}"  # fmt: skip


def _encoded(text: str, encoding: str) -> bytes:
    document = '{"model": "m", "prompt": "%s", "messages": [{"role": "user", "content": "%s"}]}'
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    return (document % (escaped, escaped)).encode(encoding, errors="replace")


def _spliced(junk: bytes, at: int) -> bytes:
    """Valid UTF-8 JSON with random (often invalid) bytes put inside a string."""
    valid = _encoded("x" * 40, "utf-8")
    return valid[:at] + junk + valid[at:]


bodies = st.one_of(
    st.binary(max_size=2048),
    st.builds(_nested, st.integers(1, 200_000), st.sampled_from(["[", '{"a":'])),
    st.builds(_encoded, st.text(max_size=200), st.sampled_from(ENCODINGS)),
    st.builds(_spliced, st.binary(min_size=1, max_size=8), st.integers(0, 120)),
)


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow,
          HealthCheck.function_scoped_fixture, HealthCheck.data_too_large])  # fmt: skip
@given(
    route=st.sampled_from(ROUTES),
    body=bodies,
    charset=st.sampled_from(["", "; charset=utf-8", "; charset=utf-16", "; charset=latin-1"]),
    chunked=st.booleans(),
)
def test_malformed_bodies_never_get_a_5xx(
    client: httpx.Client, route: str, body: bytes, charset: str, chunked: bool
) -> None:
    content: bytes | Iterator[bytes] = iter([body]) if chunked else body
    answer = client.post(route, content=content,
                         headers={"content-type": "application/json" + charset})  # fmt: skip
    assert answer.status_code < 500, answer.text
    assert answer.status_code in (400, 404, 413), answer.text
    error = answer.json()["error"]
    assert error["message"]
    if answer.status_code == 400 and "JSON" in error["message"]:
        assert error["param"] is None


@pytest.mark.parametrize("chunked", [False, True])
@pytest.mark.parametrize(
    ("body", "reason"),
    [(_nested(100_000, "["), "JSON nested too deeply"),
     (_nested(100_000, '{"a":'), "JSON nested too deeply"),
     (b'{"model": "m", "messages": [{"role": "user", "content": "caf\xe9 \xc3("}]}', "UTF-8")],
)  # fmt: skip
def test_the_issues_bodies_get_a_400(
    client: httpx.Client, body: bytes, reason: str, chunked: bool
) -> None:
    content: bytes | Iterator[bytes] = iter([body]) if chunked else body
    answer = client.post("/v1/chat/completions", content=content,
                         headers={"content-type": "application/json"})  # fmt: skip
    assert answer.status_code == 400
    error = answer.json()["error"]
    assert error["param"] is None
    assert reason in error["message"]
