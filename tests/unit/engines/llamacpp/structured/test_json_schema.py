"""JSON Schema -> llguidance grammar: each feature with an instance the grammar accepts and
one it refuses, the keywords only checked after generation, and hostile schemas as 400s.

The grammars run over a byte vocabulary (one token per byte), so what is tested is the
grammar itself, with no model."""

# ruff: noqa: E501  (the tables read best one case per line)
from __future__ import annotations

import json
from typing import Any, ClassVar

import llguidance
import pytest

from modelrunner.engines.llamacpp.structured.errors import InvalidRequest
from modelrunner.engines.llamacpp.structured.json_schema import (
    SCHEMA_INVALID,
    checked,
    compile_schema,
)
from modelrunner.engines.llamacpp.structured.mask import GrammarMasks

P = "response_format.json_schema.schema"


class _Bytes:
    """A tokenizer whose tokens are the 256 bytes, and an end-of-sequence token."""

    eos_token_id = 256
    bos_token_id = None
    tokens: ClassVar = [bytes([i]) for i in range(256)] + [b"\xff</s>"]
    special_token_ids: ClassVar = [256]

    def __call__(self, text: bytes) -> list[int]:
        return list(text)


TOKENIZER = llguidance.LLTokenizer(llguidance.TokenizerWrapper(_Bytes()))


MASKS = GrammarMasks(lambda: TOKENIZER)


def accepts(schema: Any, text: str) -> bool:
    matcher = MASKS.matcher(compile_schema(schema, P).grammar)
    tokens = list(text.encode())
    return matcher.consume_tokens(tokens) and matcher.is_accepting()


REF = {"$ref": "#/$defs/node", "$defs": {"node": {"type": "object", "properties": {
    "v": {"type": "integer"}, "next": {"$ref": "#/$defs/node"}}, "required": ["v"],
    "additionalProperties": False}}}  # fmt: skip
