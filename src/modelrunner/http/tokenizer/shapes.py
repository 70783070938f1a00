"""The request shapes of ``POST /tokenize`` and ``/detokenize`` (vLLM's, with ``model``
required because mr serves many models), and the pure decisions on them: which engines
have a tokenizer, and the body an engine is sent."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from msgspec import Meta

# Engines that serve /tokenize and /detokenize (vLLM its own, llama.cpp mr's server).
TOKENIZING_ENGINES = frozenset({"llama.cpp", "vllm"})


class TokenizeRequest(msgspec.Struct, kw_only=True, omit_defaults=True):
    model: Annotated[str, Meta(min_length=1)]
    prompt: str | None = None
    messages: list[dict[str, Any]] | None = None
    add_special_tokens: bool | None = None
    add_generation_prompt: bool | None = None
    continue_final_message: bool | None = None
    return_token_strs: bool | None = None
    tools: list[dict[str, Any]] | None = None
    chat_template_kwargs: dict[str, Any] | None = None


class DetokenizeRequest(msgspec.Struct, kw_only=True):
    model: Annotated[str, Meta(min_length=1)]
    tokens: list[Annotated[int, Meta(ge=0, le=2**63 - 1)]]


class BadBody(Exception):
    def __init__(self, message: str, param: str) -> None:
        super().__init__(message)
        self.param = param


def tokenize_body(req: TokenizeRequest) -> dict[str, Any]:
    """What the engine is sent: the fields given, without ``model`` (set by the call)."""
    if req.prompt is None and req.messages is None:
        raise BadBody("prompt (a text) or messages (a chat) is required", "prompt")
    if req.prompt is not None and req.messages is not None:
        raise BadBody("give prompt or messages, not both", "messages")
    if req.prompt is not None:
        for chat_only in ("add_generation_prompt", "continue_final_message", "tools"):
            if getattr(req, chat_only) is not None:
                raise BadBody(f"{chat_only} applies to messages, not to a prompt", chat_only)
    elif req.continue_final_message and req.add_generation_prompt is not False:
        raise BadBody(
            "continue_final_message needs add_generation_prompt: false", "continue_final_message"
        )
    body: dict[str, Any] = msgspec.to_builtins(req)
    del body["model"]
    return body


def no_tokenizer(engine: str) -> str | None:
    """Why a model of ``engine`` cannot be tokenized, or None when it can."""
    if engine in TOKENIZING_ENGINES:
        return None
    return (
        f"the {engine} engine has no text tokenizer to call: /tokenize and /detokenize "
        f"serve {' and '.join(sorted(TOKENIZING_ENGINES))} models"
    )
