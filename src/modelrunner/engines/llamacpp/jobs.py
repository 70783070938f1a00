"""What the HTTP side hands the scheduler (a ``Job``) and what it gets back (events)."""

from __future__ import annotations

import queue
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple, Protocol

from modelrunner.engines.llamacpp.params import Generation

if TYPE_CHECKING:
    from modelrunner.engines.llamacpp.sampling import SampledLogprobs, SamplerChain


class TokenCounts(NamedTuple):
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int  # prompt tokens whose KV cache was reused (not decoded again)


@dataclass(frozen=True, slots=True)
class Delta:
    """One sampled token and the text it settles (may be empty: a held-back stop string
    prefix or half of a multi-byte character)."""

    text: str
    token: int
    logprobs: SampledLogprobs | None = None
    choice: int = 0  # which of the request's n choices


@dataclass(frozen=True, slots=True)
class Finished:
    reason: str  # "stop" | "length" | "cancelled"
    usage: TokenCounts
    text: str = ""  # text held back until the end (a partial stop string that never matched)
    stop: str | None = None  # the stop string that ended it (vLLM's ``stop_reason``)
    choice: int = 0  # which choice ended (a request with n choices gets n of these)


@dataclass(frozen=True, slots=True)
class Failed:
    message: str


Event = Delta | Finished | Failed


class QueueFull(Exception):
    """Every slot is busy and the waiting queue is at its bound."""


class Sink(Protocol):
    """Where a job's events go, called on the scheduler thread (``delivery.py``)."""

    def deliver(self, event: Event) -> None: ...


class Job:
    """One generation request: its prompt tokens, settings, a sampler chain per choice
    (each its own seed and grammar state) and where its events go: ``sink``, or else the
    ``events`` queue.

    The scheduler owns it from ``submit`` until it emits a ``Finished`` per choice or one
    ``Failed``; the HTTP side sets ``cancelled`` when its client goes away.
    """

    def __init__(
        self, prompt: list[int], generation: Generation, chain: SamplerChain, *more: SamplerChain
    ) -> None:
        self.prompt = prompt
        self.generation = generation
        self.chains = (chain, *more)
        self.sink: Sink | None = None
        self.events: queue.SimpleQueue[Event] = queue.SimpleQueue()
        self.cancelled = False

    @property
    def chain(self) -> SamplerChain:
        return self.chains[0]

    @property
    def n(self) -> int:
        return len(self.chains)

    def close(self) -> None:
        """Free every choice's chain (closing one twice is harmless)."""
        for chain in self.chains:
            chain.close()

    def emit(self, event: Event) -> None:
        if self.sink is None:
            self.events.put(event)
        else:
            self.sink.deliver(event)
