"""The grammar that forces a tool call in the model's call syntax (llguidance's Lark).

Each call is one JSON object, ``{"name": <the function>, "arguments": <its parameters>}``,
compiled from a schema of our own with the function's ``parameters`` inside it, so the
arguments get all of the JSON Schema support of ``json_schema`` (the same compact JSON,
the same leniency).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, Final

from modelrunner.engines.llamacpp.structured.formats import ToolFormat
from modelrunner.engines.llamacpp.structured.json_schema import (
    OPTIONS,
    compile_schema,
    for_generation,
)
from modelrunner.engines.llamacpp.structured.tools import Function

# Parallel calls a grammar allows at most: a small model forced into a call may otherwise
# repeat calls until max_tokens.
MAX_FORCED_CALLS: Final = 4
DEFINITIONS: Final = ("$defs", "definitions")


def call_grammar(
    fmt: ToolFormat,
    functions: Sequence[Function],
    many: bool,
    answer: tuple[dict[str, Any], str] | None = None,
) -> str:
    """A grammar for one call (``many``: one to MAX_FORCED_CALLS) of the given functions, in
    the format's syntax, with arguments valid against each function's parameters schema.

    ``answer``: the JSON Schema (and its request field) of a plain answer allowed instead of
    calls (None: a call is required); for tool_choice "auto" beside a response_format."""
    key = "parameters" if fmt == "llama3" else "arguments"
    calls = [f"%json {_json(_call_schema(function, key))}" for function in functions]
    rules = ["call: " + " | ".join(calls)]
    repeat = MAX_FORCED_CALLS - 1 if many and fmt != "llama3" else 0
    if fmt == "hermes":
        rules.append('block: "<tool_call>\\n" call "\\n</tool_call>"')
        body = f'block ("\\n" block){{0,{repeat}}}' if repeat else "block"
    elif fmt == "mistral":
        items = f'call (", " call){{0,{repeat}}}' if repeat else "call"
        body = f'"[TOOL_CALLS][" {items} "]"'
    else:
        body = "call"
    if answer is not None:
        compile_schema(*answer)  # a 400 for a bad schema, as without tools
        rules.append(f"answer: %json {_json(_with_options(for_generation(answer[0])))}")
        body = f"({body}) | answer"
    return "\n".join([f"start: {body}", *rules])


def _call_schema(function: Function, key: str) -> dict[str, Any]:
    compile_schema(function.parameters, function.param)  # a 400 for a bad schema
    arguments = for_generation(function.parameters)
    # The parameters' definitions go to the root, where their "#/$defs/..." refs point.
    shared = {
        k: arguments.pop(k) for k in DEFINITIONS if isinstance(arguments, dict) and k in arguments
    }
    return _with_options(
        {
            "type": "object",
            "properties": {"name": {"const": function.name}, key: arguments},
            "required": ["name", key],
            "additionalProperties": False,
            **shared,
        }
    )


def _with_options(schema: Any) -> dict[str, Any]:
    if isinstance(schema, dict):
        return {**schema, "x-guidance": OPTIONS}
    return {"allOf": [schema], "x-guidance": OPTIONS}


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
