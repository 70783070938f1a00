"""The registry entry and the status record, computed from a model's state (pure)."""

from __future__ import annotations

from pathlib import Path

from modelrunner.gate import Gate
from modelrunner.model_files import ModelFiles
from modelrunner.reconcile import lifecycle as lc
from modelrunner.reconcile.views import Running, served_view, status_view
from modelrunner.registry import Endpoint
from tests.unit.reconcile.test_lifecycle import (
    ALIAS,
    FILES,
    POLICY,
    SERVING,
    STARTING,
    V1,
    V2,
    desired,
)

RUNNING = Running("m-1", "llama.cpp", Endpoint("m-1", "llama.cpp", "http://127.0.0.1:1"))


def run(state: lc.ModelState, *events: lc.Event) -> lc.ModelState:
    for event in events:
        state, _ = lc.step(state, event, POLICY)
    return state


def test_serving() -> None:
    status = status_view(SERVING, RUNNING, None, 10.0)
    assert status is not None
    assert (status.phase, status.instance, status.digest, status.last_error) == (
        "ready", "m-1", "sha256:aa", None
    )  # fmt: skip
    assert (status.updated_at, status.ready_at) == (10.0, 10.0)
    again = status_view(SERVING, RUNNING, status, 20.0)
    assert again is not None and (again.updated_at, again.ready_at) == (10.0, 10.0)
    served = served_view(SERVING, RUNNING, gate=Gate(), activate=lambda: None, created=1.0)
    assert served is not None
    assert (served.endpoint, served.unavailable_reason) == (RUNNING.endpoint, None)


def test_in_place_edit_shows_at_once_and_limits_reach_the_gate() -> None:
    limited = desired("v1-limits", aliases=["a"], limits={"max_concurrent_requests": 2,
                                                          "request_timeout": "30s"})  # fmt: skip
    state = run(SERVING, lc.ManifestRead(limited))
    gate = Gate()
    served = served_view(state, RUNNING, gate=gate, activate=lambda: None, created=1.0)
    assert served is not None
    assert (served.aliases, served.gate, served.request_timeout) == (("a",), gate, 30.0)
    assert gate.limit == 2
    state = run(state, lc.ManifestRead(ALIAS))
    served_view(state, RUNNING, gate=gate, activate=lambda: None, created=1.0)
    assert gate.limit is None  # the limit removed in place


def test_a_restart_class_change_on_its_way_shows_the_serving_version() -> None:
    state = run(SERVING, lc.ManifestRead(V2))
    status = status_view(state, RUNNING, None, 1.0)
    assert status is not None
    assert (status.phase, status.restart_key) == ("ready", V1.keys.restart)
    failed = run(state, lc.StartFailed(state.attempt, "exit 1"))
    status = status_view(failed, RUNNING, None, 1.0)
    assert status is not None and status.phase == "ready"
    assert status.last_error is not None
    assert status.last_error.startswith("change from m.yaml not applied: exit 1; retrying in 1s")
    assert status.last_error.endswith("still serving the previous version")


def test_held_manifest_error_and_its_clearing() -> None:
    held = run(SERVING, lc.ManifestRead(None, problem="m.yaml:2:1: $.contxt_size: unknown key"))
    status = status_view(held, RUNNING, None, 1.0)
    assert status is not None
    assert status.last_error == (
        "manifest invalid, last good state kept: m.yaml:2:1: $.contxt_size: unknown key"
    )
    status = status_view(run(held, lc.ManifestRead(V1)), RUNNING, status, 2.0)
    assert status is not None and status.last_error is None


def test_failed_standby_and_retired() -> None:
    failed = run(STARTING, lc.StartFailed(1, "needs 5.1 GiB, 3.2 GiB free", memory=True))
    served = served_view(failed, None, gate=Gate(), activate=lambda: None, created=1.0)
    assert served is not None and served.endpoint is None
    assert served.unavailable_reason == "does not fit in memory: needs 5.1 GiB, 3.2 GiB free"
    assert served.activate is None

    calls: list[int] = []
    lazy = run(lc.ModelState("m"), lc.ManifestRead(desired("lazy", preload=False)))
    lazy = run(lazy, lc.Pulled(1, ModelFiles("gguf", Path("/m.gguf"))))
    served = served_view(lazy, None, gate=Gate(), activate=lambda: calls.append(1), created=1.0)
    assert served is not None and served.activate is not None
    served.activate()
    assert calls == [1]
    status = status_view(lazy, None, None, 1.0)
    assert status is not None and (status.phase, status.instance) == ("standby", None)

    retired = run(SERVING, lc.ManifestRead(None))
    assert served_view(retired, RUNNING, gate=Gate(), activate=lambda: None, created=1.0) is None
    status = status_view(retired, None, None, 1.0)
    assert status is not None and status.phase == "draining"
    assert status_view(run(retired, lc.Drained(1)), None, None, 1.0) is None
    assert FILES.digest == "sha256:aa"
