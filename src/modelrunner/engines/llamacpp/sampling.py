"""One sampler chain per request, built from its ``Sampling`` settings.

A request owns its chain, its RNG (the ``dist`` sampler's seed) and its optional grammar
matcher, so what one request asks for never changes another's tokens: a seeded request
gives the same text alone or beside others. Temperature 0 is greedy (no RNG at all).
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from typing import Any, NamedTuple

import llama_cpp as C
import numpy as np

from modelrunner.engines.llamacpp.model import Context, Model
from modelrunner.engines.llamacpp.params import Sampling
from modelrunner.engines.llamacpp.structured.errors import InvalidRequest
from modelrunner.engines.llamacpp.structured.grammar_sampling import sample_with_grammar
from modelrunner.engines.llamacpp.structured.loop_guard import LoopGuard
from modelrunner.engines.serving import RequestError

DEFAULT_SEED = 0xFFFFFFFF  # llama.cpp's "no seed given"


class TokenLogprob(NamedTuple):
    token: int
    logprob: float


class SampledLogprobs(NamedTuple):
    chosen: TokenLogprob
    top: tuple[TokenLogprob, ...]  # most likely first


class SamplerChain:
    """A llama_sampler chain; ``close`` frees it (and every sampler it holds)."""

    def __init__(self, model: Model, sampling: Sampling, server_seed: int = DEFAULT_SEED) -> None:
        params = C.llama_sampler_chain_default_params()
        params.no_perf = True
        self.ptr: Any = C.llama_sampler_chain_init(params)
        self.matcher: Any = None  # kept out of the chain: see structured.grammar_sampling
        self.guard: LoopGuard | None = None  # with the grammar: see structured.loop_guard
        self._argmax: tuple[tuple[int, Any], ...] | None = None  # greedy: its logit_bias
        self._end = model.end_token
        try:
            self._build(model, sampling, server_seed)
        except BaseException:
            self.close()
            raise

    def _add(self, sampler: Any) -> None:
        C.llama_sampler_chain_add(self.ptr, sampler)

    def _build(self, model: Model, s: Sampling, server_seed: int) -> None:
        if s.logit_bias:
            entries = (C.llama_logit_bias * len(s.logit_bias))(
                *(C.llama_logit_bias(token, bias) for token, bias in s.logit_bias)
            )
            self._add(C.llama_sampler_init_logit_bias(model.n_vocab, len(s.logit_bias), entries))
        penalised = s.repeat_penalty != 1.0 or bool(s.frequency_penalty or s.presence_penalty)
        if penalised:
            self._add(
                # llama-cpp-python 0.3.36's llama.h takes the vocabulary size first.
                C.llama_sampler_init_penalties(
                    model.n_vocab,
                    s.penalty_last_n,
                    s.repeat_penalty,
                    s.frequency_penalty,
                    s.presence_penalty,
                )
            )
        if s.grammar is not None:
            try:
                self.matcher = model.masks.matcher(s.grammar)
            except InvalidRequest as exc:
                raise RequestError(400, str(exc), exc.param) from None
            self.guard = LoopGuard(model.closers, model.piece)
        if s.temperature <= 0:
            self._add(C.llama_sampler_init_greedy())
            if not penalised and self.matcher is None:
                self._argmax = tuple((token, np.float32(b)) for token, b in s.logit_bias)
            return
        if s.top_k > 0:
            self._add(C.llama_sampler_init_top_k(s.top_k))
        if s.typical_p < 1.0:
            self._add(C.llama_sampler_init_typical(s.typical_p, 1))
        if s.top_p < 1.0:
            self._add(C.llama_sampler_init_top_p(s.top_p, 1))
        if s.min_p > 0.0:
            self._add(C.llama_sampler_init_min_p(s.min_p, 1))
        self._add(C.llama_sampler_init_temp(s.temperature))
        seed = s.seed if s.seed is not None else server_seed
        if seed == DEFAULT_SEED:
            seed = random.getrandbits(32) & 0x7FFFFFFF
        self._add(C.llama_sampler_init_dist(seed))

    def sample(self, context: Context, index: int) -> int:
        """Pick the token for the batch's ``index``-th output and record it in the chain
        (penalties and grammar follow the text generated so far)."""
        if self.matcher is not None:
            logits = context.logits(index)
            return sample_with_grammar(self.ptr, self.matcher, logits, self._end, self.guard)
        if self._argmax is not None:
            return greedy(context.logits(index), self._argmax)
        return int(C.llama_sampler_sample(self.ptr, context.ptr, index))

    def close(self) -> None:
        if self.ptr:
            C.llama_sampler_free(self.ptr)
            self.ptr = None
        self.matcher = None


def greedy(logits: Any, bias: Sequence[tuple[int, Any]]) -> int:
    """The token the chain [logit_bias, greedy] picks, without it: llama_sampler_sample
    first builds a candidate for every token of the vocabulary (49,152 for SmolLM2), a
    tenth of a millisecond per token that one argmax over the logits does not pay. The
    same float32 additions, in the same order, and the same tie-break (the lowest token)
    give the same token.

    Nor is the vocabulary copied to add the biases: when the raw argmax carries no bias, it
    is also the first best of the unbiased tokens, so only a biased token can beat it (the
    usual case: the end tokens banned). ``bias``: (token, np.float32 amount) pairs."""
    best = int(np.argmax(logits))
    if not bias:
        return best
    values: dict[int, Any] = {}
    for token, amount in bias:  # a token listed twice adds twice, as in the sampler
        values[token] = values.get(token, logits[token]) + amount
    if best in values:
        biased = logits.copy()
        for token, value in values.items():
            biased[token] = value
        return int(np.argmax(biased))
    winner, top = best, logits[best]
    for token, value in values.items():
        if value > top or (value == top and token < winner):
            winner, top = token, value
    return winner


def logprobs_of(context: Context, index: int, token: int, k: int) -> SampledLogprobs:
    """The sampled token's log-probability and the ``k`` most likely tokens' under the raw
    model distribution (before temperature, penalties or grammar), as OpenAI reports them."""
    logits = context.logits(index)
    peak = float(logits.max())
    log_total = peak + math.log(float(np.exp(logits - peak).sum()))
    top: tuple[TokenLogprob, ...] = ()
    if k > 0:
        ids = np.argpartition(-logits, k - 1)[:k]
        ids = ids[np.argsort(-logits[ids], kind="stable")]
        top = tuple(TokenLogprob(int(t), float(logits[t]) - log_total) for t in ids)
    return SampledLogprobs(TokenLogprob(token, float(logits[token]) - log_total), top)
