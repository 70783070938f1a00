"""``n`` > 1: the pure decisions about a request's choices (table-tested in tests/unit).

Every choice is a sequence of its own in the KV cache, so it takes a slot: a request asks
for at most as many choices as the engine has slots (more could never run, so it is a 400
rather than a wait), and waits in the queue until that many slots are free.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from modelrunner.engines.llamacpp.jobs import TokenCounts
from modelrunner.engines.serving import RequestError

NO_SEED: Final = 0xFFFFFFFF  # llama.cpp's "no seed given" (sampling.DEFAULT_SEED): random
_SEEDS: Final = 0xFFFFFFFF  # seeds 0 .. 0xFFFFFFFE; the last value means "random"


def check_fits(n: int, slots: int) -> None:
    """A 400 naming ``n`` when the request has more choices than the engine has slots."""
    if n > slots:
        raise RequestError(
            400,
            f"n must be at most {slots} on this model (one slot per choice; "
            f"llama.cpp.parallel is {slots}), got {n}",
            "n",
        )


def choice_seeds(request_seed: int | None, server_seed: int, n: int) -> tuple[int, ...]:
    """The ``dist`` seed of each choice: the request's seed (else the server's) plus the
    choice's index, so choice 0 is the answer n=1 would give. A random base (``NO_SEED``)
    leaves every choice random on its own. Past the top, seeds wrap to 0, never landing on
    ``NO_SEED``, which would make a seeded choice random."""
    base = request_seed if request_seed is not None else server_seed
    if base == NO_SEED:
        return (NO_SEED,) * n
    return tuple((base + i) % _SEEDS for i in range(n))


def total_usage(usages: Sequence[TokenCounts]) -> TokenCounts:
    """One answer's usage, as OpenAI counts it: the prompt once, the completions summed.
    ``usages`` is per choice, choice 0 (the one that decoded the prompt) first."""
    first = usages[0]
    completion = sum(u.completion_tokens for u in usages)
    return TokenCounts(first.prompt_tokens, completion, first.cached_tokens)
