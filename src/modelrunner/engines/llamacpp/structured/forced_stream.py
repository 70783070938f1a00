"""Stream deltas for a forced call (tool_choice "required" or named), arguments as they come.

The grammar allows nothing but calls, each written ``{"name": "<name>", "<arguments key>":
<arguments>}`` between the format's markers, so the first call needs no holding back: its
head delta goes out once its name is written, and its arguments piece by piece, up to the
brace that closes them (found by following JSON's nesting and strings).

Further calls (parallel_tool_calls true) are sent once complete, head and arguments
together: a small model forced into calls tends to add calls until max_tokens cuts one,
and a call already half sent could not be taken back. A call cut that way is dropped and
the stream ends with finish_reason ``length``, as the plain answer does. With one call
allowed (parallel_tool_calls false, legacy functions), everything after the first call is
ignored, whatever the grammar let the model write.
"""

from __future__ import annotations

import re
from typing import Final, Protocol

from modelrunner.engines.llamacpp.structured.deltas import Delta, call_arguments, call_head
from modelrunner.engines.llamacpp.structured.tools import ToolRequest


class Shaper(Protocol):
    """What this stream asks of ``output.TextShaper`` (which imports this module)."""

    tools: ToolRequest
    single: bool

    def new_id(self) -> str: ...

    def finish_reason(self, engine_reason: str, called: bool, unfinished: bool) -> str: ...


# The call's opening up to its arguments (spaces as any JSON writer may put them), matched
# once the arguments' first character is there, so no space is taken for arguments.
_HEAD: Final = re.compile(
    r'\{\s*"name"\s*:\s*"([A-Za-z0-9_-]+)"\s*,\s*"(?:arguments|parameters)"\s*:\s*(?=\S)'
)


class ForcedCallStream:
    def __init__(self, output: Shaper) -> None:
        self._output = output
        self._legacy = output.tools.legacy
        self._buffer = ""
        self._calls = 0  # calls whose head was sent
        self._name: str | None = None  # the call whose arguments are being read
        self._held = ""  # the arguments so far of a call after the first (sent once whole)
        self._done = False  # one call allowed and it is complete: the rest is ignored
        self._live = False  # the call being read is the first: sent as it comes
        self._depth = 0
        self._in_string = False
        self._escaped = False

    def feed(self, piece: str) -> list[Delta]:
        deltas: list[Delta] = []
        if self._done:
            return deltas
        self._buffer += piece
        while self._buffer and not self._done:
            if self._name is not None:
                if not self._arguments(deltas):
                    break
            else:
                match = _HEAD.search(self._buffer)
                if match is None:
                    break  # markers between calls, or a head still being written
                self._start(match.group(1), deltas)
                self._buffer = self._buffer[match.end() :]
        return deltas

    def finish(self, finish_reason: str) -> tuple[list[Delta], str]:
        if self._name is not None and self._live:
            # The first call was cut short: its head and arguments so far are out already.
            return [], finish_reason
        # A later call begun but not complete (an object opened, or its arguments open).
        unfinished = not self._done and (self._name is not None or "{" in self._buffer)
        return [], self._output.finish_reason(finish_reason, self._calls > 0, unfinished)

    def _start(self, name: str, deltas: list[Delta]) -> None:
        self._name = name
        self._depth = 0
        self._held = ""
        self._live = self._calls == 0  # the first call streams as it comes
        if self._live:
            self._send_head(deltas)

    def _send_head(self, deltas: list[Delta]) -> None:
        assert self._name is not None
        deltas.append(call_head(self._calls, self._output.new_id(), self._name, self._legacy))
        self._calls += 1

    def _arguments(self, deltas: list[Delta]) -> bool:
        """Read the arguments written so far; True once they are complete."""
        end, complete = len(self._buffer), False
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
                    end, complete = i + 1, True
                    break
        fragment, self._buffer = self._buffer[:end], self._buffer[end:]
        if self._live:
            if fragment:
                deltas.append(call_arguments(self._calls - 1, fragment, self._legacy))
        else:
            self._held += fragment
        if complete:
            self._complete(deltas)
        return complete

    def _complete(self, deltas: list[Delta]) -> None:
        if not self._live:  # a later call: sent now that it is whole
            index = self._calls
            self._send_head(deltas)
            deltas.append(call_arguments(index, self._held, self._legacy))
        self._name = None
        self._held = ""
        self._done = self._output.single
