"""Stream deltas for a forced call (tool_choice "required" or named), arguments as they come.

The grammar allows nothing but calls, each written ``{"name": "<name>", "<arguments key>":
<arguments>}`` between the format's markers, so nothing needs holding back: a call's head
delta goes out once its name is written, and its arguments piece by piece, up to the brace
that closes them (found by following JSON's nesting and strings).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Final

from modelrunner.engines.llamacpp.structured.deltas import Delta, call_arguments, call_head
from modelrunner.engines.llamacpp.structured.formats import ToolFormat
from modelrunner.engines.llamacpp.structured.tools import ToolRequest

_HEAD: Final = re.compile(r'\{"name": "([A-Za-z0-9_-]+)", "(?:arguments|parameters)": ')


class ForcedCallStream:
    def __init__(
        self, tools: ToolRequest, fmt: ToolFormat, new_id: Callable[[ToolFormat], str]
    ) -> None:
        self._tools = tools
        self._format = fmt
        self._new_id = new_id
        self._buffer = ""
        self._calls = 0
        self._index = 0  # of the call whose arguments are streaming
        self._in_arguments = False
        self._depth = 0
        self._in_string = False
        self._escaped = False

    def feed(self, piece: str) -> list[Delta]:
        self._buffer += piece
        deltas: list[Delta] = []
        while self._buffer:
            if self._in_arguments:
                self._arguments(deltas)
                if self._in_arguments:
                    break
            else:
                match = _HEAD.search(self._buffer)
                if match is None:
                    break  # markers between calls, or a head still being written
                self._start(match.group(1), deltas)
                self._buffer = self._buffer[match.end() :]
        return deltas

    def finish(self, finish_reason: str) -> tuple[list[Delta], str]:
        # A call cut short by max_tokens keeps "length": its arguments are incomplete.
        complete = self._calls and not self._in_arguments
        if complete:
            finish_reason = "function_call" if self._tools.legacy else "tool_calls"
        return [], finish_reason

    def _start(self, name: str, deltas: list[Delta]) -> None:
        tools = self._tools
        self._index = self._calls
        self._calls += 1
        call_id = self._new_id(self._format)
        deltas.append(call_head(self._index, call_id, name, tools.legacy))
        self._in_arguments = True
        self._depth = 0

    def _arguments(self, deltas: list[Delta]) -> None:
        """Send the arguments written so far; leave the arguments at their closing brace."""
        end = len(self._buffer)
        for i, ch in enumerate(self._buffer):
            if self._in_string:
                if self._escaped:
                    self._escaped = False
                elif ch == "\\":
                    self._escaped = True
                elif ch == '"':
                    self._in_string = False
            elif ch == '"':
                self._in_string = True
            elif ch in "{[":
                self._depth += 1
            elif ch in "}]":
                self._depth -= 1
                if self._depth == 0:
                    end = i + 1
                    self._in_arguments = False
                    break
        fragment, self._buffer = self._buffer[:end], self._buffer[end:]
        if fragment:
            deltas.append(call_arguments(self._index, fragment, self._tools.legacy))
