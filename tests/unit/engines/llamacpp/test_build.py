"""The portable llama.cpp build flags and the key its wheel is cached under."""

from __future__ import annotations

import subprocess
import sys

import pytest

from modelrunner.engines.llamacpp import build as lb
from tests.fixtures.common import ROOT

X86_CPU = "processor\t: 0\nflags\t\t: fpu sse2 avx avx2 fma\n"
AMX_CPU = "processor\t: 0\nflags\t\t: fpu sse2 avx avx2 fma avx512f amx_tile\n"


def test_portable_x86_is_x86_64_v3_without_native_or_avx512() -> None:
    args = lb.cmake_args("portable", "x86_64")
    for flag in ("GGML_AVX2=ON", "GGML_FMA=ON", "GGML_F16C=ON", "GGML_BMI2=ON"):
        assert f"-D{flag}" in args
    assert "-DGGML_NATIVE=OFF" in args
    assert "-DGGML_AVX512=OFF" in args
    assert not lb.is_native(args)


def test_portable_on_arm_only_turns_native_off() -> None:
    args = lb.cmake_args("portable", "aarch64")
    assert "-DGGML_NATIVE=OFF" in args
    assert "AVX" not in args


@pytest.mark.parametrize(
    ("variant", "expected"),
    [
        ("native", "-DGGML_NATIVE=ON"),
        ("cuda", "-DGGML_CUDA=ON"),
        ("vulkan", "-DGGML_VULKAN=ON"),
    ],
)
def test_variants(variant: str, expected: str) -> None:
    assert expected in lb.cmake_args(variant, "x86_64")


def test_unknown_variant_is_refused() -> None:
    with pytest.raises(ValueError, match=r"unknown llama\.cpp build variant"):
        lb.cmake_args("fastest", "x86_64")


@pytest.mark.parametrize(
    ("args", "native"),
    [
        ("", True),  # llama.cpp's own default is -march=native
        ("-DLLAVA_BUILD=OFF", True),
        ("-DGGML_NATIVE=OFF", False),
        ("-DGGML_NATIVE=off -DGGML_AVX2=ON", False),
        ("-DGGML_NATIVE=OFF -DGGML_NATIVE=ON", True),  # the last one wins, as in CMake
        ("-DGGML_NATIVE=0", False),
    ],
)
def test_is_native(args: str, native: bool) -> None:
    assert lb.is_native(args) is native


def _key(args: str, **over: str) -> str:
    base = {"version": "0.3.36", "python_tag": "cp311", "machine": "x86_64", "cpuinfo": X86_CPU}
    base.update(over)
    version = base.pop("version")
    return lb.wheel_key(version, args, **base)


def test_key_changes_with_every_build_input() -> None:
    portable = lb.cmake_args("portable", "x86_64")
    keys = {
        _key(portable),
        _key(portable, version="0.3.37"),
        _key(portable, python_tag="cp312"),
        _key(portable, machine="aarch64"),
        _key(portable + " -DGGML_CUDA=ON"),
        _key(lb.cmake_args("native", "x86_64")),
    }
    assert len(keys) == 6


def test_key_ignores_whitespace_and_is_readable() -> None:
    portable = lb.cmake_args("portable", "x86_64")
    assert _key(portable) == _key("  " + portable.replace(" ", "   ") + " ")
    assert _key(portable).startswith("llama-cpp-python-0.3.36-cp311-x86_64-")


def test_a_native_wheel_never_moves_to_another_cpu_but_a_portable_one_does() -> None:
    native = lb.cmake_args("native", "x86_64")
    portable = lb.cmake_args("portable", "x86_64")
    assert _key(native, cpuinfo=X86_CPU) != _key(native, cpuinfo=AMX_CPU)
    assert _key(portable, cpuinfo=X86_CPU) == _key(portable, cpuinfo=AMX_CPU)


def test_pinned_version_matches_the_llama_extra() -> None:
    text = (ROOT / "pyproject.toml").read_text()
    assert f'"llama-cpp-python=={lb.pinned_version(text)}"' in text
    with pytest.raises(ValueError, match="pins no llama-cpp-python"):
        lb.pinned_version("[project]\n")


def test_script_runs_with_the_standard_library_alone() -> None:
    # install.sh runs the file before modelrunner is installed: -I ignores site-packages
    # and the environment, so an import of anything but the standard library would fail.
    script = str(ROOT / "src/modelrunner/engines/llamacpp/build.py")
    args = subprocess.run(
        [sys.executable, "-I", script, "cmake-args"], capture_output=True, text=True, check=True
    ).stdout.strip()
    key = subprocess.run(
        [
            sys.executable,
            "-I",
            script,
            "key",
            "--cmake-args",
            args,
            "--pyproject",
            str(ROOT / "pyproject.toml"),
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert key.startswith("llama-cpp-python-")
