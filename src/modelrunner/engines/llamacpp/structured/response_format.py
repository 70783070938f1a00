"""``response_format`` -> the JSON Schema answers must satisfy (None: free text)."""

from __future__ import annotations

from typing import Any, Final

from modelrunner.engines.llamacpp.structured.errors import InvalidRequest

ANY_OBJECT: Final = {"type": "object"}


def answer_schema(body: dict[str, Any]) -> tuple[dict[str, Any], str, bool] | None:
    """(schema, its request field, strict) of the answer, or None when it is free text."""
    response_format = body.get("response_format")
    if response_format is None:
        return None
    if not isinstance(response_format, dict):
        raise InvalidRequest("response_format must be an object", "response_format")
    kind = response_format.get("type")
    if kind == "text":
        return None
    if kind == "json_object":
        return ANY_OBJECT, "response_format", False
    if kind == "json_schema":
        spec = response_format.get("json_schema")
        if not isinstance(spec, dict):
            raise InvalidRequest(
                "response_format.json_schema must be an object with name and schema",
                "response_format.json_schema",
            )
        if not isinstance(spec.get("name"), str):
            raise InvalidRequest(
                "response_format.json_schema.name must be a string",
                "response_format.json_schema.name",
            )
        strict = spec.get("strict")
        if strict is not None and not isinstance(strict, bool):
            raise InvalidRequest(
                "response_format.json_schema.strict must be true or false",
                "response_format.json_schema.strict",
            )
        schema = spec.get("schema", ANY_OBJECT)
        return schema, "response_format.json_schema.schema", bool(strict)
    raise InvalidRequest(
        f"response_format.type must be 'text', 'json_object' or 'json_schema', got {kind!r}",
        "response_format.type",
    )
