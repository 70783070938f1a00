"""The tool-call syntaxes models are trained on: parsing their output back into calls, and
the grammar that forces a call in that syntax.

- ``hermes`` (Hermes, Qwen, and the preamble of templates without tools):
  ``<tool_call>{"name": ..., "arguments": {...}}</tool_call>``, one block per call.
- ``llama3`` (Llama 3.1-3.3): the whole answer is ``{"name": ..., "parameters": {...}}``,
  optionally after ``<|python_tag|>``; several calls separated by ``;``.
- ``mistral``: ``[TOOL_CALLS][{"name": ..., "arguments": {...}}, ...]``, or the newer
  ``[TOOL_CALLS]name[ARGS]{...}``.

A parser never raises: output that does not parse as calls is plain content.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

from modelrunner.engines.llamacpp.structured.schema_grammar import GrammarBuilder
from modelrunner.engines.llamacpp.structured.tools import Function

ToolFormat = Literal["hermes", "llama3", "mistral"]
FORMATS: Final[tuple[ToolFormat, ...]] = ("hermes", "llama3", "mistral")
# The texts that mark calls; a model may have them as special tokens, which the engine
# must then render for the parsers to see them.
MARKERS: Final = (
    "<tool_call>",
    "</tool_call>",
    "[TOOL_CALLS]",
    "[ARGS]",
    "[CALL_ID]",
    "<|python_tag|>",
)
# Parallel calls a grammar allows at most: a small model forced into a call may otherwise
# repeat calls until max_tokens.
MAX_FORCED_CALLS: Final = 4


@dataclass(frozen=True)
class Call:
    name: str
    arguments: str  # a JSON object, as text


@dataclass(frozen=True)
class Parsed:
    content: str | None
    calls: tuple[Call, ...]


class _NotACall(ValueError):
    pass


def parse(fmt: ToolFormat, text: str) -> Parsed:
    """The calls in a model's answer, or the answer as content if it holds no well-formed call."""
    try:
        content, calls = _PARSERS[fmt](text)
    except (_NotACall, ValueError, TypeError, AttributeError, RecursionError):
        return Parsed(text or None, ())
    if not calls:  # the text as it was, markers and all
        return Parsed(text or None, ())
    return Parsed(content or None, tuple(calls))


def _call(obj: Any, *argument_keys: str) -> Call:
    if not isinstance(obj, dict) or not isinstance(obj.get("name"), str):
        raise _NotACall("a call is an object with a name")
    arguments: Any = next((obj[k] for k in argument_keys if k in obj), {})
    if isinstance(arguments, str):  # some models send the arguments as a JSON string
        arguments = json.loads(arguments)
    if not isinstance(arguments, dict):
        raise _NotACall("arguments must be an object")
    return Call(obj["name"], json.dumps(arguments, ensure_ascii=False))


_HERMES_BLOCK: Final = re.compile(r"<tool_call>(.*?)(?:</tool_call>|\Z)", re.DOTALL)


def _hermes(text: str) -> tuple[str, list[Call]]:
    calls = [
        _call(json.loads(m.group(1)), "arguments", "parameters")
        for m in _HERMES_BLOCK.finditer(text)
    ]
    return _HERMES_BLOCK.sub("", text).strip(), calls


def _json_values(text: str, separators: str) -> Iterator[Any]:
    """The JSON values of ``text`` one after another, with ``separators`` between them."""
    decoder = json.JSONDecoder()
    position = 0
    while True:
        while position < len(text) and text[position] in separators:
            position += 1
        if position == len(text):
            return
        value, position = decoder.raw_decode(text, position)
        yield value


def _llama3(text: str) -> tuple[str, list[Call]]:
    body = text.strip().removeprefix("<|python_tag|>").strip()
    if not body.startswith("{"):
        raise _NotACall("a Llama 3 call starts with {")
    return "", [_call(v, "parameters", "arguments") for v in _json_values(body, " \t\r\n;")]


_MISTRAL_NAMED: Final = re.compile(r"\s*([A-Za-z0-9_-]+)(?:\[CALL_ID\][A-Za-z0-9]+)?\[ARGS\]")


def _mistral(text: str) -> tuple[str, list[Call]]:
    if "[TOOL_CALLS]" not in text:
        return text.strip(), []
    content, _, rest = text.partition("[TOOL_CALLS]")
    calls: list[Call] = []
    if rest.lstrip().startswith("["):
        for value in _json_values(rest, " \t\r\n"):
            if not isinstance(value, list):
                raise _NotACall("[TOOL_CALLS] is followed by a list")
            calls += [_call(v, "arguments", "parameters") for v in value]
        return content.strip(), calls
    decoder = json.JSONDecoder()
    for piece in rest.split("[TOOL_CALLS]"):
        position = 0
        while position < len(piece.rstrip()):
            match = _MISTRAL_NAMED.match(piece, position)
            if match is None:
                raise _NotACall("[TOOL_CALLS] name[ARGS]{...} expected")
            arguments, position = decoder.raw_decode(piece, match.end())
            calls.append(_call({"name": match.group(1), "arguments": arguments}, "arguments"))
    return content.strip(), calls


_PARSERS: Final = {"hermes": _hermes, "llama3": _llama3, "mistral": _mistral}


# --- grammar: a call is forced -----------------------------------------------------------


def call_grammar(
    fmt: ToolFormat,
    functions: Sequence[Function],
    many: bool,
    answer: tuple[dict[str, Any], str] | None = None,
) -> str:
    """GBNF for one call (``many``: one to MAX_FORCED_CALLS) of the given functions, in the
    format's syntax, with arguments valid against each function's parameters schema.

    ``answer``: the JSON Schema (and its request field) of a plain answer allowed instead of
    calls (None: a call is required); for tool_choice "auto" beside a response_format."""
    builder = GrammarBuilder()
    objects = []
    for i, function in enumerate(functions):
        arguments = builder.schema_rule(function.parameters, f"fn{i}-args", function.param)
        key = "parameters" if fmt == "llama3" else "arguments"
        head = builder.literal(f'{{"name": {json.dumps(function.name)}, "{key}": ')
        objects.append(builder.rule(f"fn{i}-call", f'{head} {arguments} "}}"'))
    call = builder.rule("call", " | ".join(objects))
    repeat = MAX_FORCED_CALLS - 1 if many and fmt != "llama3" else 0
    if fmt == "hermes":
        block = builder.rule("block", f'"<tool_call>\\n" {call} "\\n</tool_call>"')
        body = block + "".join(f' ("\\n" {block}' for _ in range(repeat)) + ")?" * repeat
    elif fmt == "mistral":
        items = call + "".join(f' (", " {call}' for _ in range(repeat)) + ")?" * repeat
        body = f'"[TOOL_CALLS][" {items} "]"'
    else:
        body = call
    if answer is not None:
        body = f"({body}) | {builder.schema_rule(answer[0], 'answer', answer[1])}"
    builder.rule("root", body)
    return builder.grammar()
