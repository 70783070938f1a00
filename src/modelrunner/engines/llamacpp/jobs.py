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


@dataclass(frozen=True, slots=True)
class Finished:
    reason: str  # "stop" | "length" | "cancelled"
    usage: TokenCounts
    text: str = ""  # text held back until the end (a partial stop string that never matched)
    stop: str | None = None  # the stop string that ended it (vLLM's ``stop_reason``)


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
    """One generation request: its prompt tokens, settings, sampler chain and where its
    events go: ``sink``, or else the ``events`` queue.

    The scheduler owns it from ``submit`` until it emits ``Finished`` or ``Failed``; the
    HTTP side sets ``cancelled`` when its client goes away.
    """

    def __init__(self, prompt: list[int], generation: Generation, chain: SamplerChain) -> None:
        self.prompt = prompt
        self.generation = generation
        self.chain = chain
        self.sink: Sink | None = None
        self.events: queue.SimpleQueue[Event] = queue.SimpleQueue()
        self.cancelled = False

    def emit(self, event: Event) -> None:
        if self.sink is None:
            self.events.put(event)
        else:
            self.sink.deliver(event)
