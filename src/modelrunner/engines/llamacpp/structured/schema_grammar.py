"""JSON Schema -> GBNF grammar, or a 400 naming the keyword the grammar cannot express.

The conversion is llama-cpp-python's ``SchemaConverter``, with number and integer ranges
(``minimum``, ``maximum``, ...) added: the converter drops them silently. Before it runs, the
schema is checked keyword by keyword against what the grammar can really enforce, because
the converter ignores what it does not know: a schema it cannot express must fail loudly,
never come back as unconstrained output.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Iterator
from typing import Any, Final

from modelrunner.engines.llamacpp.structured.errors import InvalidRequest

Schema = dict[str, Any]

# Keywords that describe and never constrain: dropped before conversion.
ANNOTATIONS: Final = frozenset(
    {"title", "description", "default", "examples", "$schema", "$id", "$comment"}
    | {"deprecated", "readOnly", "writeOnly", "$defs", "definitions"}
)
# What each kind of schema may constrain. Anything else (multipleOf, uniqueItems, not,
# allOf, oneOf, if/then/else, patternProperties, minProperties, ...) is refused.
COMMON: Final = frozenset({"type", "enum", "const", "anyOf", "$ref"})
BY_TYPE: Final[dict[str, frozenset[str]]] = {
    "object": frozenset({"properties", "required", "additionalProperties"}),
    "array": frozenset({"items", "prefixItems", "minItems", "maxItems"}),
    "string": frozenset({"minLength", "maxLength", "pattern", "format"}),
    "integer": frozenset({"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"}),
    "number": frozenset({"minimum", "maximum"}),
    "boolean": frozenset(),
    "null": frozenset(),
}
FORMATS: Final = frozenset(
    {"date", "time", "date-time", "uuid"} | {f"uuid{i}" for i in range(1, 6)}
)
# Repetition counts become nested rules; past these the grammar grows too large to be useful.
MAX_REPEAT: Final = 512
MAX_DIGITS: Final = 15  # as the converter's own integer rule
# A character inside a JSON string: anything but a quote, a backslash or a control
# character, or an escape.
JSON_CHAR: Final = (
    r'[^"\\\x7F\x00-\x1F] | "\\" (["\\/bfnrt] | "u" ' + " ".join(["[0-9a-fA-F]"] * 4) + ")"
)


def schema_to_gbnf(schema: Any, param: str) -> str:
    """The GBNF grammar whose sentences are exactly JSON documents valid against ``schema``.

    ``param`` names the schema's place in the request, for the error message."""
    builder = GrammarBuilder()
    builder.schema_rule(schema, "", param)
    return builder.grammar()


class GrammarBuilder:
    """One grammar assembled from schemas and rules of our own (tool calls)."""

    def __init__(self) -> None:
        self._converter = _converter_class()(
            prop_order={}, allow_fetch=False, dotall=False, raw_pattern=False
        )

    def schema_rule(self, schema: Any, name: str, param: str) -> str:
        """Add the rules for ``schema``; return the name of the rule matching it ("" -> root)."""
        check_schema(schema, param)
        try:
            resolved = self._converter.resolve_refs(_strip_annotations(schema), name or "root")
            return str(self._converter.visit(resolved, name))
        except (AssertionError, ValueError, KeyError, TypeError, RecursionError) as exc:
            message = f"the schema cannot be turned into a grammar: {exc}"
            raise InvalidRequest(message, param) from None

    def rule(self, name: str, body: str) -> str:
        return str(self._converter._add_rule(name, body))

    def literal(self, text: str) -> str:
        return str(self._converter._format_literal(text))

    def grammar(self) -> str:
        return str(self._converter.format_grammar())


def check_schema(schema: Any, param: str) -> None:
    """Raise InvalidRequest for a malformed schema or the first keyword a grammar cannot enforce."""
    if not isinstance(schema, dict):
        raise InvalidRequest("the schema must be a JSON object", param)
    from jsonschema import SchemaError
    from jsonschema.validators import validator_for

    try:
        validator_for(schema).check_schema(schema)
    except SchemaError as exc:
        where = "".join(f".{p}" if isinstance(p, str) else f"[{p}]" for p in exc.path)
        raise InvalidRequest(f"not a valid JSON Schema: {exc.message}", param + where) from None
    for path, message in _problems(schema, param, root=schema):
        raise InvalidRequest(message, path)


