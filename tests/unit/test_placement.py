"""Placement: which hosts a manifest selects, host identity, and placement edits as a change
class of their own. Tables, no processes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
import pytest

from modelrunner.manifest.load import LoadResult, load_text
from modelrunner.manifest.spec import ModelManifest, Placement
from modelrunner.placement import (
    Host,
    describe,
    host_from,
    parse_labels,
    parse_labels_file,
    selected_hosts,
    selects,
)
from modelrunner.reconcile.changes import keys
from modelrunner.reconcile.desired import desired_state
from modelrunner.reconcile.plan import Observed, plan

GPU1 = Host("gpu-1", {"gpu": "h100", "zone": "a"})
GPU2 = Host("gpu-2", {"gpu": "h100", "zone": "b"})
CPU1 = Host("cpu-1", {"zone": "a"})
BARE = Host("bare")


def placement(**fields: Any) -> Placement:
    return msgspec.convert(fields, Placement)


@pytest.mark.parametrize(
    ("fields", "selected"),
    [
        (None, ("gpu-1", "gpu-2", "cpu-1", "bare")),  # no placement: every host
        ({"hosts": ["gpu-1"]}, ("gpu-1",)),
        ({"hosts": ["gpu-2", "cpu-1", "elsewhere-9"]}, ("gpu-2", "cpu-1")),
        ({"hosts": ["GPU-1"]}, ()),  # names compare exactly
        ({"match_labels": {"gpu": "h100"}}, ("gpu-1", "gpu-2")),
        ({"match_labels": {"gpu": "h100", "zone": "a"}}, ("gpu-1",)),  # every label
        ({"match_labels": {"zone": "a"}}, ("gpu-1", "cpu-1")),
        ({"match_labels": {"gpu": "a100"}}, ()),
        ({"match_labels": {"gpu": ""}}, ()),  # an empty value is a value, not "any"
        # both criteria must hold
        ({"hosts": ["gpu-1", "cpu-1"], "match_labels": {"gpu": "h100"}}, ("gpu-1",)),
        ({"hosts": ["cpu-1"], "match_labels": {"gpu": "h100"}}, ()),
    ],
)
def test_selects(fields: dict[str, Any] | None, selected: tuple[str, ...]) -> None:
    chosen = None if fields is None else placement(**fields)
    assert selected_hosts(chosen, (GPU1, GPU2, CPU1, BARE)) == selected
    assert selects(chosen, GPU1) == ("gpu-1" in selected)


@pytest.mark.parametrize(
    "fields",
    [
        {},  # nothing to select on
        {"hosts": []},
        {"hosts": ["a", "a"]},
        {"hosts": ["-bad"]},
        {"match_labels": {}},
        {"match_labels": {"Bad_Prefix/x": "y"}},
        {"match_labels": {"gpu": "h 100"}},
        {"match_labels": {"gpu": "x" * 64}},
        {"nodes": ["a"]},  # unknown field
    ],
)
def test_placement_refuses(fields: dict[str, Any]) -> None:
    with pytest.raises(msgspec.ValidationError):
        placement(**fields)


def test_describe() -> None:
    assert describe(None) == "every host"
    both = placement(hosts=["a", "b"], match_labels={"gpu": "h100", "zone": "a"})
    assert describe(both) == "hosts a, b and labels gpu=h100,zone=a"


@pytest.mark.parametrize(
    ("text", "labels"),
    [
        ("", {}),
        ("gpu=h100", {"gpu": "h100"}),
        (" gpu = h100 , zone=a,", {"gpu": "h100", "zone": "a"}),
        ("example.com/tier=fast", {"example.com/tier": "fast"}),
        ("empty=", {"empty": ""}),
        ("a=1,a=2", {"a": "2"}),  # the last one wins
    ],
)
def test_parse_labels(text: str, labels: dict[str, str]) -> None:
    assert parse_labels(text) == labels


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("gpu", "'gpu' is not key=value"),
        ("=x", "is not a label key"),
        ("gpu=h 100", "label gpu='h 100'"),
        ("UPPER.example/x=1", "is not a label key"),
    ],
)
def test_parse_labels_refuses(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as info:
        parse_labels(text)
    assert str(info.value).startswith("MR_HOST_LABELS: ")


DOWNWARD_API = """app.kubernetes.io/name="modelrunner"
mr.example.com/gpu="h100"
zone="a"
"""


def test_parse_labels_file_reads_the_downward_api_format() -> None:
    assert parse_labels_file(DOWNWARD_API, "/etc/podinfo/labels") == {
        "app.kubernetes.io/name": "modelrunner",
        "mr.example.com/gpu": "h100",
        "zone": "a",
    }
    assert parse_labels_file("# comment\n\nplain=yes\n", "f") == {"plain": "yes"}
    with pytest.raises(ValueError, match=r"^f:2: 'oops' is not key=value"):
        parse_labels_file("a=b\noops\n", "f")


@pytest.mark.parametrize(
    ("environ", "files", "host"),
    [
        ({}, {}, Host("machine")),
        ({"MR_HOST_NAME": "gpu-1"}, {}, Host("gpu-1")),
        ({"MR_HOST_NAME": " "}, {}, Host("machine")),
        ({"MR_HOST_LABELS": "gpu=h100"}, {}, Host("machine", {"gpu": "h100"})),
        (
            {"MR_HOST_LABELS_FILE": "/l", "MR_HOST_LABELS": "zone=b"},
            {"/l": 'zone="a"\ngpu="h100"\n'},
            Host("machine", {"zone": "b", "gpu": "h100"}),  # the variable wins
        ),
    ],
)
def test_host_from(environ: dict[str, str], files: dict[str, str], host: Host) -> None:
    def read(path: Path) -> str:
        if str(path) not in files:
            raise FileNotFoundError(2, "No such file or directory")
        return files[str(path)]

    assert host_from(environ, "machine", read) == host


def test_host_from_names_a_missing_labels_file() -> None:
    def read(path: Path) -> str:
        raise FileNotFoundError(2, "No such file or directory")

    with pytest.raises(ValueError, match="MR_HOST_LABELS_FILE=/nope: cannot read"):
        host_from({"MR_HOST_LABELS_FILE": "/nope"}, "m", read)


# ---- placement as a change class --------------------------------------------------------

BASE = """apiVersion: modelrunner/v1
name: m
model: ai/smollm2:135M-Q4_1
engine: llama.cpp
context_size: {context}
"""


def folder(placement_yaml: str = "", context: int = 2048) -> LoadResult:
    result = load_text(BASE.format(context=context) + placement_yaml, "m.yaml")
    assert not result.problems, result.problems
    return result


def running(result: LoadResult) -> dict[str, Observed]:
    spec = result.manifests[0].spec
    return {"m": Observed("m", keys(spec), "m.yaml")}


ON_GPU1 = "placement: {hosts: [gpu-1]}\n"
ON_GPU2 = "placement: {hosts: [gpu-2]}\n"
ON_H100 = "placement: {match_labels: {gpu: h100}}\n"


@pytest.mark.parametrize(
    ("before", "after", "host", "action", "reason"),
    [
        # placed here, then elsewhere: retired (drained) here ...
        (folder(ON_GPU1), folder(ON_GPU2), GPU1, "retire", "its placement selects other hosts"),
        # ... and created on the host it moved to
        (None, folder(ON_GPU2), GPU2, "create", "new manifest"),
        # a placement edit that still selects this host costs nothing here
        (folder(ON_GPU1), folder(ON_H100), GPU1, "noop", ""),
        (folder(), folder(ON_GPU1), GPU1, "noop", ""),  # added, still here
        (folder(ON_GPU1), folder(), GPU1, "noop", ""),  # removed: every host, still here
        # placement + a restart-class edit on a host that keeps it: replaced as usual
        (folder(ON_GPU1), folder(ON_H100, context=4096), GPU1, "replace", ""),
        # never here, still not here
        (None, folder(ON_GPU1), GPU2, None, ""),
        # added placement that excludes this host
        (folder(), folder(ON_GPU1), CPU1, "retire", "its placement selects other hosts"),
    ],
)
def test_placement_edit_is_a_change_class(
    before: LoadResult | None, after: LoadResult, host: Host, action: str | None, reason: str
) -> None:
    observed = running(before) if before is not None else {}
    state = desired_state(after, {"m": "m.yaml"} if before else {}, host)
    actions = plan(state, observed)
    assert [a.kind for a in actions] == ([action] if action else [])
    if reason:
        assert actions[0].reason == reason


def test_elsewhere_models_are_listed_not_desired() -> None:
    state = desired_state(folder(ON_GPU2), {}, GPU1)
    assert dict(state.models) == {}
    assert list(state.elsewhere) == ["m"]
    assert state.elsewhere["m"].spec.placement == placement(hosts=["gpu-2"])
    # without a host (lint, tools) every manifest is desired
    assert list(desired_state(folder(ON_GPU2), {}).models) == ["m"]


def test_placement_has_no_key() -> None:
    """No restart, pull or in-place key changes when only the placement does."""
    a = folder(ON_GPU1).manifests[0].spec
    b = folder(ON_H100).manifests[0].spec
    assert keys(a) == keys(b)
    assert isinstance(b, ModelManifest)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"MR_HOST_LABELS": "gpu"}, "MR_HOST_LABELS: 'gpu' is not key=value"),
        ({"MR_HOST_LABELS_FILE": "/nonexistent/labels"}, "MR_HOST_LABELS_FILE=/nonexistent"),
    ],
)
def test_mr_serve_refuses_a_bad_host_identity(
    env: dict[str, str],
    message: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from modelrunner.cli import main

    for key, value in {**env, "MR_STORE_DIR": str(tmp_path / "store")}.items():
        monkeypatch.setenv(key, value)
    assert main(["serve", "--models-dir", str(tmp_path), "--port", "1"]) == 2
    assert message in capsys.readouterr().err
