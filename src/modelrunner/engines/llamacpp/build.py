"""How llama-cpp-python is built here, and the key its wheel is cached under.

llama-cpp-python ships no wheel on the package index, so every install compiles llama.cpp.
llama.cpp's own default (``GGML_NATIVE=ON``, i.e. ``-march=native``) ties the build to the
CPU that compiled it: on the next machine it crashes (SIGILL, or SIGSEGV in AVX-512/AMX
kernels). So the default here is a portable x86-64-v3 build (AVX2, FMA, F16C, BMI2).

pip's own wheel cache ignores ``CMAKE_ARGS``, so a built wheel is kept under a key of our
own: the package version, the interpreter, the machine architecture and the CMake flags,
plus a fingerprint of the CPU's features when the build is tuned to this CPU. A different
flag set or CPU never reuses the wrong wheel.

This module uses only the standard library: ``scripts/install.sh`` runs it with the system
Python before modelrunner is installed::

    python3 src/modelrunner/engines/llamacpp/build.py cmake-args [--variant V]
    python3 src/modelrunner/engines/llamacpp/build.py key --cmake-args "..."
"""

from __future__ import annotations

import argparse
import hashlib
import platform
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Final

# The multimodal (llava/mtmd) library is not needed for text and chat; skipping it saves a
# quarter of the build.
_COMMON: Final = ("-DLLAVA_BUILD=OFF",)
# x86-64-v3: every x86 server CPU since 2015 runs it; AVX-512 and AMX kernels stay off.
_X86_64_V3: Final = (
    "-DGGML_NATIVE=OFF",
    "-DGGML_AVX=ON",
    "-DGGML_AVX2=ON",
    "-DGGML_FMA=ON",
    "-DGGML_F16C=ON",
    "-DGGML_BMI2=ON",
    "-DGGML_AVX512=OFF",
)
_GENERIC: Final = ("-DGGML_NATIVE=OFF",)

VARIANTS: Final = ("portable", "native", "cuda", "vulkan")


def cpu_baseline(machine: str) -> tuple[str, ...]:
    """The portable CPU flags for an architecture (``platform.machine()``)."""
    if machine.lower() in ("x86_64", "amd64"):
        return _X86_64_V3
    return _GENERIC


def cmake_args(variant: str, machine: str) -> str:
    """The ``CMAKE_ARGS`` of a build variant on an architecture."""
    if variant == "portable":
        flags = cpu_baseline(machine)
    elif variant == "native":
        flags = ("-DGGML_NATIVE=ON",)
    elif variant == "cuda":
        # The CPU part stays portable; the CUDA kernels are built for the GPUs of the
        # machine that compiles (CMake's "native" CUDA architectures).
        flags = (*cpu_baseline(machine), "-DGGML_CUDA=ON", "-DCMAKE_CUDA_ARCHITECTURES=native")
    elif variant == "vulkan":
        flags = (*cpu_baseline(machine), "-DGGML_VULKAN=ON")
    else:
        raise ValueError(f"unknown llama.cpp build variant {variant!r}; one of {VARIANTS}")
    return " ".join((*flags, *_COMMON))


def is_native(args: str) -> bool:
    """Whether a flag set tunes the build to the compiling CPU (llama.cpp's default is ON)."""
    found = re.findall(r"-DGGML_NATIVE=(\S+)", args)
    return not found or found[-1].upper() not in ("OFF", "0", "FALSE", "NO")


def cpu_fingerprint(cpuinfo: str) -> str:
    """A short hash of the CPU's feature flags (first ``flags``/``Features`` line)."""
    for line in cpuinfo.splitlines():
        name, _, value = line.partition(":")
        if name.strip() in ("flags", "Features"):
            return hashlib.sha256(" ".join(sorted(value.split())).encode()).hexdigest()[:12]
    return "unknown-cpu"


def wheel_key(version: str, args: str, *, python_tag: str, machine: str, cpuinfo: str = "") -> str:
    """The folder name a built wheel is cached under: readable, and unique per build input."""
    normalized = " ".join(args.split())
    parts = [version, python_tag, machine, normalized]
    if is_native(normalized):
        parts.append(cpu_fingerprint(cpuinfo))
    digest = hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]
    return f"llama-cpp-python-{version}-{python_tag}-{machine}-{digest}"


def pinned_version(pyproject: str) -> str:
    """The llama-cpp-python version the ``llama`` extra pins in pyproject.toml."""
    match = re.search(r'"llama-cpp-python==([^"]+)"', pyproject)
    if match is None:
        raise ValueError("pyproject.toml pins no llama-cpp-python==VERSION")
    return match.group(1)


def _read(path: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except OSError:
        return ""


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="llama_build.py")
    sub = parser.add_subparsers(dest="command", required=True)
    flags = sub.add_parser("cmake-args", help="print the CMAKE_ARGS of a build variant")
    flags.add_argument("--variant", choices=VARIANTS, default="portable")
    key = sub.add_parser("key", help="print the wheel cache key of a build")
    key.add_argument("--cmake-args", required=True)
    key.add_argument("--pyproject", default="pyproject.toml")
    key.add_argument("--python-tag", default=f"cp{sys.version_info[0]}{sys.version_info[1]}")
    version = sub.add_parser("version", help="print the pinned llama-cpp-python version")
    version.add_argument("--pyproject", default="pyproject.toml")
    args = parser.parse_args(argv)

    machine = platform.machine()
    if args.command == "cmake-args":
        print(cmake_args(args.variant, machine))
    elif args.command == "version":
        print(pinned_version(_read(args.pyproject)))
    else:
        print(
            wheel_key(
                pinned_version(_read(args.pyproject)),
                args.cmake_args,
                python_tag=args.python_tag,
                machine=machine,
                cpuinfo=_read("/proc/cpuinfo"),
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
