"""One chat request's structured-output and tool fields -> what the engine does with them.

The engine calls ``plan_chat`` before it renders the prompt: it renders ``messages`` and
``tools`` with the chat template, puts ``grammar`` (if any) into the request's sampling,
computes ``top_logprobs`` alternatives per token when ``logprobs`` is not None, and turns the
generated text into the answer with ``output``, checking a plain answer against ``schema``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from modelrunner.engines.llamacpp.structured import logprobs as logprobs_
from modelrunner.engines.llamacpp.structured.call_grammar import call_grammar
from modelrunner.engines.llamacpp.structured.errors import InvalidRequest
from modelrunner.engines.llamacpp.structured.history import template_input
from modelrunner.engines.llamacpp.structured.json_schema import SchemaGrammar, compile_schema
from modelrunner.engines.llamacpp.structured.output import TextShaper
from modelrunner.engines.llamacpp.structured.response_format import answer_schema
from modelrunner.engines.llamacpp.structured.template import TemplateInfo
from modelrunner.engines.llamacpp.structured.tools import read_tools


@dataclass(frozen=True)
class ChatPlan:
    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]] | None  # the template's `tools` variable
    grammar: str | None  # for llguidance (JSON or Lark); None: unconstrained
    output: TextShaper
    logprobs: int | None  # None: off; else alternatives per token (0-20)
    schema: SchemaGrammar | None = None  # what a plain answer is checked against
    grammar_param: str = "response_format"  # the request field the grammar comes from


def plan_chat(body: dict[str, Any], info: TemplateInfo) -> ChatPlan:
    """Raises InvalidRequest (a 400) for a field that is wrong or cannot be honoured."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
        raise InvalidRequest("messages must be a list of message objects", "messages")
    tools = read_tools(body)
    answer = answer_schema(body)
    schema = compile_schema(*answer) if answer is not None else None
    if tools.forced:
        grammar: str | None = call_grammar(info.format, tools.callable, many=_many(tools))
    elif tools.offered and answer is not None:
        # The model may still call a tool; if it answers, the answer follows the format.
        grammar = call_grammar(
            info.format, tools.offered, many=tools.parallel, answer=(answer[0], answer[1])
        )
    elif schema is not None:
        grammar = schema.grammar
    else:
        grammar = None
    shaped, template_tools = template_input(messages, tools, info)
    return ChatPlan(
        shaped,
        template_tools,
        grammar,
        TextShaper(tools, info.format),
        logprobs_.requested(body),
        schema if not tools.forced else None,
        "tools" if tools.forced or answer is None else answer[1],
    )


def _many(tools: Any) -> bool:
    # A named choice is one call of that function; "required" may call several if allowed.
    return bool(tools.mode == "required" and tools.parallel and not tools.legacy)


__all__ = ["ChatPlan", "InvalidRequest", "plan_chat"]
