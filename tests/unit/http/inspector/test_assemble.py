"""Reassembling Ollama NDJSON and Anthropic event streams for the request inspector."""

from __future__ import annotations

import json
from typing import Any

import pytest

from modelrunner.http.inspector.assemble import AnthropicAssembler, OllamaAssembler


def ndjson(*lines: dict[str, Any]) -> bytes:
    return b"".join(json.dumps(line).encode() + b"\n" for line in lines)


def sse(*events: dict[str, Any]) -> bytes:
    return b"".join(f"event: {e['type']}\ndata: {json.dumps(e)}\n\n".encode() for e in events)


def fed(assembler: OllamaAssembler | AnthropicAssembler, data: bytes, piece: int) -> Any:
    for start in range(0, len(data), piece):
        assembler.feed(data[start : start + piece])
    return assembler.result()


STAMP = "2026-01-01T00:00:00Z"
CHAT = ndjson(
    {"model": "smol", "created_at": STAMP, "message": {"role": "assistant", "content": "Hel"},
     "done": False},
    {"model": "smol", "created_at": STAMP, "message": {"role": "assistant", "content": "lo"},
     "done": False},
    {"model": "smol", "created_at": STAMP, "message": {"role": "assistant", "content": ""},
     "done": True, "done_reason": "stop", "eval_count": 2, "total_duration": 5},
)  # fmt: skip
CHAT_FINAL = {"model": "smol", "created_at": STAMP, "eval_count": 2, "total_duration": 5,
              "message": {"role": "assistant", "content": "Hello"},
              "done": True, "done_reason": "stop"}  # fmt: skip
TOOL_CALL = {"function": {"name": "weather", "arguments": {"city": "Paris"}}}
CHAT_TOOLS = ndjson(
    {"model": "m", "message": {"role": "assistant", "content": "", "thinking": "hmm"},
     "done": False},
    {"model": "m", "message": {"role": "assistant", "content": "", "tool_calls": [TOOL_CALL]},
     "done": False},
    {"model": "m", "message": {"role": "assistant", "content": ""}, "done": True,
     "done_reason": "stop"},
)  # fmt: skip
CHAT_TOOLS_FINAL = {"model": "m", "done": True, "done_reason": "stop",
                    "message": {"role": "assistant", "content": "", "thinking": "hmm",
                                "tool_calls": [TOOL_CALL]}}  # fmt: skip
GENERATE = ndjson(
    {"model": "m", "response": "One", "done": False},
    {"model": "m", "response": " two", "done": False},
    {"model": "m", "response": "", "done": True, "done_reason": "length", "context": [1, 2]},
)
GENERATE_FINAL = {"model": "m", "response": "One two", "done": True, "done_reason": "length",
                  "context": [1, 2]}  # fmt: skip


@pytest.mark.parametrize("piece", [1, 7, 10_000])
@pytest.mark.parametrize(
    ("stream", "final"),
    [(CHAT, CHAT_FINAL), (CHAT_TOOLS, CHAT_TOOLS_FINAL), (GENERATE, GENERATE_FINAL), (b"", None)],
)
def test_ollama_streams_become_the_unstreamed_answer(
    stream: bytes, final: dict[str, Any] | None, piece: int
) -> None:
    assembler = OllamaAssembler()
    assert fed(assembler, stream, piece) == final
    assert assembler.error is None


def test_ollama_error_line_and_bound() -> None:
    failing = OllamaAssembler()
    failing.feed(ndjson({"model": "m", "response": "a", "done": False}, {"error": "boom"}))
    assert failing.error == {"error": "boom"}
    bounded = OllamaAssembler(limit=5)
    result = fed(bounded, GENERATE, 10_000)
    assert result["response"] == "One t"
    assert bounded.truncated


MESSAGE = {"id": "msg_1", "type": "message", "role": "assistant", "model": "smol",
           "content": [], "stop_reason": None, "stop_sequence": None,
           "usage": {"input_tokens": 9, "output_tokens": 0}}  # fmt: skip
TEXT = sse(
    {"type": "message_start", "message": MESSAGE},
    {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
    {"type": "ping"},
    {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hi"}},
    {"type": "content_block_delta", "index": 0,
     "delta": {"type": "text_delta", "text": " there"}},
    {"type": "content_block_stop", "index": 0},
    {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None},
     "usage": {"output_tokens": 3}},
    {"type": "message_stop"},
)  # fmt: skip
TEXT_FINAL = {**MESSAGE, "content": [{"type": "text", "text": "Hi there"}],
              "stop_reason": "end_turn",
              "usage": {"input_tokens": 9, "output_tokens": 3}}  # fmt: skip
TOOL = sse(
    {"type": "message_start", "message": MESSAGE},
    {"type": "content_block_start", "index": 0,
     "content_block": {"type": "thinking", "thinking": ""}},
    {"type": "content_block_delta", "index": 0,
     "delta": {"type": "thinking_delta", "thinking": "weather?"}},
    {"type": "content_block_stop", "index": 0},
    {"type": "content_block_start", "index": 1,
     "content_block": {"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {}}},
    {"type": "content_block_delta", "index": 1,
     "delta": {"type": "input_json_delta", "partial_json": '{"city": '}},
    {"type": "content_block_delta", "index": 1,
     "delta": {"type": "input_json_delta", "partial_json": '"Paris"}'}},
    {"type": "content_block_stop", "index": 1},
    {"type": "message_delta", "delta": {"stop_reason": "tool_use"},
     "usage": {"output_tokens": 12}},
    {"type": "message_stop"},
)  # fmt: skip
TOOL_FINAL = {**MESSAGE, "stop_reason": "tool_use",
              "usage": {"input_tokens": 9, "output_tokens": 12},
              "content": [{"type": "thinking", "thinking": "weather?"},
                          {"type": "tool_use", "id": "toolu_1", "name": "weather",
                           "input": {"city": "Paris"}}]}  # fmt: skip


@pytest.mark.parametrize("piece", [1, 13, 100_000])
@pytest.mark.parametrize(
    ("stream", "final"), [(TEXT, TEXT_FINAL), (TOOL, TOOL_FINAL), (b"data: [DONE]\n\n", None)]
)
def test_anthropic_streams_become_the_message(
    stream: bytes, final: dict[str, Any] | None, piece: int
) -> None:
    assembler = AnthropicAssembler()
    assert fed(assembler, stream.replace(b"\n", b"\r\n") if piece == 13 else stream, piece) == final
    assert assembler.error is None


def test_anthropic_error_event_and_bound() -> None:
    error = {"type": "error", "error": {"type": "api_error", "message": "engine failed"}}
    failing = AnthropicAssembler()
    failing.feed(sse({"type": "message_start", "message": MESSAGE}, error))
    assert failing.error == error
    assert failing.result() == MESSAGE
    bounded = AnthropicAssembler(limit=4)
    result = fed(bounded, TEXT, 100_000)
    assert result["content"] == [{"type": "text", "text": "Hi t"}]
    assert bounded.truncated
