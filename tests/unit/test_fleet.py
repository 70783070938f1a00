"""The fleet plan: manifests placed on inventory hosts, estimated and judged per host;
`mr plan --fleet` and `mr lint --inventory` as a CI job calls them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import msgspec
import pytest

from modelrunner.cli import main
from modelrunner.estimate import Budget, KvShape, ModelFacts
from modelrunner.fleet import (
    FleetHost,
    plan_fleet,
    read_inventory,
    selector_findings,
    unplaceable,
)
from modelrunner.manifest.spec import ModelManifest, Placement
from modelrunner.placement import Host

GiB, MiB = 1024**3, 1024**2


def spec(name: str, **fields: Any) -> ModelManifest:
    doc = {"apiVersion": "modelrunner/v1", "name": name, "model": "ai/m", **fields}
    return msgspec.convert(doc, ModelManifest)


def host(name: str, memory: int, gpus: tuple[int, ...] = (), **labels: str) -> FleetHost:
    return FleetHost(Host(name, labels), Budget(memory, sum(gpus) or None, "test"), gpus)


SMALL = ModelFacts("gguf", 100 * MiB, KvShape(30, 9, (3,), 576))  # ~150 MiB at 1024 tokens


def test_plan_fleet_places_estimates_and_judges() -> None:
    hosts = [
        host("cpu-1", 2 * GiB, tier="cpu"),
        host("cpu-2", 200 * MiB, tier="cpu"),  # both cpu models land here: too small
        host("gpu-1", 64 * GiB, (80 * GiB,), gpu="h100"),
        host("spare", 8 * GiB),
    ]
    specs = [
        spec("a", context_size=1024, placement={"match_labels": {"tier": "cpu"}}),
        spec("b", context_size=1024, placement={"hosts": ["cpu-2"]}),
        spec("g", engine="vllm", placement={"match_labels": {"gpu": "h100"}}),
        spec("lost", placement={"match_labels": {"gpu": "b200"}}),
    ]
    facts = {"a": SMALL, "b": SMALL, "g": None, "lost": SMALL}
    plan = plan_fleet(hosts, specs, facts)
    by_name = {h.name: h for h in plan.hosts}
    assert by_name["cpu-1"].models == ("a",)
    assert by_name["cpu-2"].models == ("a", "b")
    assert by_name["gpu-1"].models == ("g",)
    assert by_name["gpu-1"].estimates["g"].need == int(80 * GiB * 0.9)
    assert plan.unplaced == ("lost",)
    assert plan.empty == ("spare",)
    assert [h.name for h in plan.failing] == ["cpu-2"]
    (failure,) = by_name["cpu-2"].failures()
    assert failure.startswith("host cpu-2 is over-committed: its models need ")
    assert failure.endswith("its budget is 200 MiB")


@pytest.mark.parametrize(
    ("vllm", "gpus", "why"),
    [
        ({"tensor_parallel_size": 2}, (GiB,), "= 2 GPUs, the host has 1"),
        ({"tensor_parallel_size": 2, "pipeline_parallel_size": 2}, (GiB,) * 3, "= 4 GPUs"),
        ({"tensor_parallel_size": 2}, (GiB, GiB), None),
        # the Ray backend spans hosts: not judged by one host's GPUs
        (
            {"pipeline_parallel_size": 4, "distributed_executor_backend": "ray"},
            (GiB,),
            None,
        ),
        ({"tensor_parallel_size": 2}, (), None),  # vLLM CPU: no GPU count to judge
    ],
)
def test_unplaceable_vllm_width(
    vllm: dict[str, Any], gpus: tuple[int, ...], why: str | None
) -> None:
    got = unplaceable(spec("v", vllm=vllm), host("h", GiB, gpus))
    if why is None:
        assert got is None
    else:
        assert got is not None and why in got


def test_an_unplaceable_model_fails_its_host() -> None:
    plan = plan_fleet(
        [host("gpu-1", 64 * GiB, (80 * GiB,))], [spec("v", vllm={"tensor_parallel_size": 2})], {}
    )
    (failure,) = plan.failing[0].failures()
    assert failure.startswith("host gpu-1 cannot run v: tensor_parallel_size x ")


@pytest.mark.parametrize(
    ("placement", "findings"),
    [
        (None, []),
        ({"hosts": ["a"]}, []),
        (
            {"hosts": ["a", "zz"]},
            [(("placement", "hosts", 1), "no host 'zz' in the inventory")],
        ),
        ({"match_labels": {"gpu": "h100"}}, []),
        (
            {"match_labels": {"gpu": "b200"}},
            [
                (
                    ("placement", "match_labels", "gpu"),
                    "no host of the inventory has the label gpu=b200",
                ),
                (("placement",), "selects no host of the inventory"),
            ],
        ),
        # each part matches some host, but no host has both
        (
            {"hosts": ["b"], "match_labels": {"gpu": "h100"}},
            [(("placement",), "selects no host of the inventory")],
        ),
    ],
)
def test_selector_findings(
    placement: dict[str, Any] | None, findings: list[tuple[tuple[Any, ...], str]]
) -> None:
    hosts = [Host("a", {"gpu": "h100"}), Host("b", {})]
    chosen = None if placement is None else msgspec.convert(placement, Placement)
    assert selector_findings(chosen, hosts) == findings


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("hosts:\n  - name: a\n    memory: lots\n", "$.hosts[0]: 'lots': not a size"),
        ("hosts:\n  - name: a\n    memory: 1G\n    labls: {}\n", "2:5: Object contains unknown"),
        ("hosts:\n  - {name: a, memory: 1G}\n  - {name: a, memory: 2G}\n", "listed twice"),
        ("hosts: []\n", "1:8: Expected `array` of length >= 1"),
        ("hosts: [\n", "YAML syntax error"),
        ("hosts:\n  - name: a\n", "missing required field `memory`"),
    ],
)
def test_read_inventory_refuses(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "hosts.yaml"
    path.write_text(text)
    with pytest.raises(ValueError, match=r"hosts\.yaml") as info:
        read_inventory(path)
    assert message in str(info.value)


def test_read_inventory(tmp_path: Path) -> None:
    path = tmp_path / "hosts.yaml"
    path.write_text(
        "hosts:\n"
        "  - name: gpu-1\n    labels: {gpu: h100}\n    memory: 64GiB\n    gpus: [80GiB, 80GiB]\n"
        "  - name: cpu-1\n    memory: 1.5G\n"
    )
    gpu, cpu = read_inventory(path)
    assert gpu == FleetHost(
        Host("gpu-1", {"gpu": "h100"}),
        Budget(64 * GiB, 160 * GiB, "inventory memory 64GiB"),
        (80 * GiB, 80 * GiB),
    )
    assert (cpu.host, cpu.budget.ram, cpu.gpus) == (Host("cpu-1", {}), int(1.5 * GiB), ())


# ---- the CLI, on the real SmolLM2 GGUF ---------------------------------------------------

INVENTORY = """hosts:
  - name: cpu-1
    labels: {tier: cpu, zone: a}
    memory: 4GiB
  - name: cpu-2
    labels: {tier: cpu, zone: b}
    memory: 600MiB
  - name: gpu-1
    labels: {gpu: h100}
    memory: 64GiB
    gpus: [80GiB]
