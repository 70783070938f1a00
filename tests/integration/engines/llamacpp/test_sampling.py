"""Greedy sampling without the sampler chain picks what the chain picks, on the real
SmolLM2's logits: each step's token both ways, with and without logit_bias."""

from __future__ import annotations

from pathlib import Path

import pytest

pytestmark = pytest.mark.engine


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
