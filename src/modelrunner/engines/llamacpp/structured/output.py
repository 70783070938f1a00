"""Generated text -> the assistant message (and its finish_reason), or stream deltas.

With tools offered, the text is parsed in the template's call syntax: calls become
``tool_calls`` (or the legacy ``function_call``) and finish_reason ``tool_calls``; text that is
not a well-formed call of an offered function stays content. A stream sends content as it
comes, holding back only what may be the start of a call, and each call once it is complete:
a first delta with index, id, type and name, then its arguments.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

from modelrunner.engines.llamacpp.structured.deltas import (
    Delta,
    call_arguments,
    call_head,
    new_call_id,
)
from modelrunner.engines.llamacpp.structured.formats import Call, Parsed, ToolFormat, parse
from modelrunner.engines.llamacpp.structured.tools import ToolRequest

if TYPE_CHECKING:
    from modelrunner.engines.llamacpp.structured.forced_stream import ForcedCallStream

START: Final[dict[ToolFormat, str]] = {
    "hermes": "<tool_call>",
    "mistral": "[TOOL_CALLS]",
    "llama3": "{",
}
END: Final[dict[ToolFormat, str | None]] = {
    "hermes": "</tool_call>",
    "mistral": None,
    "llama3": None,
}
_LLAMA3_TAG: Final = "<|python_tag|>"


class TextShaper:
    """How one request's generated text becomes its answer."""

    def __init__(
        self,
        tools: ToolRequest,
        fmt: ToolFormat,
        new_id: Callable[[ToolFormat], str] = new_call_id,
    ) -> None:
        self.tools = tools
        self.format = fmt
        self._new_id = new_id
        self._names = {f.name for f in tools.offered}

    @property
    def parses_calls(self) -> bool:
        return bool(self._names)

    def message(self, text: str, finish_reason: str) -> tuple[dict[str, Any], str]:
        """The choice's message and finish_reason for the whole generated text."""
        parsed = self.calls_in(text) if self.parses_calls else Parsed(text, ())
        message: dict[str, Any] = {"role": "assistant", "content": parsed.content, "refusal": None}
        if not parsed.calls:
            message["content"] = text
            return message, finish_reason
        if self.tools.legacy:
            message["function_call"] = _function(parsed.calls[0])
            return message, "function_call"
        message["tool_calls"] = [self._tool_call(call) for call in parsed.calls]
        return message, "tool_calls"

    def calls_in(self, text: str) -> Parsed:
        """The calls of ``text``; all of it as content when a call names no offered function."""
        parsed = parse(self.format, text)
        if any(call.name not in self._names for call in parsed.calls):
            return Parsed(text or None, ())
        if not self.tools.parallel and len(parsed.calls) > 1:
            return Parsed(parsed.content, parsed.calls[:1])
        return parsed

    def _tool_call(self, call: Call) -> dict[str, Any]:
        return {"id": self._new_id(self.format), "type": "function", "function": _function(call)}

    def stream(self) -> DeltaStream | ForcedCallStream:
        if self.tools.forced:  # the grammar guarantees calls: their arguments can stream
            from modelrunner.engines.llamacpp.structured.forced_stream import ForcedCallStream

            return ForcedCallStream(self.tools, self.format, self._new_id)
        return DeltaStream(self)


class DeltaStream:
    """Text pieces in, OpenAI ``delta`` objects out (without the role, which the first chunk
    of the engine carries)."""

    def __init__(self, output: TextShaper) -> None:
        self._output = output
        self._format = output.format
        self._start = START[self._format]
        self._end = END[self._format]
        self._buffer = ""
        self._in_call = False
        self._plain = not output.parses_calls  # no call can come: pass everything through
        self._began = False  # for llama3: any text yet (a call must open the answer)
        self._calls = 0

    def feed(self, piece: str) -> list[Delta]:
        if self._plain:
            return [{"content": piece}] if piece else []
        self._buffer += piece
        deltas: list[Delta] = []
        while self._buffer:
            if self._in_call:
                if not self._close_call(deltas):
                    break
            elif not self._open_call(deltas):
                break
        return deltas

    def finish(self, finish_reason: str) -> tuple[list[Delta], str]:
        """The last deltas, and the finish_reason of the stream."""
        deltas: list[Delta] = []
        if self._in_call:
            self._emit_block(self._buffer, deltas)
        elif self._buffer:
            deltas.append({"content": self._buffer})
        self._buffer = ""
        if self._calls:
            finish_reason = "function_call" if self._output.tools.legacy else "tool_calls"
        return deltas, finish_reason

    def _open_call(self, deltas: list[Delta]) -> bool:
        """Send content up to a call's start; False when more text is needed to decide."""
        if self._format == "llama3":
            return self._open_llama3(deltas)
        at = self._buffer.find(self._start)
        if at >= 0:
            if at:
                deltas.append({"content": self._buffer[:at]})
            self._buffer = self._buffer[at:]
            self._in_call = True
            return True
        keep = _partial_suffix(self._buffer, self._start)
        if len(self._buffer) > keep:
            deltas.append({"content": self._buffer[: len(self._buffer) - keep]})
            self._buffer = self._buffer[len(self._buffer) - keep :]
        return False

    def _open_llama3(self, deltas: list[Delta]) -> bool:
        # A Llama 3 call is the whole answer: decided by how the answer begins.
        head = self._buffer.lstrip()
        if not head or (_LLAMA3_TAG.startswith(head) and not self._began):
            return False
        self._began = True
        if head.startswith(("{", _LLAMA3_TAG)):
            self._in_call = True
        else:
            self._plain = True
            deltas.append({"content": self._buffer})
            self._buffer = ""
        return False

    def _close_call(self, deltas: list[Delta]) -> bool:
        """Send a call whose block is complete; False while it is still open."""
        if self._end is None:
            return False
        at = self._buffer.find(self._end)
        if at < 0:
            return False
        block, self._buffer = (
            self._buffer[: at + len(self._end)],
            self._buffer[at + len(self._end) :],
        )
        self._in_call = False
        self._emit_block(block, deltas)
        return True

    def _emit_block(self, block: str, deltas: list[Delta]) -> None:
        parsed = self._output.calls_in(block)
        if parsed.content:
            deltas.append({"content": parsed.content})
        legacy, parallel = self._output.tools.legacy, self._output.tools.parallel
        for call in parsed.calls:
            if self._calls and (legacy or not parallel):
                break  # one call only: further ones are dropped
            deltas += self._call_deltas(call)

    def _call_deltas(self, call: Call) -> list[Delta]:
        index = self._calls
        self._calls += 1
        legacy = self._output.tools.legacy
        head = call_head(index, self._output._new_id(self._format), call.name, legacy)
        return [head, call_arguments(index, call.arguments, legacy)]


def _function(call: Call) -> dict[str, str]:
    return {"name": call.name, "arguments": call.arguments}


def _partial_suffix(text: str, marker: str) -> int:
    """The length of the longest end of ``text`` that begins ``marker``."""
    for size in range(min(len(text), len(marker) - 1), 0, -1):
        if marker.startswith(text[-size:]):
            return size
    return 0
