"""``POST /tokenize`` and ``POST /detokenize`` in vLLM's shapes, on the engine's own
tokenizer and chat template (no slot, no scheduler: handler threads answer them at once).

- tokenize: ``prompt`` (``add_special_tokens``, default true), or chat ``messages`` with
  ``tools``, ``add_generation_prompt`` (default true) and ``add_special_tokens`` (default:
  what the engine's chat completions do, so a count is the one a chat call costs); answers
  ``{count, max_model_len, tokens, token_strs}`` (``token_strs`` with ``return_token_strs``).
- detokenize: ``tokens`` -> ``{prompt}``, special tokens written out.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from modelrunner.engines.llamacpp import structured_hook as structured
from modelrunner.engines.llamacpp.chat_template import check_messages
from modelrunner.engines.serving import RequestError

if TYPE_CHECKING:
    from modelrunner.engines.llamacpp.engine import Engine


def _flag(body: Mapping[str, Any], name: str, default: bool | None) -> bool | None:
    value = body.get(name)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise RequestError(400, f"{name} must be true or false", name)
    return value


def _token_ids(value: object, n_vocab: int, field: str) -> list[int]:
    if not isinstance(value, list) or not all(
        isinstance(t, int) and not isinstance(t, bool) for t in value
    ):
        raise RequestError(400, f"{field} must be a list of token ids (integers)", field)
    for i, token in enumerate(value):
        if not 0 <= token < n_vocab:
            where = f"{field}[{i}]"
            raise RequestError(
                400, f"{where} = {token} is outside the vocabulary (0..{n_vocab - 1})", where
            )
    return value


def tokenize(engine: Engine, body: Mapping[str, Any]) -> dict[str, Any]:
    model = engine.model
    prompt, messages = body.get("prompt"), body.get("messages")
    if (prompt is None) == (messages is None):
        raise RequestError(400, "give either prompt or messages", "prompt")
    if prompt is not None:
        if not isinstance(prompt, str):
            raise RequestError(400, "prompt must be a string", "prompt")
        special = _flag(body, "add_special_tokens", True)
        tokens = model.tokenize(prompt, add_special=bool(special), parse_special=False)
    else:
        if _flag(body, "continue_final_message", False):
            raise RequestError(
                400,
                "continue_final_message is not supported by this engine",
                "continue_final_message",
            )
        generation_prompt = _flag(body, "add_generation_prompt", True)
        chat = structured.plan(body, check_messages(messages), engine.tool_support)
        text = engine.template.render(
            chat.messages, tools=chat.tools, add_generation_prompt=bool(generation_prompt)
        )
        special = _flag(body, "add_special_tokens", None)
        tokens = model.tokenize(text, add_special=special is not False, parse_special=True)
        bos = model.bos_text
        doubled = len(tokens) > 1 and tokens[0] == tokens[1] and bos and text.startswith(bos)
        if special is None and doubled:  # as chat_job: the template wrote the BOS already
            tokens = tokens[1:]
    answer: dict[str, Any] = {
        "count": len(tokens),
        "max_model_len": engine.context.n_ctx_seq,
        "tokens": tokens,
        "token_strs": None,
    }
    if _flag(body, "return_token_strs", False):
        answer["token_strs"] = [model.token_text(t) for t in tokens]
    return answer


def detokenize(engine: Engine, body: Mapping[str, Any]) -> dict[str, Any]:
    tokens = _token_ids(body.get("tokens"), engine.model.n_vocab, "tokens")
    return {"prompt": engine.model.detokenize(tokens)}