"""


@pytest.fixture
def fleet_repo(tmp_path: Path, smollm2_gguf: Path) -> tuple[Path, Path]:
    folder = tmp_path / "models.d"
    folder.mkdir()
    manifests = {
        # on both CPU hosts: ~300 MiB each
        "chat": "context_size: 4096\nplacement: {match_labels: {tier: cpu}}\n",
        # only on cpu-2, which then needs ~1 GiB of its 600 MiB
        "long": "context_size: 16384\nllama.cpp: {parallel: 2}\nplacement: {hosts: [cpu-2]}\n",
        "lost": "placement: {match_labels: {gpu: b200}}\n",
    }
    for name, extra in manifests.items():
        (folder / f"{name}.yaml").write_text(
            f"apiVersion: modelrunner/v1\nmodel: {smollm2_gguf}\n{extra}"
        )
    inventory = tmp_path / "hosts.yaml"
    inventory.write_text(INVENTORY)
    return inventory, folder


def test_mr_plan_fleet_names_the_over_committed_host(
    fleet_repo: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    inventory, folder = fleet_repo
    assert main(["plan", "--fleet", str(inventory), str(folder)]) == 1
    out, err = capsys.readouterr()
    assert "host cpu-2 [FAILS]" in out
    assert "host cpu-1 [ok]" in out
    assert "models that select no host: lost" in out
    assert "hosts left empty: gpu-1" in out
    assert "mr plan: host cpu-2 is over-committed: its models need" in err
    assert "cpu-1 is over-committed" not in err


def test_mr_plan_fleet_json_and_github(
    fleet_repo: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    inventory, folder = fleet_repo
    assert main(["plan", "--fleet", str(inventory), str(folder), "--format", "json"]) == 1
    data = json.loads(capsys.readouterr().out)
    hosts = {h["name"]: h for h in data["hosts"]}
    assert [m["name"] for m in hosts["cpu-2"]["models"]] == ["chat", "long"]
    assert hosts["cpu-2"]["ok"] is False and hosts["cpu-1"]["ok"] is True
    chat = hosts["cpu-1"]["models"][0]
    assert chat["need_bytes"] > chat_weights(folder)  # weights plus KV cache plus process
    assert (data["unplaced_models"], data["empty_hosts"]) == (["lost"], ["gpu-1"])

    assert main(["plan", "--fleet", str(inventory), str(folder), "--format", "github"]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("::error file=")
    assert "title=mr plan --fleet::host cpu-2 is over-committed" in lines[0]
    assert any("::warning" in line and "model lost selects no host" in line for line in lines)


def chat_weights(folder: Path) -> int:
    model = (folder / "chat.yaml").read_text().split("model: ")[1].split("\n")[0]
    return Path(model).stat().st_size


def test_mr_plan_fleet_passes_when_every_host_fits(
    fleet_repo: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    inventory, folder = fleet_repo
    inventory.write_text(INVENTORY.replace("600MiB", "4GiB"))
    assert main(["plan", "--fleet", str(inventory), str(folder)]) == 0
    assert "0 failing host(s)" in capsys.readouterr().err


def test_mr_lint_with_an_inventory_warns_on_selectors_matching_nothing(
    fleet_repo: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    inventory, folder = fleet_repo
    assert main(["lint", "--inventory", str(inventory), str(folder)]) == 0
    out = capsys.readouterr().out.splitlines()
    lost = str(folder / "lost.yaml")
    assert out == [
        f"{lost}:3:1: $.placement: warning: selects no host of the inventory",
        f"{lost}:3:28: $.placement.match_labels.gpu: warning: no host of the inventory has "
        "the label gpu=b200",
    ]
    assert main(["lint", "--strict", "--inventory", str(inventory), str(folder)]) == 1
    capsys.readouterr()
    assert main(["lint", str(folder)]) == 0  # without an inventory nothing is known
    assert capsys.readouterr().out == ""


def test_sizes_come_from_the_local_store(
    tmp_path: Path,
    smollm2_gguf: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A model packaged into the store (as `mr pull` leaves it) is estimated from there,
    with the artifact's own context size; one that is not there is unknown."""
    from modelrunner.store.store import Store

    store = tmp_path / "store"
    Store(store).package("team/smol:1", gguf=smollm2_gguf, context_size=2048)
    monkeypatch.setenv("MR_STORE_DIR", str(store))
    folder = tmp_path / "models.d"
    folder.mkdir()
    (folder / "smol.yaml").write_text("apiVersion: modelrunner/v1\nmodel: team/smol:1\n")
    (folder / "absent.yaml").write_text("apiVersion: modelrunner/v1\nmodel: team/absent:1\n")
    inventory = tmp_path / "hosts.yaml"
    inventory.write_text("hosts:\n  - {name: h, memory: 1GiB}\n")
    assert main(["plan", "--fleet", str(inventory), str(folder), "--format", "json"]) == 0
    (host,) = json.loads(capsys.readouterr().out)["hosts"]
    models = {m["name"]: m for m in host["models"]}
    assert models["absent"]["need_bytes"] is None
    assert "for 2048 tokens" in models["smol"]["detail"]
    assert models["smol"]["need_bytes"] > smollm2_gguf.stat().st_size
    assert host["fit"][0]["unknown"] == ["absent"]
