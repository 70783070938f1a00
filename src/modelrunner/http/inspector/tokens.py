"""The input tokens a recorded answer reports, whatever API it is in (pure).

Read when a pair is shown, never while it is answered: the answers already carry the
count, so the inspector shows it without asking the engine again.
"""

from __future__ import annotations

from typing import Any

import msgspec


def input_tokens(answer: bytes | str) -> int | None:
    """The prompt's tokens in an answer: Anthropic's count_tokens (``input_tokens``), its
    messages and Responses (``usage.input_tokens``), OpenAI (``usage.prompt_tokens``),
    Ollama (``prompt_eval_count``); None when the answer has none (or is not JSON)."""
    try:
        body: Any = msgspec.json.decode(answer)
    except msgspec.DecodeError:
        return None
    if not isinstance(body, dict):
        return None
    usage = body.get("usage")
    usage = usage if isinstance(usage, dict) else {}
    for found in (
        body.get("input_tokens"),
        usage.get("input_tokens"),
        usage.get("prompt_tokens"),
        body.get("prompt_eval_count"),
    ):
        if isinstance(found, int) and not isinstance(found, bool):
            return found
    return None
