"""Which interpreter vLLM runs under, and what `installed` reports."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from modelrunner.engines.catalog import CATALOG, default_vllm_python, interpreter
from modelrunner.engines.versions import engine_installs
from modelrunner.errors import EngineNotInstalled
from modelrunner.settings import Settings


def test_default_vllm_python_is_the_sibling_venv(tmp_path: Path) -> None:
    (tmp_path / ".venv").mkdir()
    sibling = tmp_path / ".venv-vllm" / "bin" / "python"
    sibling.parent.mkdir(parents=True)
    sibling.write_text("")
    assert default_vllm_python(tmp_path / ".venv") == str(sibling)


def test_default_vllm_python_falls_back_to_path(tmp_path: Path) -> None:
    chosen = default_vllm_python(tmp_path / ".venv")
    assert chosen.endswith("python")
    assert ".venv-vllm" not in chosen


def test_setting_wins_and_must_exist(tmp_path: Path) -> None:
    settings = Settings(vllm_python=sys.executable)
    assert interpreter(CATALOG["vllm"], settings) == sys.executable
    missing = Settings(vllm_python=str(tmp_path / "nope" / "python"))
    with pytest.raises(EngineNotInstalled, match="MR_VLLM_PYTHON"):
        interpreter(CATALOG["vllm"], missing)


def test_in_process_engines_use_this_interpreter() -> None:
    assert interpreter(CATALOG["llama.cpp"], Settings()) == sys.executable


def test_vllm_missing_from_an_interpreter_is_reported() -> None:
    # This interpreter (the main venv) has no vLLM: the answer says so, and where.
    installs = {i.name: i for i in engine_installs(Settings(vllm_python=sys.executable))}
    assert installs["vllm"].version is None
    assert installs["vllm"].problem is not None
    assert sys.executable in installs["vllm"].problem