def _problems(schema: Any, path: str, root: Schema) -> Iterator[tuple[str, str]]:
    """(path, message) for every keyword of ``schema`` a grammar would not enforce."""
    if not isinstance(schema, dict):
        yield path, "boolean schemas are not supported here; use {} or leave the keyword out"
        return
    keywords = set(schema) - ANNOTATIONS
    kind = schema.get("type")
    if "$ref" in schema:
        ref = schema["$ref"]
        if not (isinstance(ref, str) and ref.startswith("#/")):
            yield f"{path}.$ref", f"only local references (#/...) are supported, got {ref!r}"
        extra = sorted(keywords - {"$ref"})
        if extra:
            yield f"{path}.{extra[0]}", f"'{extra[0]}' beside '$ref' is not supported"
        return
    if "anyOf" in schema:
        extra = sorted(keywords - {"anyOf"})
        if extra:
            yield f"{path}.{extra[0]}", f"'{extra[0]}' beside 'anyOf' is not supported"
        for i, sub in enumerate(schema["anyOf"]):
            yield from _problems(sub, f"{path}.anyOf[{i}]", root)
        return
    if isinstance(kind, list):
        extra = sorted(keywords - {"type"})
        if extra:
            yield f"{path}.{extra[0]}", f"'{extra[0]}' with a list of types is not supported"
        return
    if "enum" in schema or "const" in schema:
        return  # the output is one of the listed values, whatever else the schema says
    allowed = COMMON | (BY_TYPE.get(kind, frozenset()) if isinstance(kind, str) else _untyped())
    for keyword in sorted(keywords - allowed):
        hint = " (use anyOf)" if keyword == "oneOf" else ""
        yield f"{path}.{keyword}", f"the keyword '{keyword}' is not supported{hint}"
    yield from _type_problems(schema, kind, path, root)


@functools.cache
def _untyped() -> frozenset[str]:
    # Without "type", the converter infers objects and arrays from their keywords only.
    return BY_TYPE["object"] | frozenset({"items", "prefixItems", "minItems", "maxItems"})


def _type_problems(schema: Schema, kind: Any, path: str, root: Schema) -> Iterator[tuple[str, str]]:
    properties = schema.get("properties", {})
    for name, sub in properties.items():
        yield from _problems(sub, f"{path}.properties.{name}", root)
    for name in schema.get("required", []):
        if name not in properties:
            yield f"{path}.required", f"required property '{name}' is not in 'properties'"
    extra = schema.get("additionalProperties")
    if isinstance(extra, dict):
        yield from _problems(extra, f"{path}.additionalProperties", root)
    yield from _array_problems(schema, kind, path, root)
    if kind == "string":
        yield from _string_problems(schema, path)
    if kind in ("integer", "number"):
        yield from _range_problems(schema, kind, path)


def _array_problems(
    schema: Schema, kind: Any, path: str, root: Schema
) -> Iterator[tuple[str, str]]:
    items, prefix = schema.get("items"), schema.get("prefixItems")
    if prefix is not None:
        if items not in (None, False):
            yield f"{path}.items", "'items' beside 'prefixItems' is not supported"
        for keyword in ("minItems", "maxItems"):
            if keyword in schema:
                yield f"{path}.{keyword}", f"'{keyword}' beside 'prefixItems' is not supported"
        for i, sub in enumerate(prefix):
            yield from _problems(sub, f"{path}.prefixItems[{i}]", root)
    elif isinstance(items, dict):
        yield from _problems(items, f"{path}.items", root)
    elif items is not None and items is not False:
        yield f"{path}.items", "'items' must be a schema"
    elif kind == "array" or "minItems" in schema or "maxItems" in schema:
        for keyword in ("minItems", "maxItems"):
            if keyword in schema:
                yield f"{path}.{keyword}", f"'{keyword}' needs 'items' beside it"
    for keyword in ("minItems", "maxItems"):
        if schema.get(keyword, 0) > MAX_REPEAT:
            yield f"{path}.{keyword}", f"'{keyword}' over {MAX_REPEAT} is not supported"


