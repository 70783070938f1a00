"""`pull_policy` against a real registry and a real `mr serve`: a tag that moved in the
registry since the store pulled it is pulled again by `always`, and not by
`if-not-present` (which serves what the store has)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from modelrunner.store import Store
from tests.fixtures.registry import Registry
from tests.fixtures.serve import Server, manifest

pytestmark = [pytest.mark.engine, pytest.mark.registry]


@pytest.mark.parametrize(("policy", "served"), [("always", "moved"), ("if-not-present", "old")])
def test_pull_policy_and_a_tag_that_moved(
    start_server: Callable[..., Server],
    smollm2_gguf: Path,
    registry: Registry,
    tmp_path: Path,
    policy: str,
    served: str,
) -> None:
    ref = f"{registry.address}/moving/{policy}:latest"
    publisher = Store(tmp_path / "publisher")
    publisher.package(ref, gguf=smollm2_gguf, context_size=1024)
    old = publisher.push(ref)
    server = start_server()
    assert Store(server.store_dir).pull(ref).digest == old  # the server's store has it
    publisher.package(ref, gguf=smollm2_gguf, context_size=512)  # same weights, new config
    moved = publisher.push(ref)  # the tag moves in the registry
    assert moved != old
    server.write("smol.yaml", manifest(smollm2_gguf, "smol", model=ref, pull_policy=policy))
    ready = server.wait_for("smol to be ready", lambda: server.ready("smol"), timeout=180)
    assert ready["digest"] == {"moved": moved, "old": old}[served]
