"""Generated text -> the assistant message (and its finish_reason), or stream deltas.

With tools declared, the text is read in the template's call syntax (``formats.parse``):
complete calls of offered functions become ``tool_calls`` (or the legacy ``function_call``)
and finish_reason ``tool_calls``; text outside calls stays content; the markup never does
(a client shown ``<tool_call>...`` as the answer's text has nothing it can act on). A call
the text ends inside is dropped: cut by max_tokens, the answer keeps finish_reason
``length`` beside the complete calls, so the client knows something is missing.

With tool_choice "none" the model is not told about the tools (``ToolRequest.offered``), so
it rarely writes a call; when it does (imitating calls in the history), the markup is
dropped and no call is returned, as OpenAI never returns one under "none".

A stream sends content as it comes, holding back only what may be the start of a call, and
each call once it is complete: a first delta with index, id, type and name, then its
arguments. Forced calls stream their arguments as they come (``forced_stream``).
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
from modelrunner.engines.llamacpp.structured.formats import Call, ToolFormat, parse
from modelrunner.engines.llamacpp.structured.tools import ToolRequest

if TYPE_CHECKING:
    from modelrunner.engines.llamacpp.structured.forced_stream import ForcedCallStream

# Where a call begins, anywhere in the text (Llama 3 also: "{" opening the answer).
START: Final[dict[ToolFormat, str]] = {
    "hermes": "<tool_call>",
    "mistral": "[TOOL_CALLS]",
    "llama3": "<|python_tag|>",
}
# Where a call's block ends; None: the call region lasts to the end of the answer.
END: Final[dict[ToolFormat, str | None]] = {
    "hermes": "</tool_call>",
    "mistral": None,
    "llama3": None,
}


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
        self._names = {f.name for f in tools.offered}  # empty under "none": no call returned
        # One call at most: the legacy function_call, or parallel_tool_calls false.
        self.single = tools.legacy or not tools.parallel

    @property
    def parses_calls(self) -> bool:
        """Whether the text is read for calls (tools declared; under "none" to drop them)."""
        return bool(self.tools.functions)

    def message(self, text: str, finish_reason: str) -> tuple[dict[str, Any], str]:
        """The choice's message and finish_reason for the whole generated text."""
        message: dict[str, Any] = {"role": "assistant", "content": text, "refusal": None}
        if not self.parses_calls:
            return message, finish_reason
        if finish_reason == "length":  # a marker cut halfway is markup too
            text = text[: len(text) - partial_suffix(text, START[self.format])]
        parsed = parse(self.format, text)
        calls = self.kept(parsed.calls)
        reason = self.finish_reason(finish_reason, bool(calls), parsed.unfinished)
        if not calls:
            message["content"] = parsed.content or ""
            return message, reason
        message["content"] = parsed.content
        if self.tools.legacy:
            message["function_call"] = _function(calls[0])
        else:
            message["tool_calls"] = [self.tool_call(call) for call in calls]
        return message, reason

    def kept(self, calls: tuple[Call, ...] | list[Call]) -> list[Call]:
        """The calls the answer returns: those of offered functions, one if ``single``."""
        offered = [call for call in calls if call.name in self._names]
        return offered[:1] if self.single else offered

    def finish_reason(self, engine_reason: str, called: bool, unfinished: bool) -> str:
        """``length`` when max_tokens cut a call the answer would have returned; else
        ``tool_calls`` (``function_call``) with calls; else the engine's reason."""
        if unfinished and engine_reason == "length" and not (called and self.single):
            return engine_reason
        if called:
            return "function_call" if self.tools.legacy else "tool_calls"
        return engine_reason

    def tool_call(self, call: Call) -> dict[str, Any]:
        return {"id": self._new_id(self.format), "type": "function", "function": _function(call)}

    def new_id(self) -> str:
        return self._new_id(self.format)

    def stream(self) -> DeltaStream | ForcedCallStream:
        if self.tools.forced:  # the grammar guarantees calls: their arguments can stream
            from modelrunner.engines.llamacpp.structured.forced_stream import ForcedCallStream

            return ForcedCallStream(self)
        return DeltaStream(self)


