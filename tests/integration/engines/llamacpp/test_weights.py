"""Where the engine keeps the weights, as the process's own memory map shows it: in memory
(huge pages where the kernel gives them) by default, mapped from the GGUF with
``--use_mmap true``; the same seeded answer either way."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from modelrunner import engines
from modelrunner.engines.llamacpp.huge_pages import (
    has_glibc,
    host_thp_mode,
    huge_page_weights,
    process_huge_page_kib,
)
from modelrunner.engines.process import EngineProcess
from modelrunner.model_files import ModelFiles
from modelrunner.settings import Settings
from tests.fixtures.engines import LoopThread, make_manifest
from tests.integration.engines.llamacpp.test_engine import CHAT, ask

pytestmark = pytest.mark.engine
FLAGS = {"default": [], "mmap": ["--use_mmap", "true"], "no mmap": ["--use_mmap", "false"]}


@pytest.fixture(scope="module")
def instances(
    loop_thread: LoopThread, smollm2_gguf: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, EngineProcess]]:
    logs = tmp_path_factory.mktemp("logs")
    started: dict[str, EngineProcess] = {}
    try:
        for label, flags in FLAGS.items():
            manifest = make_manifest(
                name="smollm2",
                context_size=256,
                **{"llama.cpp": {"threads": 1, "parallel": 1}},
                runtime_flags=["--seed=7", *flags],
            )
            instance = engines.create_instance(
                manifest, ModelFiles("gguf", smollm2_gguf), Settings(log_dir=logs)
            )
            loop_thread.run(instance.start())
            started[label] = instance
        yield started
    finally:
        for instance in started.values():
            loop_thread.run(instance.stop())


def _maps_file(instance: EngineProcess, path: Path) -> bool:
    assert instance.pid is not None
    return str(path) in Path(f"/proc/{instance.pid}/maps").read_text()


def _huge_kib(instance: EngineProcess) -> int:
    assert instance.pid is not None
    return process_huge_page_kib(instance.pid)


def test_use_mmap_decides_whether_the_gguf_is_mapped(
    instances: dict[str, EngineProcess], smollm2_gguf: Path
) -> None:
    assert _maps_file(instances["mmap"], smollm2_gguf)
    assert not _maps_file(instances["no mmap"], smollm2_gguf)


def test_by_default_the_weights_are_in_huge_pages_where_the_host_has_them(
    instances: dict[str, EngineProcess], smollm2_gguf: Path
) -> None:
    expected = huge_page_weights(None, host_thp_mode(), has_glibc(), 0)
    default = instances["default"]
    assert _maps_file(default, smollm2_gguf) is not expected
    if expected:  # the weights (the GGUF, less its header) at least
        assert _huge_kib(default) * 1024 > smollm2_gguf.stat().st_size * 0.9
    assert _huge_kib(instances["mmap"]) * 1024 < smollm2_gguf.stat().st_size * 0.9


def test_the_answer_does_not_depend_on_where_the_weights_are(
    instances: dict[str, EngineProcess],
) -> None:
    body: dict[str, Any] = ask("Name three colours.", max_tokens=24, temperature=0)
    answers = {
        label: httpx.post(i.base_url + CHAT, json=body, timeout=120).json()["choices"][0][
            "message"
        ]["content"]
        for label, i in instances.items()
    }
    assert len(set(answers.values())) == 1 and answers["default"], answers
