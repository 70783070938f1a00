"""``mr engines``: versions and interpreters, without importing any engine."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from modelrunner.cli import main


def test_json_lists_every_engine(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["engines", "--json", "--vllm-python", sys.executable])
    rows = json.loads(capsys.readouterr().out)
    assert [r["engine"] for r in rows] == ["llama.cpp", "vllm", "diffusers"]
    by_name = {r["engine"]: r for r in rows}
    assert by_name["llama.cpp"]["version"] == "0.3.36"
    assert by_name["vllm"]["python"] == sys.executable
    assert by_name["vllm"]["version"] is None  # this interpreter has no vLLM
    assert code == 1  # not every engine is usable with that interpreter


def test_text_names_a_missing_interpreter(capsys: pytest.CaptureFixture[str]) -> None:
    main(["engines", "--vllm-python", "/nonexistent/python"])
    out = capsys.readouterr().out
    assert "vllm" in out
    assert "/nonexistent/python" in out
    assert "MR_VLLM_PYTHON" in out


def test_imports_no_engine() -> None:
    code = (
        "import sys; from modelrunner.cli import main; main(['engines', '--json']); "
        "heavy = {'torch', 'llama_cpp', 'diffusers', 'vllm', 'transformers'} & set(sys.modules); "
        "sys.exit(f'imported {heavy}' if heavy else 0)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


@pytest.mark.engine
def test_check_runs_a_real_prompt_through_llama_cpp(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["engines", "--check", "--json", "--vllm-python", "/nonexistent/python"])
    rows = {r["engine"]: r for r in json.loads(capsys.readouterr().out)}
    llama = rows["llama.cpp"]
    assert llama["ok"], llama
    assert "tokens generated" in llama["detail"]
    assert "vllm" not in rows  # not installed for that interpreter: nothing to check
    assert code == (0 if all(r["ok"] for r in rows.values()) else 1)


def build_verdict(
    built: str | None, expected: str, expect_portable: bool
) -> tuple[str, str] | None:
    """None: check the installed build's CPU features. Else ("fail" or "skip", why): CI
    (scripts/test.sh sets MR_EXPECT_PORTABLE_LLAMA=1) installs the portable build, so any
    other is a failure there; elsewhere a build made on purpose (--llama-native) is named."""
    if built is None or built == expected:
        return None
    message = f"llama-cpp-python is built as {built}, not the portable {expected}"
    if expect_portable:
        return "fail", message + " (MR_EXPECT_PORTABLE_LLAMA=1: CI expects the portable one)"
    return "skip", message + "; its portability is not checked"


@pytest.mark.parametrize(
    ("built", "expect", "kind"),
    [
        (None, True, None),
        ("portable-key", True, None),
        ("portable-key", False, None),
        ("native-key", True, "fail"),
        ("native-key", False, "skip"),
    ],
)
def test_build_verdict(built: str | None, expect: bool, kind: str | None) -> None:
    verdict = build_verdict(built, "portable-key", expect)
    assert (verdict[0] if verdict else None) == kind
    if verdict is not None:
        assert "native-key" in verdict[1] and "portable-key" in verdict[1]


@pytest.mark.engine
def test_the_installed_llama_cpp_build_is_portable() -> None:
    # A build tuned to the machine that compiled it crashes on the next one; install.sh
    # builds x86-64-v3 unless told otherwise. The build reports what it compiled in.
    import platform

    from modelrunner.engines.llamacpp import build as llama_build

    if platform.machine() != "x86_64":
        pytest.skip("the x86-64-v3 baseline applies to x86_64 hosts")
    marker = Path(sys.prefix) / ".llama-build-key"
    portable = llama_build.cmake_args("portable", "x86_64")
    from tests.fixtures.common import ROOT as root

    version = llama_build.pinned_version((root / "pyproject.toml").read_text())
    expected = llama_build.wheel_key(
        version,
        portable,
        python_tag=f"cp{sys.version_info[0]}{sys.version_info[1]}",
        machine="x86_64",
    )
    built = marker.read_text().strip() if marker.is_file() else None
    verdict = build_verdict(built, expected, os.environ.get("MR_EXPECT_PORTABLE_LLAMA") == "1")
    if verdict is not None:
        kind, message = verdict
        if kind == "fail":
            pytest.fail(message)
        warnings.warn(message, stacklevel=1)
        pytest.skip(message)
    import llama_cpp

    info = llama_cpp.llama_print_system_info().decode()
    assert "AVX2 = 1" in info, info
    assert "AVX512 = 1" not in info, info
    assert "AMX_INT8 = 1" not in info, info
