"""The stream deltas of tool calls, in OpenAI's shapes, and the ids calls get (pure)."""

from __future__ import annotations

import secrets
import string
from typing import Any, Final

from modelrunner.engines.llamacpp.structured.formats import ToolFormat

Delta = dict[str, Any]
_ALNUM: Final = string.ascii_letters + string.digits


def new_call_id(fmt: ToolFormat) -> str:
    # Mistral's templates refuse a history whose call ids are not 9 letters or digits.
    if fmt == "mistral":
        return "".join(secrets.choice(_ALNUM) for _ in range(9))
    return "call_" + secrets.token_hex(12)


def call_head(index: int, call_id: str, name: str, legacy: bool) -> Delta:
    """The first delta of a call: its index, id, type and name, no arguments yet."""
    if legacy:
        return {"function_call": {"name": name, "arguments": ""}}
    function = {"name": name, "arguments": ""}
    return {
        "tool_calls": [{"index": index, "id": call_id, "type": "function", "function": function}]
    }


def call_arguments(index: int, fragment: str, legacy: bool) -> Delta:
    """A piece of a call's arguments; the pieces of one call add up to its JSON object."""
    if legacy:
        return {"function_call": {"arguments": fragment}}
    return {"tool_calls": [{"index": index, "function": {"arguments": fragment}}]}
