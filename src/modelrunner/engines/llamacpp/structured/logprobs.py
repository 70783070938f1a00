"""``logprobs`` / ``top_logprobs`` on chat completions: the request, the numbers, OpenAI's shape.

Log-probabilities are the model's own distribution (a log-softmax of the raw logits), before
temperature, penalties or a grammar reshape it, as OpenAI and llama-server report them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

from modelrunner.engines.llamacpp.structured.errors import InvalidRequest

MAX_TOP: Final = 20


def requested(body: dict[str, Any]) -> int | None:
    """None when logprobs are off; else how many alternatives each token lists (0-20)."""
    logprobs, top = body.get("logprobs"), body.get("top_logprobs")
    if logprobs is not None and not isinstance(logprobs, bool):
        raise InvalidRequest("logprobs must be true or false", "logprobs")
    if top is not None:
        if isinstance(top, bool) or not isinstance(top, int) or not 0 <= top <= MAX_TOP:
            raise InvalidRequest(
                f"top_logprobs must be an integer from 0 to {MAX_TOP}", "top_logprobs"
            )
        if not logprobs:
            raise InvalidRequest("top_logprobs needs logprobs: true", "top_logprobs")
    return (top or 0) if logprobs else None


def top(logits: Any, k: int) -> tuple[list[int], list[float], Any]:
    """The k likeliest token ids with their log-probabilities (best first), and the whole
    row's log-softmax (to look up the sampled token). ``logits``: one row, numpy-compatible."""
    import numpy as np

    row = np.asarray(logits, dtype=np.float64)
    shifted = row - row.max()
    log_probs = shifted - np.log(np.exp(shifted).sum())
    if k <= 0:
        return [], [], log_probs
    best = np.argpartition(-log_probs, k - 1)[:k]
    best = best[np.argsort(-log_probs[best], kind="stable")]
    return [int(i) for i in best], [float(log_probs[i]) for i in best], log_probs


def entry(
    piece: bytes, logprob: float, alternatives: Sequence[tuple[bytes, float]]
) -> dict[str, Any]:
    """One token of ``choices[].logprobs.content``. ``piece``: the token's bytes (a multi-byte
    character may span tokens, so bytes are given as they are and the text is best effort)."""
    return {**_token(piece, logprob), "top_logprobs": [_token(b, lp) for b, lp in alternatives]}


def _token(piece: bytes, logprob: float) -> dict[str, Any]:
    return {
        "token": piece.decode("utf-8", errors="replace"),
        "logprob": max(logprob, -9999.0),  # JSON has no -inf
        "bytes": list(piece),
    }


def choice_logprobs(entries: list[dict[str, Any]]) -> dict[str, Any]:
    """The ``logprobs`` object of a choice or a stream chunk's choice."""
    return {"content": entries, "refusal": None}
