"""Sampling under a grammar at nearly the cost of sampling without one.

A token mask over the whole vocabulary is the expensive part of a grammar (llguidance's is
tens of microseconds, llama.cpp's GBNF sampler 5-12 ms for SmolLM2's 49,152 tokens). As
llama-server does, the token is picked as if unconstrained and only that one is checked;
the mask is computed only when the grammar refuses it. The result is the same as masking
first: a token the grammar allows was a candidate either way, and a refused one leads to the
masked pick.
"""

from __future__ import annotations

import ctypes
import functools
from typing import Any

import llama_cpp as C
import numpy as np

from modelrunner.engines.llamacpp.structured.loop_guard import LoopGuard

# llama_token_data: id (int32), logit (float), p (float).
TOKEN_DATA = np.dtype([("id", np.int32), ("logit", np.float32), ("p", np.float32)])


def sample_with_grammar(
    chain: Any, matcher: Any, logits: Any, end: int, guard: LoopGuard | None = None
) -> int:
    """Pick a token with ``chain`` that ``matcher`` allows, and record it in both.

    ``end``: the token to end with when the grammar allows nothing (a matcher that failed,
    say on a resource limit): the answer then ends and is checked like any other.
    ``guard``: a JSON answer's loop guard; while it breaks a loop, a closing token the
    grammar allows is picked before any other."""
    closing = guard.closing() if guard is not None else None
    if closing is not None:
        wanted = allowed_tokens(matcher, len(logits)) & closing
        if wanted.any():
            return _record(
                chain, matcher, guard, _pick(chain, _candidates(np.where(wanted, logits, -np.inf)))
            )
    token = _pick(chain, _candidates(logits))
    if matcher.validate_tokens([token]) != 1:
        allowed = allowed_tokens(matcher, len(logits))
        if allowed.any():
            token = _pick(chain, _candidates(np.where(allowed, logits, -np.inf)))
        else:
            token = end
    return _record(chain, matcher, guard, token)


def _record(chain: Any, matcher: Any, guard: LoopGuard | None, token: int) -> int:
    matcher.consume_token(token)
    C.llama_sampler_accept(chain, token)
    if guard is not None:
        guard.feed(token)
    return token


def allowed_tokens(matcher: Any, n_vocab: int) -> Any:
    """The mask as one boolean per token of the vocabulary."""
    bits = np.zeros((n_vocab + 31) // 32, dtype=np.int32)
    matcher.unsafe_compute_mask_ptr(bits.ctypes.data, bits.nbytes)
    return np.unpackbits(bits.view(np.uint8), bitorder="little")[:n_vocab].astype(bool)


@functools.cache
def _ids(n: int) -> Any:
    return np.arange(n, dtype=np.int32)


def _candidates(logits: Any) -> tuple[Any, Any]:
    """(the numpy buffer, the llama_token_data_array over it): every token with its logit."""
    buffer = np.empty(len(logits), dtype=TOKEN_DATA)
    buffer["id"] = _ids(len(logits))
    buffer["logit"] = logits
    buffer["p"] = 0.0
    pointer = buffer.ctypes.data_as(ctypes.POINTER(C.llama_token_data))
    return buffer, C.llama_token_data_array(pointer, len(buffer), -1, False)


def _pick(chain: Any, candidates: tuple[Any, Any]) -> int:
    array = candidates[1]
    C.llama_sampler_apply(chain, ctypes.byref(array))
    return int(array.data[array.selected].id)