def _string_problems(schema: Schema, path: str) -> Iterator[tuple[str, str]]:
    pattern, fmt = schema.get("pattern"), schema.get("format")
    lengths = [k for k in ("minLength", "maxLength") if k in schema]
    if pattern is not None:
        if not (pattern.startswith("^") and pattern.endswith("$")):
            yield f"{path}.pattern", "a pattern must be anchored: start with ^ and end with $"
        for other in [*lengths, "format"] if fmt is not None else lengths:
            yield f"{path}.{other}", f"'{other}' beside 'pattern' is not supported"
    elif fmt is not None:
        if fmt not in FORMATS:
            yield (
                f"{path}.format",
                f"format '{fmt}' is not supported ({', '.join(sorted(FORMATS))})",
            )
        for other in lengths:
            yield f"{path}.{other}", f"'{other}' beside 'format' is not supported"
    for keyword in lengths:
        if schema[keyword] > MAX_REPEAT:
            yield f"{path}.{keyword}", f"'{keyword}' over {MAX_REPEAT} is not supported"


def _range_problems(schema: Schema, kind: str, path: str) -> Iterator[tuple[str, str]]:
    for keyword in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
        value = schema.get(keyword)
        if value is None:
            continue
        if kind == "number" and value != math.floor(value):
            yield f"{path}.{keyword}", f"a fractional '{keyword}' ({value}) is not supported"
        if abs(value) >= 10**MAX_DIGITS:
            yield f"{path}.{keyword}", f"'{keyword}' must have at most {MAX_DIGITS} digits"
    low, high = bounds(schema)
    if low is not None and high is not None and low > high:
        yield path, f"no {kind} lies between the minimum {low} and the maximum {high}"


def bounds(schema: Schema) -> tuple[int | None, int | None]:
    """Inclusive whole-number bounds of an integer or number schema (exclusive ones folded in)."""
    low, high = schema.get("minimum"), schema.get("maximum")
    low = None if low is None else math.ceil(low)
    high = None if high is None else math.floor(high)
    if (x := schema.get("exclusiveMinimum")) is not None:
        low = max(low, math.floor(x) + 1) if low is not None else math.floor(x) + 1
    if (x := schema.get("exclusiveMaximum")) is not None:
        high = min(high, math.ceil(x) - 1) if high is not None else math.ceil(x) - 1
    return low, high


def _strip_annotations(schema: Any) -> Any:
    """A copy without annotations (the converter trips on some), keeping the $defs it resolves."""
    if isinstance(schema, list):
        return [_strip_annotations(x) for x in schema]
    if not isinstance(schema, dict):
        return schema
    out: Schema = {}
    for key, value in schema.items():
        if key in ("properties", "$defs", "definitions") and isinstance(value, dict):
            out[key] = {name: _strip_annotations(sub) for name, sub in value.items()}
        elif key in ("enum", "const") or key not in ANNOTATIONS:
            out[key] = _strip_annotations(value) if key not in ("enum", "const") else value
    return out


# --- ranges as grammar --------------------------------------------------------------------


def integer_rule(low: int | None, high: int | None) -> str:
    """GBNF for the integers in [low, high] (None: unbounded), written without leading zeros."""
    alternatives = []
    if high is None or high >= 0:
        alternatives += _naturals(max(low, 0) if low is not None else 0, high)
    if low is None or low < 0:
        smallest = max(1, -high) if high is not None else 1
        alternatives += [f'"-" ({a})' for a in _naturals(smallest, None if low is None else -low)]
    return " | ".join(alternatives)


def number_rule(low: int | None, high: int | None) -> str:
    """GBNF for the decimals in [low, high] with whole-number bounds (no exponent).

    x = ±(I + F), I the integral part, 0 <= F < 1: every I strictly inside the range takes any
    fraction; I at the far bound only a zero one."""
    fraction = f'("." [0-9]{{1,{MAX_DIGITS}}})?'
    zeros = f'("." "0"{{1,{MAX_DIGITS}}})?'
    alternatives = []

    def side(sign: str, first: int, last: int | None) -> None:
        if last is not None and last < first:
            return
        inner = _naturals(first, None if last is None else last - 1) if last != first else []
        if inner:
            alternatives.append(f"{sign}({' | '.join(inner)}) {fraction}")
        if last is not None:
            alternatives.append(f'{sign}"{last}" {zeros}')

    if high is None or high >= 0:
        side("", max(low, 0) if low is not None else 0, high)
    if low is None or low < 0:
        side('"-" ', max(-high, 0) if high is not None else 0, None if low is None else -low)
    return " | ".join(alternatives)


