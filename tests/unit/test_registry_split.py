"""The registry during a canary: its split picks the endpoint per request, and a request's
failure counts against the endpoint that answered it (a 4xx does not)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from modelrunner.errors import UpstreamFailed
from modelrunner.registry import Endpoint, Registry, ServedModel, Split


def served() -> tuple[Registry, Endpoint, Endpoint]:
    registry = Registry()
    stable = Endpoint("old", "llama.cpp", "http://old", revision="aaaa")
    canary = Endpoint("new", "llama.cpp", "http://new", revision="bbbb")
    registry.publish(ServedModel("m", "llama.cpp", endpoint=stable, split=Split(canary, 25)))
    return registry, stable, canary


def test_the_split_sends_its_share_to_the_canary() -> None:
    registry, _, canary = served()
    picked = []
    for _ in range(100):
        with registry.acquire("m") as (_, endpoint):
            picked.append(endpoint is canary)
    assert sum(picked) == 25 and canary.served == 25


def test_a_session_stays_on_one_revision() -> None:
    registry, _, _ = served()
    seen = set()
    for _ in range(20):
        with registry.acquire("m", "conversation-1") as (_, endpoint):
            seen.add(endpoint.revision)
    assert len(seen) == 1


@dataclass
class _Problem:
    status: int


class _Rejected(Exception):
    def __init__(self, status: int) -> None:
        super().__init__("rejected")
        self.problem = _Problem(status)


@pytest.mark.parametrize(
    ("error", "counted"),
    [(UpstreamFailed("engine failed"), 1), (_Rejected(502), 1), (_Rejected(400), 0)],
)
def test_failures_count_against_the_endpoint_that_answered(error: Exception, counted: int) -> None:
    registry = Registry()
    only = Endpoint("one", "llama.cpp", "http://one")
    registry.publish(ServedModel("m", "llama.cpp", endpoint=only))
    with pytest.raises(type(error)), registry.acquire("m"):
        raise error
    assert (only.errors, only.served, only.in_flight) == (counted, 1, 0)
