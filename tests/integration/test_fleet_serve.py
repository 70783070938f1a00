"""One models.d/, two hosts: two real `mr serve` processes on loopback with different
MR_HOST_NAME / MR_HOST_LABELS, real llama.cpp instances (SmolLM2), the official openai
client. Each serves only its models; a placement edit moves a model between them, and no
request to a host for a model it keeps fails meanwhile."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import openai
import pytest

from tests.fixtures.serve import Server, manifest

pytestmark = pytest.mark.engine


@contextmanager
def steady_load(targets: list[tuple[Server, str]]) -> Iterator[tuple[list[int], list[str]]]:
    """Requests in a loop, one thread per (server, model), no client retries."""
    sent, failures = [0], []
    stop = threading.Event()

    def load(server: Server, model: str) -> None:
        client = server.client(max_retries=0, timeout=60)
        while not stop.is_set():
            try:
                client.completions.create(model=model, prompt="Once upon", max_tokens=2)
            except openai.OpenAIError as exc:
                failures.append(f"{server.url} {model}: {exc!r}")
            sent[0] += 1

    threads = [threading.Thread(target=load, args=target) for target in targets]
    for thread in threads:
        thread.start()
    try:
        yield sent, failures
    finally:
        stop.set()
        for thread in threads:
            thread.join(60)


def served(server: Server) -> set[str]:
    return {m.id for m in server.client().models.list().data}


def test_two_hosts_share_one_folder_and_a_placement_edit_moves_a_model(
    start_server: Callable[..., Server], smollm2_gguf: Path
) -> None:
    host_a = start_server(MR_HOST_NAME="host-a", MR_HOST_LABELS="class=a,zone=1")
    host_b = start_server(MR_HOST_NAME="host-b", MR_HOST_LABELS="class=b,zone=1")
    assert host_a.models_dir == host_b.models_dir  # one repository for both
    host_a.write(
        "alpha.yaml", manifest(smollm2_gguf, "alpha", placement={"match_labels": {"class": "a"}})
    )
    host_a.write(
        "beta.yaml", manifest(smollm2_gguf, "beta", placement={"match_labels": {"class": "b"}})
    )
    host_a.write("moving.yaml", manifest(smollm2_gguf, "moving", placement={"hosts": ["host-a"]}))

    first = host_a.wait_for("alpha and moving on host-a", lambda: host_a.ready("moving"))
    host_a.wait_for("alpha on host-a", lambda: host_a.ready("alpha"))
    host_b.wait_for("beta on host-b", lambda: host_b.ready("beta"))

    # Each host serves only its models, and lists the others as placed elsewhere.
    assert served(host_a) == {"alpha", "moving"}
    assert served(host_b) == {"beta"}
    status_a, status_b = host_a.status(), host_b.status()
    assert status_a["beta"]["phase"] == "elsewhere"
    assert status_a["beta"]["placement"] == "labels class=b"
    assert {n: m["phase"] for n, m in status_b.items()} == {
        "alpha": "elsewhere",
        "beta": "ready",
        "moving": "elsewhere",
    }
    with pytest.raises(openai.NotFoundError):
        host_b.client(max_retries=0).completions.create(model="alpha", prompt="x", max_tokens=1)
    # a model placed elsewhere does not keep a host from being ready
    for host in (host_a, host_b):
        assert httpx.get(f"{host.url}/readyz", timeout=5).status_code == 200

    kept = [(host_a, "alpha"), (host_b, "beta"), (host_a, "moving")]
    with steady_load(kept) as (sent, failures):
        # 1. widen: host-b gains the model, host-a keeps its instance (no restart)
        host_a.write(
            "moving.yaml",
            manifest(smollm2_gguf, "moving", placement={"hosts": ["host-a", "host-b"]}),
        )
        host_b.wait_for("moving on host-b", lambda: host_b.ready("moving"))
        time.sleep(1.0)
        still = host_a.ready("moving")
        assert still is not None and still["instance"] == first["instance"]
        widened = sent[0]
    assert failures == [], failures[:5]
    assert widened > 0

    kept = [(host_a, "alpha"), (host_b, "beta"), (host_b, "moving")]
    with steady_load(kept) as (sent, failures):
        # 2. narrow: host-a drains and retires it, host-b keeps serving it
        host_a.write(
            "moving.yaml", manifest(smollm2_gguf, "moving", placement={"hosts": ["host-b"]})
        )
        host_a.wait_for(
            "moving retired on host-a",
            lambda: host_a.status()["moving"]["phase"] == "elsewhere",
        )
        time.sleep(1.0)
    assert failures == [], failures[:5]
    assert sent[0] > 0
    assert served(host_a) == {"alpha"}
    assert served(host_b) == {"beta", "moving"}

    # 3. a straight move back: host-a starts it, host-b retires it; the models each host
    # keeps (alpha on host-a, beta on host-b) see no failure meanwhile
    kept = [(host_a, "alpha"), (host_b, "beta")]
    with steady_load(kept) as (sent, failures):
        host_a.write(
            "moving.yaml", manifest(smollm2_gguf, "moving", placement={"hosts": ["host-a"]})
        )
        host_a.wait_for("moving back on host-a", lambda: host_a.ready("moving"))
        host_b.wait_for(
            "moving retired on host-b",
            lambda: host_b.status()["moving"]["phase"] == "elsewhere",
        )
    assert failures == [], failures[:5]
    assert sent[0] > 0
    assert served(host_a) == {"alpha", "moving"}
    assert served(host_b) == {"beta"}


def test_a_relabelled_host_follows_its_labels_file(
    start_server: Callable[..., Server], smollm2_gguf: Path, tmp_path: Path
) -> None:
    """MR_HOST_LABELS_FILE is watched like the manifests (as a Kubernetes downward API
    file changes when the pod is relabelled): placement follows without a restart."""
    labels = tmp_path / "podinfo" / "labels"
    labels.parent.mkdir()
    labels.write_text('class="a"\n')
    host = start_server(MR_HOST_NAME="host-l", MR_HOST_LABELS_FILE=str(labels))
    host.write(
        "gpu.yaml", manifest(smollm2_gguf, "gpu", placement={"match_labels": {"class": "b"}})
    )
    host.wait_for(
        "gpu placed elsewhere", lambda: host.status().get("gpu", {}).get("phase") == "elsewhere"
    )

    labels.write_text('class="b"\n')
    ready = host.wait_for("gpu on the relabelled host", lambda: host.ready("gpu"), timeout=180)

    # An unreadable file keeps the labels read before (and says so in the log).
    labels.write_text("class b\n")
    host.wait_for("the warning", lambda: "placement keeps the labels" in host.log.read_text())
    still = host.ready("gpu")
    assert still is not None and still["instance"] == ready["instance"]

    labels.write_text('class="a"\n')
    host.wait_for("gpu retired", lambda: host.status()["gpu"]["phase"] == "elsewhere")
    assert served(host) == set()
