"""A request's keep_alive: Ollama's durations, and the idle limit it sets (pure parts)."""

from __future__ import annotations

import math

import pytest

from modelrunner.http.ollama.shapes import KeepAlive
from modelrunner.http.ollama.translate import BadRequest, keep_alive_seconds
from modelrunner.keep_alive import effective, idle_limit

INF = math.inf


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (None, None),
        (0, 0.0),
        ("0", 0.0),
        (30, 30.0),
        (2.5, 2.5),
        ("300", 300.0),
        ("30s", 30.0),
        ("5m", 300.0),
        ("1h", 3600.0),
        ("1h30m", 5400.0),
        ("1.5h", 5400.0),
        ("250ms", 0.25),
        (" 10m ", 600.0),
        (-1, INF),
        ("-1", INF),
        ("-1m", INF),
        (-0.5, INF),
        (1e300, INF),  # past a century: kept loaded (a date that far overflows)
        ("1000000000h", INF),
        (3_000_000_000, 3e9),
    ],
)
def test_ollama_durations(value: KeepAlive | None, seconds: float | None) -> None:
    assert keep_alive_seconds(value) == seconds


@pytest.mark.parametrize("value", ["", "soon", "5 minutes", "5x", "m", "1h-5m", True, "nan"])
def test_bad_durations_are_a_400_naming_keep_alive(value: KeepAlive) -> None:
    with pytest.raises(BadRequest, match="keep_alive") as caught:
        keep_alive_seconds(value)
    assert caught.value.field == "keep_alive"


@pytest.mark.parametrize(
    ("manifest", "override", "expected"),
    [(300.0, None, 300.0), (300.0, 0.0, 0.0), (INF, 60.0, 60.0), (60.0, INF, INF)],
)
def test_a_request_override_wins(manifest: float, override: float | None, expected: float) -> None:
    assert effective(manifest, override) == expected


@pytest.mark.parametrize(
    ("manifest", "override", "served", "expected"),
    [
        (300.0, None, 0, 300.0),  # longer than the grace: the manifest's
        (0.0, None, 0, 10.0),  # a fresh instance waits for its first request
        (0.0, 0.0, 0, 10.0),  # keep_alive 0 set by a request still in flight
        (300.0, 0.0, 1, 0.0),  # ... once that request ended: unload when idle
        (300.0, 5.0, 3, 5.0),
        (60.0, INF, 1, INF),  # negative in the request: kept loaded
    ],
)
def test_idle_limit(manifest: float, override: float | None, served: int, expected: float) -> None:
    assert idle_limit(manifest, override, served, grace=10.0) == expected
