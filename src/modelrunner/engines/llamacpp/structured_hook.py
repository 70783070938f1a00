"""This package, hooked into the llama.cpp engine (``llamacpp_engine``).

- ``inspect``: what the model's chat template knows about tools, once at start;
- ``plan``: a chat request's fields -> a ChatPlan, a 400 as the engine raises them;
- ``compile_grammar``: the request's grammar compiled in its own thread (a 400 if it fails);
- ``with_plan``: the grammar and logprobs count put into the request's generation settings;
- ``StructuredChatOutput``: the engine's answer hook (``answers.ChatOutput``) with tool
  calls read out of the text and logprobs, and a plain answer checked against its schema;
  the scheduler and the HTTP code stay as they are.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

from modelrunner.engines.llamacpp.answers import ChatOutput, with_stop_reason
from modelrunner.engines.llamacpp.chat_template import ChatTemplate
from modelrunner.engines.llamacpp.jobs import Delta, Finished
from modelrunner.engines.llamacpp.params import Generation
from modelrunner.engines.llamacpp.structured import logprobs
from modelrunner.engines.llamacpp.structured.chat import ChatPlan, plan_chat
from modelrunner.engines.llamacpp.structured.errors import InvalidRequest
from modelrunner.engines.llamacpp.structured.json_schema import SchemaGrammar, checked
from modelrunner.engines.llamacpp.structured.mask import GrammarMasks
from modelrunner.engines.llamacpp.structured.output import TextShaper
from modelrunner.engines.llamacpp.structured.template import TemplateInfo, inspect_template
from modelrunner.engines.serving import RequestError


def inspect(source: str, template: ChatTemplate) -> TemplateInfo:
    return inspect_template(source, lambda messages, tools: template.render(messages, tools))


def plan(body: Mapping[str, Any], messages: list[dict[str, Any]], info: TemplateInfo) -> ChatPlan:
    """``messages``: the request's, checked by the engine (content parts flattened)."""
    try:
        return plan_chat({**body, "messages": messages}, info)
    except InvalidRequest as exc:
        raise RequestError(400, str(exc), exc.param) from None


def compile_grammar(masks: GrammarMasks, chat: ChatPlan) -> None:
    """Compile the request's grammar now, in its own thread, and a 400 naming the request
    field if it cannot be (a $ref loop with no base case, say)."""
    if chat.grammar is None:
        return
    try:
        masks.prepare(chat.grammar, chat.grammar_param)
    except InvalidRequest as exc:
        raise RequestError(400, str(exc), exc.param) from None


def with_plan(generation: Generation, chat: ChatPlan) -> Generation:
    sampling = dataclasses.replace(generation.sampling, grammar=chat.grammar)
    return dataclasses.replace(generation, sampling=sampling, top_logprobs=chat.logprobs)


class StructuredChatOutput(ChatOutput):
    def __init__(
        self,
        model: str,
        shaper: TextShaper,
        piece: Callable[[int], bytes],
        top_logprobs: int | None,
        schema: SchemaGrammar | None = None,
        index: int = 0,
    ) -> None:
        super().__init__(model, index)
        self._shaper = shaper  # pure: one serves every choice of a request
        self._schema = schema  # a plain answer is checked against it after generation
        self._streamed: list[str] = []  # the text so far, for that check
        self._deltas = shaper.stream()  # this choice's own streaming state
        self._piece = piece
        self._logprobs = top_logprobs is not None
        self._entries: list[dict[str, Any]] = []  # logprobs not sent yet

    # -- streaming ------------------------------------------------------------------------
    def feed(self, text: str, delta: Delta | None) -> list[dict[str, Any]]:
        if delta is not None:
            self.collect(delta)
        if self._schema is not None:
            self._streamed.append(text)
        return self._chunks(self._deltas.feed(text))

    def finish_chunks(self, finished: Finished) -> list[dict[str, Any]]:
        deltas, reason = self._deltas.finish(finished.reason)
        last = with_stop_reason(self._chunks([{}], reason), finished)
        if last:
            checked(last[-1]["choices"][0], self._schema, "".join(self._streamed))
        return self._chunks(deltas) + last

    def _chunks(
        self, deltas: list[dict[str, Any]], reason: str | None = None
    ) -> list[dict[str, Any]]:
        chunks = [self._chunk(delta, reason) for delta in deltas]
        if chunks and self._entries:  # a token's logprobs go with the first chunk showing it
            chunks[0]["choices"][0]["logprobs"] = logprobs.choice_logprobs(self._entries)
            self._entries = []
        return chunks

    # -- a plain answer -------------------------------------------------------------------
    def collect(self, delta: Delta) -> None:
        if not self._logprobs or delta.logprobs is None:
            return
        piece = self._piece(delta.token)
        if not piece:  # the end-of-generation token (special tokens render as nothing)
            return
        top = [(self._piece(t.token), t.logprob) for t in delta.logprobs.top]
        self._entries.append(logprobs.entry(piece, delta.logprobs.chosen.logprob, top))

    def message(self, text: str, finished: Finished) -> dict[str, Any]:
        body = super().message(text, finished)
        choice = body["choices"][0]
        choice["message"], choice["finish_reason"] = self._shaper.message(text, finished.reason)
        if not choice["message"].get("tool_calls"):
            checked(choice, self._schema, choice["message"].get("content") or "")
        if self._logprobs:
            choice["logprobs"] = logprobs.choice_logprobs(self._entries)
        return body
