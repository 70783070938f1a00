"""examples/kubernetes is checked: every overlay is built (the kustomize features it uses,
rendered here) and every object validates against Kubernetes' JSON schemas
(kubernetes-validate); the manifests of the ConfigMap lint clean; the fleet inventory plans.

The renderer knows exactly the kustomize features the example uses and refuses any other
key, so an edit that needs more fails here instead of going unchecked. Its output was
compared with `kubectl kustomize` (kustomize v5.5) when it was written: same objects.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from modelrunner.cli import main
from tests.fixtures.common import ROOT

KUBE = ROOT / "examples" / "kubernetes"
KUBERNETES_VERSION = "1.33.0"
KNOWN_KEYS = {
    "apiVersion",
    "kind",
    "resources",
    "configMapGenerator",
    "generatorOptions",
    "nameSuffix",
    "labels",
    "patches",
}


def _pointer(document: Any, path: str) -> tuple[Any, str | int]:
    parts = [p.replace("~1", "/").replace("~0", "~") for p in path.lstrip("/").split("/")]
    target = document
    for part in parts[:-1]:
        target = target[int(part)] if isinstance(target, list) else target[part]
    last: str | int = int(parts[-1]) if isinstance(target, list) else parts[-1]
    return target, last


def _json_patch(document: dict[str, Any], operations: list[dict[str, Any]]) -> None:
    for op in operations:
        assert op["op"] in ("add", "replace"), f"unsupported patch op {op['op']}"
        target, key = _pointer(document, op["path"])
        if isinstance(target, list):
            assert isinstance(key, int)
            target.insert(key, op["value"]) if op["op"] == "add" else target.__setitem__(
                key, op["value"]
            )
        else:
            if op["op"] == "replace":
                assert key in target, f"replace of a missing {op['path']}"
            target[key] = copy.deepcopy(op["value"])


def _add_labels(
    obj: dict[str, Any], pairs: dict[str, str], selectors: bool, templates: bool
) -> None:
    obj.setdefault("metadata", {}).setdefault("labels", {}).update(pairs)
    spec = obj.get("spec", {})
    if selectors and obj["kind"] == "Service":
        spec.setdefault("selector", {}).update(pairs)
    elif selectors and "selector" in spec:
        spec["selector"].setdefault("matchLabels", {}).update(pairs)
    if templates and "template" in spec:
        spec["template"].setdefault("metadata", {}).setdefault("labels", {}).update(pairs)


def build(folder: Path) -> list[dict[str, Any]]:
    """``kustomize build folder`` for the features examples/kubernetes uses."""
    kustomization = yaml.safe_load((folder / "kustomization.yaml").read_text())
    unknown = set(kustomization) - KNOWN_KEYS
    assert not unknown, f"{folder}: kustomize features this test does not render: {unknown}"
    objects: list[dict[str, Any]] = []
    for resource in kustomization.get("resources", []):
        path = folder / resource
        if path.is_dir():
            objects += build(path)
        else:
            objects += [d for d in yaml.safe_load_all(path.read_text()) if d]
    options = kustomization.get("generatorOptions", {})
    assert options == {} or options == {"disableNameSuffixHash": True}
    for generator in kustomization.get("configMapGenerator", []):
        assert set(generator) <= {"name", "files"}
        data = {Path(f).name: (folder / f).read_text() for f in generator["files"]}
        objects.append(
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": generator["name"]},
                "data": data,
            }
        )
    suffix = kustomization.get("nameSuffix", "")
    if suffix:
        renamed = {o["metadata"]["name"] for o in objects if o["kind"] == "ConfigMap"}
        for obj in objects:
            obj["metadata"]["name"] += suffix
            for volume in (
                obj.get("spec", {}).get("template", {}).get("spec", {}).get("volumes", [])
            ):
                if "configMap" in volume and volume["configMap"]["name"] in renamed:
                    volume["configMap"]["name"] += suffix
    for label in kustomization.get("labels", []):
        for obj in objects:
            _add_labels(
                obj,
                label["pairs"],
                label.get("includeSelectors", False),
                label.get("includeTemplates", False),
            )
    for patch in kustomization.get("patches", []):
        matched = [o for o in objects if o["kind"] == patch["target"]["kind"]]
        assert matched, f"{folder}: patch target {patch['target']} matches nothing"
        for obj in matched:
            _json_patch(obj, yaml.safe_load(patch["patch"]))
    return objects


OVERLAYS = sorted(p for p in (KUBE / "overlays").iterdir() if p.is_dir())


@pytest.mark.parametrize("overlay", OVERLAYS, ids=lambda p: p.name)
def test_overlay_builds_and_validates(overlay: Path) -> None:
    objects = build(overlay)
    assert sorted(o["kind"] for o in objects) == ["ConfigMap", "DaemonSet", "Service"]
    for obj in objects:
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
    (daemonset,) = [o for o in objects if o["kind"] == "DaemonSet"]
    pod = daemonset["spec"]["template"]
    container = pod["spec"]["containers"][0]
    env = {e["name"]: e for e in container["env"]}
    # the host identity: node name and the pod's labels through the downward API
    assert env["MR_HOST_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "spec.nodeName"}}
    labels_file = Path(env["MR_HOST_LABELS_FILE"]["value"])
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    assert mounts["podinfo"] == str(labels_file.parent)
    assert volumes["podinfo"]["downwardAPI"]["items"] == [
        {"path": labels_file.name, "fieldRef": {"fieldPath": "metadata.labels"}}
    ]
    # the class label the manifests select on is a pod label, and the nodes carry it
    class_label = {k: v for k, v in pod["metadata"]["labels"].items() if "class" in k}
    assert (
        class_label
        == pod["spec"]["nodeSelector"]
        == {"modelrunner.example.com/class": overlay.name}
    )
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    # the ConfigMap the pod mounts is the one the overlay builds
    (config_map,) = [o for o in objects if o["kind"] == "ConfigMap"]
    assert volumes["models"]["configMap"]["name"] == config_map["metadata"]["name"]


def test_a_broken_object_fails_validation() -> None:
    """The check can fail: a misspelt field is refused by the strict schema."""
    (daemonset,) = [o for o in build(OVERLAYS[0]) if o["kind"] == "DaemonSet"]
    daemonset["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(daemonset, KUBERNETES_VERSION, strict=True)


def test_argo_cd_applications_point_at_the_overlays() -> None:
    documents = list(yaml.safe_load_all((KUBE / "argocd" / "applications.yaml").read_text()))
    paths = sorted(d["spec"]["source"]["path"] for d in documents)
    assert paths == [str(p.relative_to(ROOT)) for p in OVERLAYS]
    for doc in documents:
        assert (doc["apiVersion"], doc["kind"]) == ("argoproj.io/v1alpha1", "Application")
        assert doc["spec"]["destination"]["namespace"]
        kubernetes_validate.validate(  # the metadata part is a Kubernetes ObjectMeta
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": doc["metadata"]},
            KUBERNETES_VERSION,
            strict=True,
        )


def test_the_configmap_manifests_lint_clean_and_the_inventory_plans(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("MR_STORE_DIR", str(tmp_path / "store"))  # nothing pulled: unknown sizes
    models = "examples/kubernetes/base/models.d"
    inventory = "examples/kubernetes/hosts.yaml"
    assert main(["lint", "--strict", "--inventory", inventory, models]) == 0
    assert main(["plan", "--fleet", inventory, models, "--format", "json"]) == 0
    import json

    plan = json.loads(capsys.readouterr().out)
    served = {h["name"]: [m["name"] for m in h["models"]] for h in plan["hosts"]}
    assert served == {
        "cpu-node-1": ["chat", "embed"],
        "cpu-node-2": ["chat", "embed"],
        "gpu-node-1": ["chat", "qwen3"],
    }
    assert plan["unplaced_models"] == [] and plan["empty_hosts"] == []
