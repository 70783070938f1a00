"""JSON Schema -> grammar: keywords a grammar cannot enforce are refused by name, and the
range rules added to llama-cpp-python's converter match exactly the numbers in range."""

from __future__ import annotations

import json
import random
import re
from typing import Any

import pytest

from modelrunner.engines.llamacpp.structured.errors import InvalidRequest
from modelrunner.engines.llamacpp.structured.formats import call_grammar
from modelrunner.engines.llamacpp.structured.schema_grammar import (
    JSON_CHAR,
    check_schema,
    integer_rule,
    number_rule,
    schema_to_gbnf,
)
from modelrunner.engines.llamacpp.structured.tools import read_tools

P = "response_format.json_schema.schema"


@pytest.mark.parametrize(
    ("schema", "param", "words"),
    [
        ({"type": "number", "multipleOf": 5}, f"{P}.multipleOf", "'multipleOf' is not supported"),
        (
            {"type": "object", "properties": {"mail": {"type": "string", "format": "email"}}},
            f"{P}.properties.mail.format",
            "format 'email'",
        ),
        ({"type": "array", "items": {}, "uniqueItems": True}, f"{P}.uniqueItems", "uniqueItems"),
        ({"oneOf": [{"type": "string"}, {"type": "integer"}]}, f"{P}.oneOf", "use anyOf"),
        ({"allOf": [{"type": "string"}]}, f"{P}.allOf", "allOf"),
        ({"type": "string", "not": {"const": "x"}}, f"{P}.not", "'not'"),
        (
            {"type": "object", "patternProperties": {"^a": {}}},
            f"{P}.patternProperties",
            "patternProperties",
        ),
        ({"type": "string", "pattern": "[a-z]+"}, f"{P}.pattern", "anchored"),
        ({"type": "object", "properties": {}, "required": ["x"]}, f"{P}.required", "'x'"),
        ({"$ref": "https://example.com/s.json"}, f"{P}.$ref", "local references"),
        ({"type": ["string", "null"], "maxLength": 3}, f"{P}.maxLength", "list of types"),
        ({"type": "number", "minimum": 0.5}, f"{P}.minimum", "fractional"),
        ({"type": "number", "exclusiveMinimum": 0}, f"{P}.exclusiveMinimum", "not supported"),
        (
            {"type": "integer", "minimum": 5, "maximum": 1},
            P,
            "between the minimum 5 and the maximum 1",
        ),
        ({"type": "array", "minItems": 2}, f"{P}.minItems", "needs 'items'"),
        (
            {"type": "array", "items": {"type": "string"}, "maxItems": 100000},
            f"{P}.maxItems",
            "over 512",
        ),
        ({"type": "object", "properties": {"a": True}}, f"{P}.properties.a", "boolean schemas"),
        ({"type": "strin"}, f"{P}.type", "not a valid JSON Schema"),
        (
            {"anyOf": [{"type": "integer", "multipleOf": 2}]},
            f"{P}.anyOf[0].multipleOf",
            "multipleOf",
        ),
        (["not", "an", "object"], P, "must be a JSON object"),
    ],
)
def test_refused_keywords_are_named(schema: Any, param: str, words: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        check_schema(schema, P)
    assert caught.value.param == param
    assert words in str(caught.value)


@pytest.mark.parametrize(
    "schema",
    [
        {
            "type": "object",
            "title": "T",
            "description": "d",
            "properties": {"a": {"type": "string", "description": "x"}},
        },
        {"type": "integer", "minimum": -5, "exclusiveMaximum": 10},
        {"type": "string", "format": "date-time"},
        {"type": "string", "pattern": "^[a-z]{2,5}$"},
        {"type": "array", "prefixItems": [{"type": "string"}, {"type": "integer"}], "items": False},
        {
            "$defs": {"p": {"type": "string"}},
            "type": "object",
            "properties": {"a": {"$ref": "#/$defs/p"}},
        },
        {"anyOf": [{"type": "string"}, {"type": "null"}]},
        {"type": "string", "enum": ["a", "b"], "maxLength": 1},
    ],
)
def test_accepted(schema: dict[str, Any]) -> None:
    check_schema(schema, P)


# --- range rules, checked through an equivalent regular expression -------------------------

_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|\[[^\]]*\]|\{\d+(?:,\d+)?\}|[()|?]|\s+')


def gbnf_regex(rule: str) -> re.Pattern[str]:
    """The regex of a GBNF body made only of literals, classes, groups and repetitions."""
    out = []
    for token in _TOKEN.findall(rule):
        if token.startswith('"'):
            out.append(re.escape(json.loads(token)))
        elif token == "(":
            out.append("(?:")
        elif not token.isspace():
            out.append(token)
    assert "".join(_TOKEN.findall(rule)) == rule, "unexpected GBNF in the rule"
    return re.compile("".join(out))