FEATURES: list[tuple[str, Any, str, str]] = [
    # (feature, schema, accepted, refused)
    ("type list", {"type": ["string", "null"]}, "null", "1"),
    ("const object", {"const": {"a": [1, 2]}}, '{"a":[1,2]}', '{"a":[1]}'),
    ("enum of values", {"enum": [1, "x", None]}, '"x"', '"y"'),
    ("recursive $ref", REF, '{"v":1,"next":{"v":2}}', '{"v":1,"next":{}}'),
    ("definitions (draft 4)", {"$ref": "#/definitions/a", "definitions": {"a": {"type": "boolean"}}}, "true", "1"),
    ("$ref with siblings", {"$defs": {"s": {"type": "string"}}, "$ref": "#/$defs/s", "maxLength": 2}, '"ab"', '"abc"'),
    ("allOf merged", {"allOf": [{"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}, {"properties": {"b": {"type": "string"}}, "required": ["b"]}]}, '{"a":1,"b":"x"}', '{"a":1}'),
    ("anyOf", {"anyOf": [{"type": "integer"}, {"type": "boolean"}]}, "true", '"t"'),
    ("oneOf", {"oneOf": [{"type": "integer"}, {"type": "string"}]}, '"s"', "null"),
    ("additionalProperties false", {"type": "object", "properties": {"a": {"type": "integer"}}, "additionalProperties": False}, '{"a":1}', '{"a":1,"b":2}'),
    ("additionalProperties schema", {"type": "object", "additionalProperties": {"type": "integer"}}, '{"x":1}', '{"x":"1"}'),
    ("patternProperties", {"type": "object", "patternProperties": {"^x-": {"type": "integer"}}, "additionalProperties": False}, '{"x-a":1}', '{"y":1}'),
    ("min/maxProperties", {"type": "object", "minProperties": 1, "maxProperties": 1}, '{"a":1}', "{}"),
    ("tuple items (draft 4)", {"type": "array", "items": [{"type": "integer"}, {"type": "string"}], "additionalItems": False}, '[1,"a"]', '[1,"a",2]'),
    ("prefixItems", {"type": "array", "prefixItems": [{"type": "boolean"}], "items": False}, "[true]", "[true,1]"),
    ("min/maxItems", {"type": "array", "items": {"type": "integer"}, "minItems": 1, "maxItems": 2}, "[1,2]", "[1,2,3]"),
    ("fractional minimum", {"type": "number", "minimum": 0.1}, "0.5", "0.05"),
    ("exclusiveMaximum", {"type": "integer", "exclusiveMaximum": 10}, "9", "10"),
    ("integer multipleOf", {"type": "integer", "multipleOf": 5}, "15", "16"),
    ("unanchored pattern", {"type": "string", "pattern": "ab+"}, '"xxabby"', '"xxa"'),
    ("anchored pattern", {"type": "string", "pattern": "^[a-z]{2}$"}, '"ab"', '"abc"'),
    ("minLength", {"type": "string", "minLength": 2}, '"ab"', '"a"'),
    ("format date-time", {"type": "string", "format": "date-time"}, '"2026-12-07T10:00:00Z"', '"yesterday"'),
    ("format date", {"type": "string", "format": "date"}, '"2026-12-07"', '"2026-13-07"'),
    ("format time", {"type": "string", "format": "time"}, '"10:00:00Z"', '"25:00"'),
    ("format duration", {"type": "string", "format": "duration"}, '"P3D"', '"3 days"'),
    ("format email", {"type": "string", "format": "email"}, '"a@b.io"', '"a.b.io"'),
    ("format hostname", {"type": "string", "format": "hostname"}, '"a.example"', '"a_b c"'),
    ("format ipv4", {"type": "string", "format": "ipv4"}, '"10.0.0.1"', '"10.0.0"'),
    ("format ipv6", {"type": "string", "format": "ipv6"}, '"::1"', '"1:::2:::3"'),
    ("format uuid", {"type": "string", "format": "uuid"}, '"123e4567-e89b-12d3-a456-426614174000"', '"123"'),
    ("format uri", {"type": "string", "format": "uri"}, '"https://a.example/x"', '"not a uri"'),
    ("format uri-reference", {"type": "string", "format": "uri-reference"}, '"/x?y"', '"a b"'),
    ("unknown keywords ignored", {"type": "integer", "id": "x", "x-kubernetes-int": True, "readonly": True, "links": []}, "1", '"1"'),
    ("bounded whitespace", {"type": "object", "properties": {"a": {"type": "integer"}}}, '{"a": 1}', '{"a":  1}'),
    ("an indented line", {"type": "array", "items": {"type": "integer"}}, "[\n  1,\n  2\n]", "[\n\n1]"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("feature", "schema", "good", "bad"), FEATURES, ids=[f[0] for f in FEATURES]
)
def test_the_grammar_enforces(feature: str, schema: Any, good: str, bad: str) -> None:
    assert accepts(schema, good), f"{feature}: {good} refused"
    assert not accepts(schema, bad), f"{feature}: {bad} accepted"


NOT_ENFORCED: list[tuple[Any, str]] = [
    ({"type": "array", "items": {"type": "integer"}, "uniqueItems": True}, "uniqueItems"),
    ({"type": "integer", "not": {"const": 3}}, "not"),
    ({"type": "string", "if": {"minLength": 2}, "then": {"pattern": "a"}}, "if"),
    ({"type": "array", "contains": {"const": 1}}, "contains"),
    ({"type": "object", "dependentRequired": {"a": ["b"]}}, "dependentRequired"),
]  # fmt: skip


@pytest.mark.parametrize(("schema", "keyword"), NOT_ENFORCED)
def test_what_no_grammar_enforces_is_checked_after(schema: Any, keyword: str) -> None:
    assert keyword in compile_schema(schema, P).checked_only


@pytest.mark.parametrize(("schema", "keyword"), NOT_ENFORCED)
def test_strict_refuses_what_is_only_checked_naming_it(schema: Any, keyword: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        compile_schema(schema, P, strict=True)
    assert keyword in str(caught.value)
    assert caught.value.param.startswith(P)


def test_strict_names_where_the_keyword_is() -> None:
    schema = {"type": "object", "properties": {"tags": {"type": "array", "uniqueItems": True}}}
    with pytest.raises(InvalidRequest) as caught:
        compile_schema(schema, P, strict=True)
    assert caught.value.param == P + ".properties.tags.uniqueItems"


def test_an_enforceable_schema_is_fine_strict() -> None:
    assert compile_schema(REF, P, strict=True).checked_only == ()


CHECKS: list[tuple[Any, str, str | None]] = [
    ({"type": "array", "uniqueItems": True}, "[1,1]", "at /: [1, 1] has non-unique elements"),
    ({"type": "array", "uniqueItems": True}, "[1,2]", None),
    ({"type": "integer", "not": {"const": 3}}, "3", "at /: 3 should not be valid under {'const': 3}"),
    ({"type": "object"}, "{", "the answer is not JSON"),
]  # fmt: skip


@pytest.mark.parametrize(("schema", "text", "error"), CHECKS)
def test_the_check_after_generation(schema: Any, text: str, error: str | None) -> None:
    choice: dict[str, Any] = {"finish_reason": "stop"}
    checked(choice, compile_schema(schema, P), text)
    assert choice["schema_check"]["valid"] == (error is None)
    if error is None:
        assert choice["finish_reason"] == "stop" and "schema_error" not in choice
    else:
        assert choice["finish_reason"] == SCHEMA_INVALID
        assert choice["schema_error"].startswith(error)


def test_a_cut_answer_is_left_as_length() -> None:
    choice: dict[str, Any] = {"finish_reason": "length"}
    checked(choice, compile_schema({"type": "object"}, P), '{"a":')
    assert choice == {"finish_reason": "length"}


def test_the_check_names_what_only_it_enforced() -> None:
    choice: dict[str, Any] = {"finish_reason": "stop"}
    checked(choice, compile_schema({"type": "array", "uniqueItems": True}, P), "[1,2]")
    assert choice["schema_check"] == {"checked_only": ["uniqueItems"], "valid": True}


def deep(n: int) -> Any:
    schema: Any = {"type": "integer"}
    for _ in range(n):
        schema = {"type": "array", "items": schema}
    return schema


# (name, schema, the 400's message, or None: it compiles, the mask bounded by llguidance's
# limits; a matcher that later fails on them ends the answer, which is then checked)
HOSTILE: list[tuple[str, Any, str | None]] = [
    ("not a schema", [1, 2], "must be a JSON Schema object"),
    ("bad type", {"type": "integr"}, "not valid JSON Schema"),
    ("deep nesting", deep(200), "nested deeper than 64 levels"),
    ("dangling $ref", {"$ref": "#/$defs/missing"}, "cannot be enforced"),
    ("cyclic $ref, no base case", {"$ref": "#/$defs/a", "$defs": {"a": {"$ref": "#/$defs/a"}}}, "cannot be compiled"),
    ("huge enum", {"enum": [f"value-{i}-{'x' * 40}" for i in range(50_000)]}, "over 1000000 bytes"),
    ("large enum", {"enum": [f"value-{i}" for i in range(15_000)]}, None),
    ("exploding pattern", {"type": "string", "pattern": "(a|aa|aaa){1,200}(b|bb){1,200}[a-z]{1,999}x{300}"}, None),
    ("backtracking pattern", {"type": "string", "pattern": "^(a+)+$"}, None),
]  # fmt: skip


@pytest.mark.parametrize(("name", "schema", "message"), HOSTILE, ids=[h[0] for h in HOSTILE])
def test_hostile_schemas_are_400s_or_compile(name: str, schema: Any, message: str | None) -> None:
    if message is None:
        MASKS.prepare(compile_schema(schema, P).grammar, P)
        return
    with pytest.raises(InvalidRequest) as caught:
        MASKS.prepare(compile_schema(schema, P).grammar, P)
    assert message in str(caught.value), str(caught.value)
    assert caught.value.param.startswith(P)


def test_the_same_schema_is_compiled_once() -> None:
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}}
    first = compile_schema(schema, P)
    again = compile_schema(json.loads(json.dumps(schema)), P)
    assert first is again


def test_listed_properties_close_an_object_for_generation_as_llama_server_does() -> None:
    """A small model otherwise invents properties until max_tokens; the answer is still
    checked against the schema as sent, which allows them."""
    listed = {"type": "object", "properties": {"a": {"type": "integer"}}}
    assert accepts(listed, '{"a":1}') and not accepts(listed, '{"a":1,"b":2}')
    assert accepts({**listed, "additionalProperties": True}, '{"a":1,"b":2}')
    assert accepts({"type": "object"}, '{"b":2}')  # nothing listed: anything goes
    merged = {"allOf": [listed, {"properties": {"b": {"type": "integer"}}}]}
    assert accepts(merged, '{"a":1,"b":2}')  # closing each part would refuse this
    unlisted = {**listed, "required": ["a", "id"]}  # closing it would make it unsatisfiable
    assert accepts(unlisted, '{"a":1,"id":2}') and not accepts(unlisted, '{"a":1}')


def test_a_grammar_is_compiled_once_per_vocabulary_and_copied_per_request() -> None:
    made: list[int] = []

    def tokenizer() -> Any:
        made.append(1)
        return TOKENIZER

    masks = GrammarMasks(tokenizer)
    grammar = compile_schema({"type": "array", "items": {"type": "boolean"}}, P).grammar
    masks.prepare(grammar, P)
    first, second = masks.matcher(grammar), masks.matcher(grammar)
    assert first is not second  # each request its own state
    assert first.consume_tokens(list(b"[true")) and not second.is_accepting()
    assert masks.cached() == 1 and made == [1]
