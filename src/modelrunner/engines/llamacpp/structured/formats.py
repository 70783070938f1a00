"""The tool-call syntaxes models are trained on: parsing their output back into calls (the
grammar that forces a call in that syntax is ``call_grammar``'s).

- ``hermes`` (Hermes, Qwen, and the preamble of templates without tools):
  ``<tool_call>{"name": ..., "arguments": {...}}</tool_call>``, one block per call.
- ``llama3`` (Llama 3.1-3.3): ``{"name": ..., "parameters": {...}}`` opening the answer, or
  after ``<|python_tag|>``; several calls separated by ``;``.
- ``mistral``: ``[TOOL_CALLS][{"name": ..., "arguments": {...}}, ...]``, or the newer
  ``[TOOL_CALLS]name[ARGS]{...}``.

A parser never raises. Text outside the calls is content; the markup never is (markers,
blocks that are not well-formed calls, a call the text ends inside: dropped).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Final, Literal

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


@dataclass(frozen=True)
class Call:
    name: str
    arguments: str  # a JSON object, as text


@dataclass(frozen=True)
class Parsed:
    """``content``: the text outside the calls (the whole text, untouched, when it holds no
    call markup); ``calls``: the well-formed calls in order; ``unfinished``: the text ended
    inside a call that could not be read (most likely cut by max_tokens), which is dropped."""

    content: str | None
    calls: tuple[Call, ...]
    unfinished: bool = False


# What a syntax's reader finds: the text outside calls, the calls, whether the text ended
# inside one; None when the text holds no call markup at all.
_Found = tuple[str, list[Call], bool] | None


def parse(fmt: ToolFormat, text: str) -> Parsed:
    """The calls in a model's answer and the text around them; never raises. Markup is never
    content: a marker, a block that is not a well-formed call, a call cut short are dropped
    (a client would otherwise get half a call as the answer's text)."""
    found = _PARSERS[fmt](text)
    if found is None:
        return Parsed(text or None, ())
    outside, calls, unfinished = found
    return Parsed(outside.strip() or None, tuple(calls), unfinished)


_DECODER: Final = json.JSONDecoder()


def _decode(text: str, position: int) -> tuple[Any, int] | None:
    """The JSON value at ``position`` and where it ends; None if there is none to read."""
    try:
        return _DECODER.raw_decode(text, position)
    except (ValueError, RecursionError):  # RecursionError: nesting deeper than json follows
        return None


def _skip(text: str, position: int, chars: str) -> int:
    while position < len(text) and text[position] in chars:
        position += 1
    return position


def _call(obj: Any, *argument_keys: str) -> Call | None:
    """The call an object describes; None if it is not one."""
    if not isinstance(obj, dict) or not isinstance(obj.get("name"), str):
        return None
    arguments: Any = next((obj[k] for k in argument_keys if k in obj), {})
    if isinstance(arguments, str):  # some models send the arguments as a JSON string
        decoded = _decode(arguments, _skip(arguments, 0, " \t\r\n"))
        if decoded is None or arguments[decoded[1] :].strip():
            return None
        arguments = decoded[0]
    if not isinstance(arguments, dict):
        return None
    return Call(obj["name"], json.dumps(arguments, ensure_ascii=False))


_TOOL_CALL: Final = "<tool_call>"
_TOOL_CALL_END: Final = "</tool_call>"


def _hermes(text: str) -> _Found:
    start = text.find(_TOOL_CALL)
    if start < 0:
        return None
    outside, calls, unfinished = [text[:start]], [], False
    while start >= 0:
        body = start + len(_TOOL_CALL)
        end, following = text.find(_TOOL_CALL_END, body), text.find(_TOOL_CALL, body)
        # A block ends at its closing tag, or where the next begins if the tag was left out.
        if end >= 0 and (following < 0 or end < following):
            inner, after = text[body:end], end + len(_TOOL_CALL_END)
        else:
            after = following if following >= 0 else len(text)
            inner = text[body:after]
        call = _hermes_call(inner)
        if call is not None:
            calls.append(call)
        elif end < 0 and following < 0:
            unfinished = True  # the text ends inside this block
        start = text.find(_TOOL_CALL, after)
        outside.append(text[after : start if start >= 0 else len(text)])
    return "".join(outside), calls, unfinished


def _hermes_call(inner: str) -> Call | None:
    decoded = _decode(inner, _skip(inner, 0, " \t\r\n"))
    if decoded is None or inner[decoded[1] :].strip():
        return None
    return _call(decoded[0], "arguments", "parameters")


_PYTHON_TAG: Final = "<|python_tag|>"
# An untagged answer that opens like this is a call even when cut before its JSON closes.
_LLAMA3_CALL_START: Final = re.compile(r'\{\s*"(?:name|type)"\s*:')


def _llama3(text: str) -> _Found:
    before, tag, region = text.partition(_PYTHON_TAG)
    if not tag:  # untagged: a call must open the answer
        region = text.lstrip()
        if not region.startswith("{"):
            return None
        before = ""
    calls: list[Call] = []
    position = 0
    while (position := _skip(region, position, " \t\r\n;")) < len(region):
        if region[position] != "{":
            break  # text after the calls: content
        decoded = _decode(region, position)
        call = None if decoded is None else _call(decoded[0], "parameters", "arguments")
        if call is None:
            opens_a_call = bool(tag or calls or _LLAMA3_CALL_START.match(region, position))
            if decoded is None and opens_a_call:
                return before, calls, True  # cut inside a call: dropped
            if not (tag or calls):
                return None  # an answer that is JSON, or braces, but not a call
            break
        calls.append(call)
        position = decoded[1] if decoded is not None else len(region)
    return before + region[position:], calls, False


_TOOL_CALLS: Final = "[TOOL_CALLS]"
_MISTRAL_NAMED: Final = re.compile(r"\s*([A-Za-z0-9_-]+)(?:\[CALL_ID\][A-Za-z0-9]+)?\[ARGS\]")


def _mistral(text: str) -> _Found:
    if _TOOL_CALLS not in text:
        return None
    outside: list[str] = []
    calls: list[Call] = []
    rest = text
    while True:  # a loop, not recursion: a text may hold many markers
        before, marker, region = rest.partition(_TOOL_CALLS)
        outside.append(before)
        if not marker:
            return "".join(outside), calls, False
        read = _mistral_list if region.lstrip().startswith("[") else _mistral_named
        found, rest, unfinished = read(region)
        calls += found
        if unfinished:
            return "".join(outside), calls, True


def _mistral_list(region: str) -> tuple[list[Call], str, bool]:
    """``[{...}, {...}]`` (Nemo): the calls, the text after the list, whether it was cut."""
    calls: list[Call] = []
    position = region.index("[") + 1
    while (position := _skip(region, position, " \t\r\n,")) < len(region):
        if region[position] == "]":
            return calls, region[position + 1 :], False
        decoded = _decode(region, position)
        if decoded is None:
            break
        call = _call(decoded[0], "arguments", "parameters")
        if call is not None:  # an item that is not a call is dropped
            calls.append(call)
        position = decoded[1]
    return calls, "", True


def _mistral_named(region: str) -> tuple[list[Call], str, bool]:
    """``name[ARGS]{...}`` (Small 3.2 and later), one or more."""
    calls: list[Call] = []
    position = 0
    while (match := _MISTRAL_NAMED.match(region, position)) is not None:
        arguments = _decode(region, match.end())
        if arguments is None:
            return calls, "", True
        call = _call({"name": match.group(1), "arguments": arguments[0]}, "arguments")
        if call is not None:
            calls.append(call)
        position = arguments[1]
    if not calls:  # the marker is followed by no call: the rest is a call cut or garbled
        return calls, "", True
    return calls, region[position:], False


_PARSERS: Final = {"hermes": _hermes, "llama3": _llama3, "mistral": _mistral}
