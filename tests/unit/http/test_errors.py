"""Exceptions and engine answers -> OpenAI-shaped error bodies (pure, table-driven)."""

from __future__ import annotations

import msgspec
import pytest
from litestar.exceptions import NotFoundException, ValidationException

from modelrunner.errors import ModelUnavailable, UnknownModel, UpstreamFailed
from modelrunner.http.errors import from_exception, from_upstream

WHERE = "POST /v1/chat/completions"


@pytest.mark.parametrize(
    ("exc", "status", "type_", "code", "param"),
    [
        (
            UnknownModel("The model 'x' does not exist"),
            404,
            "invalid_request_error",
            "model_not_found",
            "model",
        ),
        (
            ModelUnavailable("The model 'x' is starting"),
            503,
            "server_error",
            "model_unavailable",
            None,
        ),
        (UpstreamFailed("engine died"), 502, "server_error", "upstream_failed", None),
        (
            NotFoundException(detail="Unknown engine 'foo'"),
            404,
            "invalid_request_error",
            "not_found",
            None,
        ),
        (RuntimeError("secret internals"), 500, "server_error", None, None),
    ],
)
def test_exceptions_map_to_status_and_openai_fields(
    exc: Exception, status: int, type_: str, code: str | None, param: str | None
) -> None:
    found = from_exception(exc, WHERE)
    body = msgspec.json.decode(found.encode())
    assert found.status == status
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert (body["error"]["type"], body["error"]["code"], body["error"]["param"]) == (
        type_,
        code,
        param,
    )


def test_unavailable_says_when_to_retry_in_whole_seconds() -> None:
    found = from_exception(ModelUnavailable("starting", retry_after=2.2), WHERE)
    assert dict(found.headers) == {"retry-after": "3"}


def test_an_unexpected_exception_never_shows_its_text() -> None:
    found = from_exception(RuntimeError("password=hunter2"), WHERE)
    assert b"hunter2" not in found.encode()
    assert WHERE in found.body.error.message


def test_validation_names_the_offending_field() -> None:
    exc = ValidationException(
        detail="Validation failed",
        extra=[
            {"message": "Expected `str`, got `int` - at `$.model`", "key": "data", "source": "body"}
        ],
    )
    found = from_exception(exc, WHERE)
    assert (found.status, found.body.error.param) == (400, "model")
    assert "Expected `str`, got `int`" in found.body.error.message
    assert WHERE in found.body.error.message


def test_missing_field_is_the_param() -> None:
    exc = ValidationException(
        extra=[{"message": "Object missing required field `messages`", "key": "data"}]
    )
    assert from_exception(exc, WHERE).body.error.param == "messages"


def test_engine_openai_error_is_kept() -> None:
    body = (
        b'{"error": {"message": "context too long", "type": "invalid_request_error", '
        b'"param": "messages", "code": "ctx"}}'
    )
    found = from_upstream(400, body, WHERE)
    assert (found.status, found.body.error.message, found.body.error.param) == (
        400,
        "context too long",
        "messages",
    )
    assert found.body.error.code == "ctx"


def test_engine_fastapi_validation_becomes_400_with_location() -> None:
    body = (
        b'{"detail": [{"loc": ["body", "max_tokens"], "msg": "Input should be a valid integer"}]}'
    )
    found = from_upstream(422, body, WHERE)
    assert found.status == 400
    assert "max_tokens: Input should be a valid integer" in found.body.error.message


def test_engine_fault_becomes_502_without_traceback() -> None:
    body = b'Traceback (most recent call last):\n  File "x.py", line 1\nValueError: boom'
    found = from_upstream(500, body, WHERE)
    assert (found.status, found.body.error.code) == (502, "upstream_failed")
    assert "Traceback" not in found.body.error.message
    assert "ValueError: boom" in found.body.error.message
    assert "HTTP 500" in found.body.error.message


def test_engine_plain_text_404_is_wrapped() -> None:
    found = from_upstream(404, b"Not Found", WHERE)
    assert found.status == 404
    assert found.body.error.message == f"The engine rejected {WHERE} (HTTP 404): Not Found"


def test_a_busy_engine_503_is_passed_on_with_retry_after() -> None:
    body = b'{"error": {"message": "the queue is full", "type": "server_error"}}'
    found = from_upstream(503, body, WHERE)
    assert (found.status, found.body.error.code) == (503, "engine_busy")
    assert ("Retry-After", "1") in found.headers
    assert "the queue is full" in found.body.error.message
