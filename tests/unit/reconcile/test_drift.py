"""Drift, decided from facts (pure): each kind named with what differs."""

from __future__ import annotations

import pytest

from modelrunner.manifest.lock import Lock, LockEntry
from modelrunner.reconcile.drift import Served, drift

A = "sha256:" + "a" * 64
B = "sha256:" + "b" * 64
LOCK = Lock({"ai/x:latest": LockEntry("ai/x:latest", A, "gguf")})


def served(phase: str = "ready", digest: str | None = A, error: str | None = None) -> Served:
    return Served("x", "ai/x", digest, "m/x.yaml", phase, error)


@pytest.mark.parametrize(
    ("lock", "remote", "models", "corrupted", "expected"),
    [
        (LOCK, {"ai/x:latest": A}, [served()], {}, []),
        (None, {}, [served(digest=B)], {}, []),  # no lock: nothing to differ from
        (LOCK, {}, [served()], {}, []),  # the registry could not be asked
        (
            LOCK,
            {"ai/x:latest": B},
            [served()],
            {},
            [("moved", f"ai/x:latest moved: {A[:19]}… -> {B[:19]}…; run `mr lock` to take it")],
        ),
        (
            LOCK,
            {"ai/x:latest": A},
            [served(digest=B)],
            {},
            [("served", f"x serves {B[:19]}… but ai/x:latest is locked to {A[:19]}…")],
        ),
        (
            LOCK,
            {},
            [served(phase="failed", digest=None, error="engine exited with code 1")],
            {},
            [("failing", "x from m/x.yaml is failing on the host: engine exited with code 1")],
        ),
        (
            None,
            {},
            [served(error="change from m/x.yaml not applied: boom; still serving the previous")],
            {},
            [
                (
                    "failing",
                    "x from m/x.yaml is failing on the host: change from m/x.yaml not "
                    "applied: boom; still serving the previous",
                )
            ],
        ),
        (None, {}, [served(error="manifest invalid, last good state kept: ...")], {}, []),
        (
            None,
            {},
            [served()],
            {"x": "blob sha256:cc... does not match"},
            [("corrupted", "x: blob sha256:cc... does not match")],
        ),
    ],
)
def test_drift(
    lock: Lock | None,
    remote: dict[str, str],
    models: list[Served],
    corrupted: dict[str, str],
    expected: list[tuple[str, str]],
) -> None:
    found = drift(lock, remote, models, {"x": "m/x.yaml"}, corrupted)
    assert [(d.kind, d.message) for d in found] == expected


def test_a_model_not_desired_here_is_not_failing_drift() -> None:
    assert drift(None, {}, [served(phase="failed")], {}, {}) == []
