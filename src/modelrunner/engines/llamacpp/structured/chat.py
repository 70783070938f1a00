"""One chat request's structured-output and tool fields -> what the engine does with them.

The engine calls ``plan_chat`` before it renders the prompt: it renders ``messages`` and
``tools`` with the chat template, puts ``grammar`` (if any) into the request's sampler chain,
computes ``top_logprobs`` alternatives per token when ``logprobs`` is not None, and turns the
generated text into the answer with ``output``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from modelrunner.engines.llamacpp.structured import logprobs as logprobs_
from modelrunner.engines.llamacpp.structured.errors import InvalidRequest
from modelrunner.engines.llamacpp.structured.formats import call_grammar
from modelrunner.engines.llamacpp.structured.history import template_input
from modelrunner.engines.llamacpp.structured.output import TextShaper
from modelrunner.engines.llamacpp.structured.response_format import answer_schema
from modelrunner.engines.llamacpp.structured.schema_grammar import schema_to_gbnf
from modelrunner.engines.llamacpp.structured.template import TemplateInfo
from modelrunner.engines.llamacpp.structured.tools import read_tools


@dataclass(frozen=True)
class ChatPlan:
    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]] | None  # the template's `tools` variable
    grammar: str | None  # GBNF with a `root` rule; None: unconstrained
    output: TextShaper
    logprobs: int | None  # None: off; else alternatives per token (0-20)


def plan_chat(body: dict[str, Any], info: TemplateInfo) -> ChatPlan:
    """Raises InvalidRequest (a 400) for a field that is wrong or cannot be honoured."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
        raise InvalidRequest("messages must be a list of message objects", "messages")
    tools = read_tools(body)
    answer = answer_schema(body)
    if tools.forced:
        grammar: str | None = call_grammar(info.format, tools.callable, many=_many(tools))
    elif tools.offered and answer is not None:
        # The model may still call a tool; if it answers, the answer follows the format.
        grammar = call_grammar(info.format, tools.offered, many=tools.parallel, answer=answer)
    elif answer is not None:
        grammar = schema_to_gbnf(*answer)
    else:
        grammar = None
    shaped, template_tools = template_input(messages, tools, info)
    return ChatPlan(
        shaped, template_tools, grammar, TextShaper(tools, info.format), logprobs_.requested(body)
    )


def _many(tools: Any) -> bool:
    # A named choice is one call of that function; "required" may call several if allowed.
    return bool(tools.mode == "required" and tools.parallel and not tools.legacy)


__all__ = ["ChatPlan", "InvalidRequest", "plan_chat"]