@pytest.mark.parametrize(
    ("low", "high"),
    [(-15, 120), (5, None), (None, -3), (0, 0), (None, None), (-1000, 999), (7, 7), (10, 19)],
)
def test_integer_rule_matches_exactly_the_range(low: int | None, high: int | None) -> None:
    regex = gbnf_regex(integer_rule(low, high))
    for n in range(-2100, 2100):
        inside = (low is None or n >= low) and (high is None or n <= high)
        assert bool(regex.fullmatch(str(n))) == inside, n
    for leading_zero in ("05", "-0", "007", "00"):
        assert not regex.fullmatch(leading_zero)


@pytest.mark.parametrize(
    ("low", "high"), [(0, 100), (-3, -1), (-2, 3), (1, 5), (None, 5), (0, None), (0, 0)]
)
def test_number_rule_matches_exactly_the_range(low: int | None, high: int | None) -> None:
    regex = gbnf_regex(number_rule(low, high))
    rng = random.Random(7)
    samples = [f"{rng.uniform(-150, 150):.{rng.randint(0, 3)}f}" for _ in range(3000)]
    samples += [
        "100",
        "100.0",
        "100.000",
        "100.5",
        "0",
        "-0.5",
        "-3.0",
        "-3.01",
        "5.0",
        "4.99",
        "0.0",
    ]
    for text in samples:
        value = float(text)
        inside = (low is None or value >= low) and (high is None or value <= high)
        if text.startswith("-0") and float(text) == 0:
            continue  # "-0" spellings: either way is valid JSON for 0
        assert bool(regex.fullmatch(text)) == inside, text


# --- the converter (llama-cpp-python) -------------------------------------------------------

ISSUE_SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 20},
        "kind": {"enum": ["cat", "dog"]},
        "age": {"type": "integer", "minimum": 0, "maximum": 30},
        "weight": {"type": "number", "minimum": 1, "maximum": 80},
        "tags": {"type": "array", "items": {"type": "string"}, "minItems": 1, "maxItems": 3},
    },
    "required": ["name", "kind", "age", "weight", "tags"],
    "additionalProperties": False,
}


def test_grammar_for_a_schema_with_ranges() -> None:
    grammar = schema_to_gbnf(ISSUE_SCHEMA, P)
    rules = dict(line.split(" ::= ", 1) for line in grammar.splitlines())
    assert rules["age"] == f"({integer_rule(0, 30)}) space"
    assert rules["weight"] == f"({number_rule(1, 80)}) space"
    assert '"\\"cat\\""' in rules["kind"]
    assert rules["root"].startswith('"{" space name-kv "," space kind-kv')


def test_empty_schema_is_any_value() -> None:
    rules = dict(line.split(" ::= ", 1) for line in schema_to_gbnf({}, P).splitlines())
    assert rules["root"] == "object | array | string | number | boolean | null"


def test_forced_call_grammar_names_each_function_and_its_arguments() -> None:
    tools = read_tools(
        {
            "tools": [
                {"type": "function", "function": {"name": "pet", "parameters": ISSUE_SCHEMA}},
                {"type": "function", "function": {"name": "now"}},
            ]
        }
    )
    grammar = call_grammar("hermes", tools.functions, many=False)
    rules = dict(line.split(" ::= ", 1) for line in grammar.splitlines())
    assert rules["root"] == "block"
    assert rules["block"] == '"<tool_call>\\n" call "\\n</tool_call>"'
    assert rules["call"] == "fn0-call | fn1-call"
    assert rules["fn0-call"] == '"{\\"name\\": \\"pet\\", \\"arguments\\": " fn0-args "}"'
    assert rules["fn0-args-age"] == f"({integer_rule(0, 30)}) space"
    many = dict(
        line.split(" ::= ", 1)
        for line in call_grammar("mistral", tools.functions, many=True).splitlines()
    )
    assert many["root"] == '"[TOOL_CALLS][" call (", " call (", " call (", " call)?)?)? "]"'


def test_a_bad_tool_schema_names_the_tool() -> None:
    tools = read_tools(
        {
            "tools": [
                {
                    "type": "function",
                    "function": {"name": "f", "parameters": {"type": "object", "minProperties": 1}},
                }
            ]
        }
    )
    with pytest.raises(InvalidRequest) as caught:
        call_grammar("hermes", tools.functions, many=False)
    assert caught.value.param == "tools[0].function.parameters.minProperties"


def test_strings_refuse_raw_control_characters() -> None:
    rules = dict(
        line.split(" ::= ", 1) for line in schema_to_gbnf({"type": "string"}, P).splitlines()
    )
    assert rules["char"] == JSON_CHAR
    assert r"\x00-\x1F" in JSON_CHAR
