"""OpenAI answer shapes for chat and text completions.

``ChatOutput`` is the one place where generated text becomes the chat answer: the final
``message`` of a plain request, or the deltas of a stream. Anything that reads structure
out of the text (a tool-call parser, say) hooks in here by overriding ``feed``,
``finish_chunks`` and ``message``; the scheduler and the HTTP code stay as they are.

A request with ``n`` choices has one output per choice (``index`` i, the same ``id``):
``delivery.py`` routes each choice's events to its own and ``combined`` joins the answers.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from typing import Any, TypeVar

from modelrunner.engines.llamacpp.jobs import Delta, Finished, TokenCounts


def usage_body(usage: TokenCounts) -> dict[str, Any]:
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.prompt_tokens + usage.completion_tokens,
        "prompt_tokens_details": {"cached_tokens": usage.cached_tokens},
    }


def with_stop_reason(bodies: list[dict[str, Any]], finished: Finished) -> list[dict[str, Any]]:
    """vLLM's ``stop_reason`` on the last choice: the stop string that ended the answer (None
    otherwise), so a client (Anthropic's ``stop_sequence``) can tell which one matched."""
    if bodies and bodies[-1].get("choices"):
        bodies[-1]["choices"][0]["stop_reason"] = finished.stop
    return bodies


def combined(bodies: Sequence[dict[str, Any]], usage: TokenCounts) -> dict[str, Any]:
    """The plain answers of each choice (``message``), in order, as one answer."""
    answer = {**bodies[0], "choices": [body["choices"][0] for body in bodies]}
    answer["usage"] = usage_body(usage)
    return answer


Output = TypeVar("Output", bound="ChatOutput")


def one_answer(outputs: list[Output]) -> list[Output]:
    """The outputs of one request's choices: they share the first's ``id`` and ``created``."""
    for output in outputs[1:]:
        output.id, output.created = outputs[0].id, outputs[0].created
    return outputs


class ChatOutput:
    def __init__(self, model: str, index: int = 0) -> None:
        self.model = model
        self.index = index  # the choice's index (n > 1)
        self.id = f"chatcmpl-{uuid.uuid4().hex}"
        self.created = int(time.time())

    def _chunk(self, delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [
                {
                    "index": self.index,
                    "delta": delta,
                    "logprobs": None,
                    "finish_reason": finish_reason,
                }
            ],
        }

    # -- streaming ------------------------------------------------------------------------
    def start_chunks(self) -> list[dict[str, Any]]:
        return [self._chunk({"role": "assistant", "content": ""})]

    def feed(self, text: str, delta: Delta | None) -> list[dict[str, Any]]:
        """Chunks for newly generated ``text`` (``delta`` is None for the held-back tail)."""
        return [self._chunk({"content": text})] if text else []

    def finish_chunks(self, finished: Finished) -> list[dict[str, Any]]:
        return with_stop_reason([self._chunk({}, finished.reason)], finished)

    def usage_chunk(self, usage: TokenCounts) -> dict[str, Any]:
        """stream_options.include_usage: a last chunk with no choices and the usage."""
        return {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [],
            "usage": usage_body(usage),
        }

    # -- a plain answer -------------------------------------------------------------------
    def collect(self, delta: Delta) -> None:
        """Each token of a plain (non-streamed) answer, before ``message`` (for logprobs)."""

    def message(self, text: str, finished: Finished) -> dict[str, Any]:
        return with_stop_reason([self._message(text, finished)], finished)[0]

    def _message(self, text: str, finished: Finished) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.model,
            "choices": [
                {
                    "index": self.index,
                    "message": {"role": "assistant", "content": text, "refusal": None},
                    "logprobs": None,
                    "finish_reason": finished.reason,
                }
            ],
            "usage": usage_body(finished.usage),
        }


class CompletionOutput(ChatOutput):
    """The legacy /v1/completions shapes (``text_completion`` object, chunks alike)."""

    def __init__(self, model: str, index: int = 0) -> None:
        super().__init__(model, index)
        self.id = f"cmpl-{uuid.uuid4().hex}"

    def _text_chunk(self, text: str, finish_reason: str | None) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "text_completion",
            "created": self.created,
            "model": self.model,
            "choices": [
                {
                    "index": self.index,
                    "text": text,
                    "logprobs": None,
                    "finish_reason": finish_reason,
                }
            ],
        }

    def start_chunks(self) -> list[dict[str, Any]]:
        return []

    def feed(self, text: str, delta: Delta | None) -> list[dict[str, Any]]:
        return [self._text_chunk(text, None)] if text else []

    def finish_chunks(self, finished: Finished) -> list[dict[str, Any]]:
        return with_stop_reason([self._text_chunk("", finished.reason)], finished)

    def usage_chunk(self, usage: TokenCounts) -> dict[str, Any]:
        return {**self._text_chunk("", None), "choices": [], "usage": usage_body(usage)}

    def _message(self, text: str, finished: Finished) -> dict[str, Any]:
        return {**self._text_chunk(text, finished.reason), "usage": usage_body(finished.usage)}
