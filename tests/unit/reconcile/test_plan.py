"""plan(desired, observed): one table row per change class, no processes, no files."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from modelrunner.manifest.load import LoadResult, load_text
from modelrunner.manifest.spec import ModelManifest
from modelrunner.reconcile.changes import FIELD_CLASS, keys
from modelrunner.reconcile.desired import Desired, DesiredState, desired_state
from modelrunner.reconcile.plan import Observed, plan, plan_one

BASE: dict[str, Any] = {
    "apiVersion": "modelrunner/v1",
    "name": "m",
    "model": "ai/smollm2:135M-Q4_1",
    "engine": "llama.cpp",
    "context_size": 2048,
    "aliases": ["a"],
    "llama.cpp": {"threads": 2},
}


def desired(file: str = "m.yaml", **change: Any) -> Desired:
    spec = msgspec.convert({**BASE, **change}, ModelManifest)
    return Desired(spec, file, "hash", keys(spec))


def observed(d: Desired, *, failed: bool = False) -> Observed:
    return Observed(d.spec.name, d.keys, d.file, failed=failed)


def desired_from(change: dict[str, Any], drop: tuple[str, ...] = ()) -> Desired:
    document = {k: v for k, v in {**BASE, **change}.items() if k not in drop}
    spec = msgspec.convert(document, ModelManifest)
    return Desired(spec, "m.yaml", "hash", keys(spec))


RUNNING = desired()


@pytest.mark.parametrize(
    ("change", "drop", "kind", "pull"),
    [
        ({}, (), "noop", False),
        ({"aliases": ["a", "b"]}, (), "update", False),
        ({}, ("aliases",), "update", False),
        ({"description": "hello"}, (), "update", False),
        ({"keep_alive": "10m"}, (), "update", False),
        ({"limits": {"max_concurrent_requests": 2}}, (), "update", False),
        ({"pull_policy": "always"}, (), "update", False),
        ({"preload": False}, (), "update", False),
        ({"context_size": 4096}, (), "replace", False),
        ({"llama.cpp": {"threads": 1}}, (), "replace", False),
        ({"runtime_flags": ["--seed", "1"]}, (), "replace", False),
        ({"env": {"A": "1"}}, (), "replace", False),
        ({}, ("engine",), "replace", False),
        ({"model": "ai/smollm2:360M-Q4_K_M"}, (), "replace", True),
        ({"model": "ai/smollm2:360M-Q4_K_M", "context_size": 1}, (), "replace", True),
    ],
    ids=str,
)
def test_change_classes(
    change: dict[str, Any], drop: tuple[str, ...], kind: str, pull: bool
) -> None:
    action = plan_one("m", desired_from(change, drop), observed(RUNNING))
    assert (action.kind, action.pull) == (kind, pull)


def test_moving_a_model_to_another_file_is_an_update() -> None:
    assert plan_one("m", desired(file="n.yaml"), observed(RUNNING)).kind == "update"


def test_create_retire_noop() -> None:
    assert plan_one("m", RUNNING, None).kind == "create"
    assert plan_one("m", RUNNING, None).pull is True
    assert plan_one("m", None, observed(RUNNING)).kind == "retire"
    assert plan_one("m", None, None).kind == "noop"


def test_held_beats_everything() -> None:
    assert plan_one("m", None, observed(RUNNING), held=True).kind == "hold"


def test_failed_models_wait_for_a_retry_unless_they_changed() -> None:
    failed = observed(RUNNING, failed=True)
    assert plan_one("m", RUNNING, failed).kind == "noop"
    assert plan_one("m", RUNNING, failed, retry_failed=True).kind == "retry"
    assert plan_one("m", desired_from({"context_size": 1024}), failed).kind == "replace"


def test_every_manifest_field_has_a_change_class() -> None:
    assert set(FIELD_CLASS) == set(ModelManifest.__struct_fields__)


def test_alias_edit_keeps_the_restart_key() -> None:
    a, b = desired(), desired_from({"aliases": ["x", "y"], "description": "d"})
    assert a.keys.restart == b.keys.restart
    assert a.keys.pull == b.keys.pull
    assert a.keys.in_place != b.keys.in_place


GOOD = "apiVersion: modelrunner/v1\nmodel: ai/smollm2:135M-Q4_1\n"


def load(files: dict[str, str]) -> LoadResult:
    result = LoadResult()
    for name, text in files.items():
        result.extend(load_text(text, name, name.removesuffix(".yaml")))
    return result


def test_invalid_file_holds_its_models_and_only_them() -> None:
    applied = {"a": "a.yaml", "b": "b.yaml", "c": "c.yaml"}
    state = desired_state(load({"a.yaml": GOOD + "context_size: 0\n", "b.yaml": GOOD}), applied)
    assert state.held == {"a"}
    assert set(state.models) == {"b"}
    actions = {a.name: a.kind for a in plan(state, {n: obs(n, f) for n, f in applied.items()})}
    assert actions == {"a": "hold", "b": "noop", "c": "retire"}


def obs(name: str, file: str) -> Observed:
    (loaded,) = load_text(GOOD, file, name).manifests
    return Observed(name, keys(loaded.spec), file)


def test_plan_covers_every_name_once() -> None:
    state = DesiredState(models={"new": RUNNING}, held=frozenset({"kept"}), problems=())
    seen = {"kept": observed(RUNNING), "gone": observed(RUNNING)}
    assert [(a.name, a.kind) for a in plan(state, seen)] == [
        ("gone", "retire"),
        ("kept", "hold"),
        ("new", "create"),
    ]
