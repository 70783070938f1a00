"""Check a manifest document against schema/model-manifest.schema.json.

Every problem is reported (jsonschema's ``iter_errors``), each turned into a plain
sentence located at the offending key or value.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Iterator
from functools import cache
from importlib import resources
from pathlib import Path as FsPath
from typing import Any

from jsonschema import Draft202012Validator, ValidationError, validators

from modelrunner.manifest.problems import Path

SCHEMA_FILE = "model-manifest.schema.json"
ENGINE_SECTIONS = ("llama.cpp", "vllm", "diffusers")


@cache
def schema() -> dict[str, Any]:
    """The published schema: packaged in wheels, read from schema/ in a source checkout."""
    packaged = resources.files("modelrunner.manifest") / SCHEMA_FILE
    if packaged.is_file():
        text = packaged.read_text(encoding="utf-8")
    else:
        text = (FsPath(__file__).parents[3] / "schema" / SCHEMA_FILE).read_text(encoding="utf-8")
    loaded: dict[str, Any] = json.loads(text)
    return loaded


def _is_integer(checker: object, instance: object) -> bool:
    # JSON Schema counts 2.0 as an integer; YAML authors who write 2.0 mean a float,
    # and the Structs refuse it, so lint refuses it too.
    return isinstance(instance, int) and not isinstance(instance, bool)


@cache
def _validator() -> Draft202012Validator:
    checker = Draft202012Validator.TYPE_CHECKER.redefine("integer", _is_integer)
    validator_class = validators.extend(Draft202012Validator, type_checker=checker)  # type: ignore[no-untyped-call]
    validator: Draft202012Validator = validator_class(schema())
    return validator


class SchemaProblem:
    __slots__ = ("at_key", "message", "path")

    def __init__(self, path: Path, message: str, *, at_key: bool = False) -> None:
        self.path = path
        self.message = message
        self.at_key = at_key


def check(document: Any) -> list[SchemaProblem]:
    """All schema problems of one document, in document order of their paths."""
    problems: list[SchemaProblem] = []
    for error in _validator().iter_errors(document):
        problems.extend(_describe(error, document))
    seen: set[tuple[Path, str]] = set()
    unique = []
    for problem in problems:
        if (problem.path, problem.message) not in seen:
            seen.add((problem.path, problem.message))
            unique.append(problem)
    return unique


def _describe(error: ValidationError, document: Any) -> Iterator[SchemaProblem]:
    path: Path = tuple(error.absolute_path)
    # jsonschema types these as "maybe unset"; on errors from iter_errors they are set.
    keyword: Any = error.validator
    value: Any = error.validator_value
    instance: Any = error.instance
    sub = error.schema if isinstance(error.schema, dict) else {}

    if "propertyNames" in error.relative_schema_path:
        hint = _hint(_property_names_schema(error))
        yield SchemaProblem((*path, str(instance)), f"key {instance!r} is not {hint}", at_key=True)
    elif keyword == "additionalProperties":
        allowed = sorted(sub.get("properties", {}))
        for key in instance:
            if key not in allowed:
                yield SchemaProblem((*path, key), _unknown_key(key, allowed), at_key=True)
    elif keyword is None and isinstance(document, dict):
        # A `false` subschema: the if/then that forbids other engines' sections
        # (jsonschema leaves the property out of the path there, so find it).
        engine = document.get("engine")
        for section in ENGINE_SECTIONS:
            if section in document and section != engine:
                yield SchemaProblem(
                    (section,),
                    f"settings for {section} under engine {engine}; remove them or change `engine`",
                    at_key=True,
                )
    elif keyword == "not" and not path:
        present = [s for s in ENGINE_SECTIONS if s in instance]
        yield SchemaProblem(
            (present[-1],),
            f"settings for several engines ({', '.join(present)}); "
            "keep one section or set `engine`",
            at_key=True,
        )
    elif keyword == "required":
        for key in value:
            if key not in instance:
                yield SchemaProblem(path, f"missing required key {key!r}")
    elif keyword == "type":
        expected = " or ".join(value) if isinstance(value, list) else value
        hint = f" ({sub['x-type-hint']})" if "x-type-hint" in sub else ""
        yield SchemaProblem(path, f"expected {_article(expected)}{hint}, got {_shown(instance)}")
    elif keyword == "enum":
        options = ", ".join(repr(v) for v in value)
        message = f"must be one of {options}; got {_shown(instance)}"
        if isinstance(instance, str):
            close = difflib.get_close_matches(instance, [str(v) for v in value], n=1)
            if close:
                message += f" (did you mean {close[0]!r}?)"
        yield SchemaProblem(path, message)
    elif keyword == "const":
        yield SchemaProblem(path, f"must be {value!r}; got {_shown(instance)}")
    elif keyword == "pattern":
        yield SchemaProblem(path, f"{_shown(instance)} is not {_hint(sub)}")
    elif keyword in _BOUNDS:
        got = len(instance) if keyword in _SIZES else _shown(instance)
        yield SchemaProblem(path, f"must {_BOUNDS[keyword].format(value)}; got {got}")
    elif keyword == "anyOf" and "duration" in str(error.schema_path) + str(sub):
        yield SchemaProblem(
            path,
            f"{_shown(instance)} is not a duration (30s, 5m, 1h30m, 0, -1 or whole seconds)",
        )
    elif keyword == "uniqueItems":
        yield SchemaProblem(path, "items must be unique")
    else:
        yield SchemaProblem(path, error.message)


_BOUNDS = {
    "minimum": "be >= {}",
    "maximum": "be <= {}",
    "exclusiveMinimum": "be > {}",
    "exclusiveMaximum": "be < {}",
    "minLength": "have at least {} characters",
    "maxLength": "have at most {} characters",
    "minItems": "have at least {} items",
    "maxItems": "have at most {} items",
    "maxProperties": "have at most {} keys",
}
_SIZES = {"minLength", "maxLength", "minItems", "maxItems", "maxProperties"}


def _property_names_schema(error: ValidationError) -> dict[str, Any]:
    # error.schema is the propertyNames subschema itself
    return error.schema if isinstance(error.schema, dict) else {}


def _hint(sub: dict[str, Any]) -> str:
    hint = sub.get("x-pattern-hint")
    return str(hint) if hint else f"matching {sub.get('pattern')!r}"


def _unknown_key(key: str, allowed: list[str]) -> str:
    close = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
    if close:
        return f"unknown key {key!r} (did you mean {close[0]!r}?)"
    return f"unknown key {key!r} (allowed here: {', '.join(allowed)})"


def _article(word: str) -> str:
    words = {"object": "a mapping", "array": "a list", "integer": "an integer", "null": "null"}
    return words.get(word, f"a {word}")


def _shown(instance: Any) -> str:
    if isinstance(instance, dict):
        return "a mapping"
    if isinstance(instance, list):
        return "a list"
    if isinstance(instance, bool):
        return str(instance).lower()
    if instance is None:
        return "null"
    text = repr(instance)
    return text if len(text) <= 60 else text[:57] + "..."
