"""Greedy sampling without the sampler chain picks what the chain picks, on the real
SmolLM2's logits: each step's token both ways, with and without logit_bias; and, on made-up
logits, the shortcut that adds no bias to the whole vocabulary picks what adding it would."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.engine


def biased_argmax(logits: np.ndarray, bias: tuple) -> int:
    """The plain way: the bias added to a copy of every logit, then the first maximum."""
    biased = logits.copy()
    for token, amount in bias:
        biased[token] += np.float32(amount)
    return int(np.argmax(biased))


FLAT = np.zeros(8, np.float32)
PEAK = np.array([0, 1, 5, 1, 0, 5, 2, 0], np.float32)  # tokens 2 and 5 tie at the top


@pytest.mark.parametrize(
    ("logits", "bias", "expected"),
    [
        (PEAK, (), 2),  # a tie goes to the lowest token
        (PEAK, ((0, -100.0),), 2),  # a banned token that was not the best
        (PEAK, ((2, -100.0),), 5),  # the best banned: the next one
        (PEAK, ((2, -100.0), (5, -100.0)), 6),
        (PEAK, ((6, 3.5),), 6),  # a biased token beats the best
        (PEAK, ((6, 3.0),), 2),  # a biased tie with a higher token loses
        (PEAK, ((6, 2.5), (6, 1.0)), 6),  # listed twice, added twice
        (PEAK, ((6, 3.0), (0, 5.0)), 0),  # a biased tie with a lower token
        (FLAT, ((3, 0.0),), 0),
        (FLAT, ((0, -1.0),), 1),
        (np.array([1e-8, 1.0], np.float32), ((0, 1.0),), 0),  # float32 addition, as llama.cpp
    ],
)
def test_greedy_adds_only_the_biases_that_matter(
    logits: np.ndarray, bias: tuple, expected: int
) -> None:
    from modelrunner.engines.llamacpp.sampling import greedy

    pairs = tuple((token, np.float32(amount)) for token, amount in bias)
    assert greedy(logits, pairs) == expected == biased_argmax(logits, bias)
    assert greedy(logits.copy(), pairs) == expected  # and the logits are left as they were


def test_greedy_on_random_logits_and_biases() -> None:
    from modelrunner.engines.llamacpp.sampling import greedy

    rng = np.random.default_rng(7)
    for _ in range(2000):
        logits = rng.integers(-3, 4, 64).astype(np.float32)  # many ties
        before = logits.copy()
        bias = tuple(
            (int(rng.integers(0, 64)), float(rng.choice([-100.0, -1.0, 0.5, 1.0, 3.0])))
            for _ in range(int(rng.integers(0, 5)))
        )
        pairs = tuple((token, np.float32(amount)) for token, amount in bias)
        assert greedy(logits, pairs) == biased_argmax(logits, bias), (logits, bias)
        assert np.array_equal(logits, before)


@pytest.mark.parametrize(
    "bias",
    [
        (),
        ((2, -100.0),),  # an end token banned, as the benchmarks do
        ((28, 7.5), (29, 7.5), (28, 1.0)),  # a token listed twice adds twice
    ],
)
def test_greedy_picks_what_the_chain_picks(smollm2_gguf: Path, bias: tuple) -> None:
    import llama_cpp as C

    from modelrunner.engines.llamacpp.model import Batch, Context, ContextSettings, Model
    from modelrunner.engines.llamacpp.params import Sampling
    from modelrunner.engines.llamacpp.sampling import SamplerChain

    model = Model(str(smollm2_gguf))
    context = Context(model, ContextSettings(256, 1, 64, 64, 1, 1))
    batch = Batch(64)
    chain = SamplerChain(model, Sampling(temperature=0, logit_bias=bias))
    assert chain._argmax is not None  # the fast path is what is tested
    reference = C.llama_sampler_chain_init(C.llama_sampler_chain_default_params())
    if bias:
        entries = (C.llama_logit_bias * len(bias))(*(C.llama_logit_bias(t, b) for t, b in bias))
        C.llama_sampler_chain_add(
            reference, C.llama_sampler_init_logit_bias(model.n_vocab, len(bias), entries)
        )
    C.llama_sampler_chain_add(reference, C.llama_sampler_init_greedy())
    try:
        tokens = model.tokenize("Once upon a time, in a land of 1, 2, 3", add_special=True)
        for pos, token in enumerate(tokens):
            index = batch.add(token, pos, 0, pos == len(tokens) - 1)
        picked = []
        for pos in range(len(tokens), len(tokens) + 24):
            assert batch.decode(context) == 0
            ours = chain.sample(context, index)
            assert ours == C.llama_sampler_sample(reference, context.ptr, index), picked
            picked.append(ours)
            batch.clear()
            index = batch.add(ours, pos, 0, True)
        assert len(set(picked)) > 3  # it generated text, not one token again and again
    finally:
        C.llama_sampler_free(reference)
        chain.close()
        batch.close()
        context.close()
