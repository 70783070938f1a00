"""JSON Schema -> an llguidance grammar, and the check after generation of what it leaves out.

llguidance's compiler enforces almost all of JSON Schema through the token mask: ``$ref``
(recursive, with siblings), ``allOf``, ``anyOf``, ``oneOf`` (as anyOf), type lists,
``const``/``enum`` of any value, ``patternProperties``, ``additionalProperties``,
``min/maxProperties``, tuples, fractional and exclusive bounds, ``multipleOf``,
unanchored patterns and the common formats. With ``lenient`` it ignores, as the
specification asks, keywords it does not know (``id``, ``x-*``, vendor keys), and warns
about the few it knows but cannot enforce (``uniqueItems``, ``not``, ``if/then/else``,
``contains``, ``dependentRequired``, ``propertyNames``...). Those are the honest part:

- ``strict: true`` refuses them with a 400 naming the keyword and where it is;
- otherwise every answer is validated with ``jsonschema`` after generation, and one that
  fails is reported as such (``schema_invalid``), never passed off as valid.

Whitespace is bounded as llama-server's converter bounds it: between two tokens of JSON at
most one space, or a newline and up to 20 spaces or tabs. The model may still indent as
it learnt to (compact JSON made SmolLM2 loop on `1,1,1,...`), but cannot loop on whitespace.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Final

import jsonschema
import jsonschema.exceptions
import llguidance

from modelrunner.engines.llamacpp.structured.errors import InvalidRequest

Schema = dict[str, Any] | bool

# The compiler's options, applied to every schema (its own "x-guidance" cannot loosen them).
OPTIONS: Final = {
    "whitespace_pattern": r"(?: |\n[ \t]{0,20})?",
    "lenient": True,
    "coerce_one_of": True,
}
# Past these a schema is hostile or broken, not real: refused before any work is done.
MAX_DEPTH: Final = 64
MAX_SCHEMA_BYTES: Final = 1_000_000
MAX_INTEGER: Final = 10**16 - 1
# What says an object may hold more than its ``properties``.
OPEN_KEYWORDS: Final = frozenset(
    {"additionalProperties", "patternProperties", "unevaluatedProperties", "propertyNames"}
)
# Lower than llguidance's own defaults so one request's schema costs bounded time.
LIMITS: Final[dict[str, Any]] = {"max_grammar_size": 200_000, "initial_lexer_fuel": 1_000_000}
DRAFTS: Final = (
    jsonschema.Draft202012Validator,
    jsonschema.Draft7Validator,
    jsonschema.Draft4Validator,
)
# RFC 3986's URI-reference characters (percent-escapes, no spaces or brackets beyond its
# own): llguidance takes any string for this format.
FORMAT_PATTERNS: Final = {
    "uri-reference": r"^([A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=]|%[0-9A-Fa-f]{2})*$",
}
_UNIMPLEMENTED: Final = re.compile(r"Unimplemented keys: \[(.*?)\]")
_UNKNOWN_FORMAT: Final = re.compile(r"Unknown format: (\S+)")


@dataclass(frozen=True)
class SchemaGrammar:
    """A schema compiled for the token mask, and what is only checked after generation."""

    grammar: str  # for llguidance.LLMatcher
    schema: Schema
    checked_only: tuple[str, ...]  # keywords (and "format:x") the mask does not enforce
    draft: Any = jsonschema.Draft202012Validator  # the validator class of its draft

    def validate(self, text: str) -> str | None:
        """None when ``text`` is a JSON document valid against the schema, else why not."""
        return validation_error(self.schema, text, self.draft)


def compile_schema(schema: Any, param: str, strict: bool = False) -> SchemaGrammar:
    """The grammar for answers valid against ``schema``, or InvalidRequest (a 400) naming
    ``param`` (the schema's place in the request) and the fault."""
    if not isinstance(schema, dict | bool):
        raise InvalidRequest("the schema must be a JSON Schema object", param)
    # Not sorted: the answer writes properties in the order the schema lists them.
    text = json.dumps(schema, ensure_ascii=False)
    if len(text) > MAX_SCHEMA_BYTES:
        raise InvalidRequest(f"the schema is over {MAX_SCHEMA_BYTES} bytes", param)
    return _compiled(text, param, strict)


@functools.lru_cache(maxsize=256)
def _compiled(text: str, param: str, strict: bool) -> SchemaGrammar:
    schema = json.loads(text)
    _check_depth(schema, param)
    draft = _draft(schema, param)
    grammar = llguidance.LLMatcher.grammar_from_json_schema(
        for_generation(schema),
        overrides=OPTIONS,  # type: ignore[arg-type]
    )
    failed, messages = llguidance.LLMatcher.validate_grammar_with_warnings(
        grammar, limits=llguidance.LLParserLimits(**LIMITS)
    )
    if failed:
        raise InvalidRequest(f"the schema cannot be enforced: {_first_line(messages)}", param)
    checked_only = tuple(sorted(_not_enforced(messages)))
    if strict and checked_only:
        keyword = checked_only[0]
        where = next(_paths_of(schema, keyword.removeprefix("format:")), "")
        raise InvalidRequest(
            f"'{keyword}' cannot be enforced while generating; with strict: true the schema "
            "may only use what can be (leave strict out to have it checked after generation)",
            param + where,
        )
    return SchemaGrammar(grammar, schema, checked_only, draft)


# The finish_reason of an answer that ended but failed its schema's check.
SCHEMA_INVALID: Final = "schema_invalid"


def checked(choice: dict[str, Any], schema: SchemaGrammar | None, text: str) -> None:
    """Check a finished choice (of an answer, or a stream's last chunk) against the schema:
    ``schema_check`` says what only this check enforced and whether the text passed; a text
    that fails gets finish_reason ``schema_invalid`` and ``schema_error`` saying where.
    An answer cut by max_tokens is left as it is: "length" already says it is incomplete."""
    if schema is None or choice.get("finish_reason") != "stop":
        return
    error = schema.validate(text)
    # What was enforced while generating (the rest of the schema) and what only now, for
    # the request inspector (`mr requests`) and the curious client.
    choice["schema_check"] = {"checked_only": list(schema.checked_only), "valid": error is None}
    if error is not None:
        choice["finish_reason"] = SCHEMA_INVALID
        choice["schema_error"] = error


def grammar_key(grammar: str) -> str:
    return hashlib.sha256(grammar.encode()).hexdigest()


def validation_error(schema: Schema, text: str, draft: Any = None) -> str | None:
    try:
        instance = json.loads(text)
    except ValueError as exc:
        return f"the answer is not JSON: {exc}"
    try:
        validator = _validator(json.dumps(schema), draft)
        error = jsonschema.exceptions.best_match(validator.iter_errors(instance))
    except (RecursionError, jsonschema.exceptions.SchemaError) as exc:  # a $ref loop, say
        return f"the answer could not be checked: {type(exc).__name__}"
    if error is None:
        return None
    where = "".join(f"/{p}" for p in error.absolute_path) or "/"
    return f"at {where}: {error.message[:300]}"


@functools.lru_cache(maxsize=256)
def _validator(text: str, draft: Any) -> Any:
    schema = json.loads(text)
    cls = draft or jsonschema.validators.validator_for(schema)
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


def _check_depth(schema: Any, param: str) -> None:
    stack: list[tuple[Any, int]] = [(schema, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise InvalidRequest(f"the schema is nested deeper than {MAX_DEPTH} levels", param)
        children = (
            node.values() if isinstance(node, dict) else node if isinstance(node, list) else ()
        )
        stack.extend((child, depth + 1) for child in children)


def _draft(schema: Any, param: str) -> Any:
    """The validator class of the schema's draft. Without ``$schema``, the newest of
    2020-12, 7 and 4 whose meta-schema accepts it (draft-4 tuples are common in real
    schemas); none: a 400 at the keyword 2020-12 finds at fault."""
    if isinstance(schema, dict) and "$schema" in schema:
        candidates = [jsonschema.validators.validator_for(schema)]
    else:
        candidates = list(DRAFTS)
    for cls in candidates:  # is_valid stops at the first error: the common case is cheap
        if _meta_validator(cls).is_valid(schema):
            return cls
    first = jsonschema.exceptions.best_match(_meta_validator(candidates[0]).iter_errors(schema))
    assert first is not None
    where = "".join(f".{p}" for p in first.absolute_path)
    raise InvalidRequest(
        f"the schema is not valid JSON Schema: {first.message[:300]}", param + where
    )


@functools.cache
def _meta_validator(cls: Any) -> Any:
    return cls(cls.META_SCHEMA)


def for_generation(schema: Any) -> Any:
    """The schema as the grammar should see it (``_narrowed``)."""
    return _narrowed(schema, closed=not _uses(schema, "allOf"))


def _narrowed(node: Any, closed: bool) -> Any:
    """The schema as the grammar should see it, narrowed as llama-server narrows it (every
    answer of the narrowed schema is valid against the schema as sent, which the answer is
    still checked against):

    - an object that lists ``properties`` and says nothing of others gets no others: else a
      small model invents properties (it copied the schema into a tool call's arguments)
      until max_tokens. Not done where ``allOf`` merges objects (``closed`` False), since
      closing each part would refuse the other parts' properties, nor where ``required``
      names a property the object does not list;
    - integers get 16 digits at most, else a small model writes digits until max_tokens;
    - the ``format``s llguidance takes loosely are written as the patterns they mean."""
    if isinstance(node, list):
        return [_narrowed(child, closed) for child in node]
    if not isinstance(node, dict):
        return node
    out = {key: _narrowed(child, closed) for key, child in node.items()}
    listed = out.get("properties")
    required = out.get("required")
    if (
        closed
        and isinstance(listed, dict)
        and listed
        and not OPEN_KEYWORDS & out.keys()
        # A required property it does not list must stay possible.
        and (not isinstance(required, list) or set(required) <= listed.keys())
    ):
        out["additionalProperties"] = False
    if out.get("type") == "integer":
        if "maximum" not in out and "exclusiveMaximum" not in out:
            out["maximum"] = MAX_INTEGER
        if "minimum" not in out and "exclusiveMinimum" not in out:
            out["minimum"] = -MAX_INTEGER
    fmt = out.get("format")
    pattern = FORMAT_PATTERNS.get(fmt) if isinstance(fmt, str) else None
    if pattern is not None:
        del out["format"]
        if "pattern" in out:
            return {"allOf": [out, {"pattern": pattern}]}
        out["pattern"] = pattern
    return out


def _uses(node: Any, keyword: str) -> bool:
    return next(_paths_of(node, keyword), None) is not None


def _not_enforced(messages: list[str]) -> Iterator[str]:
    for message in messages:
        if match := _UNIMPLEMENTED.search(message):
            yield from json.loads(f"[{match.group(1)}]")
        if match := _UNKNOWN_FORMAT.search(message):
            yield f"format:{match.group(1)}"


def _paths_of(node: Any, keyword: str, path: str = "") -> Iterator[str]:
    """Where ``keyword`` (or the format ``keyword``) appears, as request-field suffixes."""
    if isinstance(node, dict):
        if keyword in node or node.get("format") == keyword:
            yield path + (f".{keyword}" if keyword in node else ".format")
        for key, child in node.items():
            yield from _paths_of(child, keyword, f"{path}.{key}")
    elif isinstance(node, list):
        for i, child in enumerate(node):
            yield from _paths_of(child, keyword, f"{path}[{i}]")


def _first_line(messages: list[str]) -> str:
    return (messages[0] if messages else "unknown error").splitlines()[0][:300]