class DeltaStream:
    """Text pieces in, OpenAI ``delta`` objects out (without the role, which the first chunk
    of the engine carries). Adds up to what ``TextShaper.message`` answers for the text:
    call blocks are parsed one by one with the same parser."""

    def __init__(self, output: TextShaper) -> None:
        self._output = output
        self._format = output.format
        self._start = START[self._format]
        self._end = END[self._format]
        self._buffer = ""
        self._in_call = False
        self._plain = not output.parses_calls  # no call can come: pass everything through
        self._began = False  # for llama3: any text yet (a bare "{" call opens the answer)
        self._calls = 0
        self._unfinished = False

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
            self._emit_block(self._buffer, deltas, last=True)
        elif self._buffer:  # not a marker after all: the text ended (cut by max_tokens,
            if finish_reason == "length":  # a marker's beginning is markup: dropped)
                held = partial_suffix(self._buffer, self._start)
                self._buffer = self._buffer[: len(self._buffer) - held]
            if self._buffer:
                deltas.append({"content": self._buffer})
        self._buffer = ""
        if self._plain:
            return deltas, finish_reason
        reason = self._output.finish_reason(finish_reason, self._calls > 0, self._unfinished)
        return deltas, reason

    def _open_call(self, deltas: list[Delta]) -> bool:
        """Send content up to a call's start; False when more text is needed to decide."""
        if self._format == "llama3" and not self._began:
            # A bare JSON call opens the answer: decided by its first visible character.
            head = self._buffer.lstrip()
            if not head:
                return False
            self._began = True
            if head.startswith("{"):
                self._in_call = True
                return True
        at = self._buffer.find(self._start)
        if at >= 0:
            if at:
                deltas.append({"content": self._buffer[:at]})
            self._buffer = self._buffer[at:]
            self._in_call = True
            return True
        keep = partial_suffix(self._buffer, self._start)
        if len(self._buffer) > keep:
            deltas.append({"content": self._buffer[: len(self._buffer) - keep]})
            self._buffer = self._buffer[len(self._buffer) - keep :]
        return False

    def _close_call(self, deltas: list[Delta]) -> bool:
        """Send a call whose block is complete; False while it is still open."""
        if self._end is None:
            return False  # the call region lasts to the end: read at finish
        at = self._buffer.find(self._end)
        following = self._buffer.find(self._start, len(self._start))
        if following >= 0 and (at < 0 or following < at):
            # The closing tag was left out: the block ends where the next one begins.
            block, self._buffer = self._buffer[:following], self._buffer[following:]
        elif at >= 0:
            block, self._buffer = (
                self._buffer[: at + len(self._end)],
                self._buffer[at + len(self._end) :],
            )
        else:
            return False
        self._in_call = False
        self._emit_block(block, deltas, last=False)
        return True

    def _emit_block(self, block: str, deltas: list[Delta], last: bool) -> None:
        parsed = parse(self._format, block)
        # Only the text's last block can be one the text ended inside (as in the message).
        self._unfinished = last and parsed.unfinished
        if parsed.content:  # text after the calls of a region (Llama 3, Mistral)
            deltas.append({"content": parsed.content})
        for call in self._output.kept(parsed.calls):
            if self._calls and self._output.single:
                break  # one call only: further ones are dropped
            deltas += self._call_deltas(call)

    def _call_deltas(self, call: Call) -> list[Delta]:
        index = self._calls
        self._calls += 1
        legacy = self._output.tools.legacy
        head = call_head(index, self._output.new_id(), call.name, legacy)
        return [head, call_arguments(index, call.arguments, legacy)]


def _function(call: Call) -> dict[str, str]:
    return {"name": call.name, "arguments": call.arguments}


def partial_suffix(text: str, marker: str) -> int:
    """The length of the longest end of ``text`` that begins ``marker``."""
    for size in range(min(len(text), len(marker) - 1), 0, -1):
        if marker.startswith(text[-size:]):
            return size
    return 0