def _naturals(low: int, high: int | None) -> list[str]:
    """Alternatives matching the whole numbers in [low, high] (high None: up to MAX_DIGITS)."""
    if high is not None and high < low:
        return []
    top = high if high is not None else 10 ** len(str(low)) - 1
    out: list[str] = []
    for width in range(len(str(low)), len(str(top)) + 1):
        first = max(low, 10 ** (width - 1) if width > 1 else 0)
        last = min(top, 10**width - 1)
        if first <= last:
            out += _same_width(str(first), str(last))
    if high is None and len(str(low)) < MAX_DIGITS:  # every longer number
        out.append(f"[1-9] {_digits(len(str(low)), MAX_DIGITS - 1)}")
    return out


def _digits(least: int, most: int) -> str:
    if least == most:
        return "[0-9]" if least == 1 else f"[0-9]{{{least}}}"
    return f"[0-9]{{{least},{most}}}"


def _same_width(a: str, b: str) -> list[str]:
    """Alternatives matching the digit strings from a to b, both of one width."""
    if a == b:
        return [json.dumps(a)]
    rest = len(a) - 1
    if rest == 0:
        return [f"[{a}-{b}]"]
    if a[0] == b[0]:
        return [f'"{a[0]}" ({" | ".join(_same_width(a[1:], b[1:]))})']
    out = []
    lo, hi = int(a[0]), int(b[0])
    if a[1:] != "0" * rest:
        out.append(f'"{a[0]}" ({" | ".join(_same_width(a[1:], "9" * rest))})')
        lo += 1
    tail_full = b[1:] == "9" * rest
    if not tail_full:
        hi -= 1
    if lo <= hi:
        digit = f'"{lo}"' if lo == hi else f"[{lo}-{hi}]"
        out.append(f"{digit} {_digits(rest, rest)}")
    if not tail_full:
        out.append(f'"{b[0]}" ({" | ".join(_same_width("0" * rest, b[1:]))})')
    return out


@functools.cache
def _converter_class() -> Any:
    """llama-cpp-python's SchemaConverter, taught ranges and the empty schema (any value)."""
    from llama_cpp import llama_grammar

    PRIMITIVE_RULES: Any = llama_grammar.PRIMITIVE_RULES
    RESERVED_NAMES: Any = llama_grammar.RESERVED_NAMES
    SchemaConverter: Any = llama_grammar.SchemaConverter

    # The converter's string character lets raw control characters (a newline) through,
    # which JSON forbids inside strings: the model wrote one and the answer did not parse.
    json_char = llama_grammar.BuiltinRule(JSON_CHAR, [])

    # Built with type() so that the module type-checks whether llama_cpp is installed or not.
    def add_primitive(self: Any, name: str, rule: Any) -> Any:
        return SchemaConverter._add_primitive(self, name, json_char if name == "char" else rule)

    def visit(self: Any, schema: Schema, name: str) -> Any:
        rule_name = name + "-" if name in RESERVED_NAMES else name or "root"
        kind = schema.get("type")
        ranged = any(k in schema for k in BY_TYPE["integer"])
        if kind in ("integer", "number") and ranged and not {"enum", "const"} & set(schema):
            low, high = bounds(schema)
            body = integer_rule(low, high) if kind == "integer" else number_rule(low, high)
            return self._add_rule(rule_name, f"({body}) space")
        if not schema:
            return self._add_primitive(
                "root" if rule_name == "root" else "value", PRIMITIVE_RULES["value"]
            )
        return SchemaConverter.visit(self, schema, name)

    return type(
        "RangeSchemaConverter",
        (SchemaConverter,),
        {"_add_primitive": add_primitive, "visit": visit},
    )
