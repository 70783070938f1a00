"""Exit codes and signals in words, and the advice for a crash that repeats (pure tables)."""

from __future__ import annotations

import pytest

from modelrunner.engines.exits import Exit, ExitPhase, advice, describe, reason


@pytest.mark.parametrize(
    ("code", "words"),
    [
        (-11, "killed by SIGSEGV (segmentation fault)"),
        (-4, "killed by SIGILL (illegal instruction)"),
        (-6, "killed by SIGABRT (aborted)"),
        (-9, "killed by SIGKILL (killed; often the kernel's out-of-memory killer)"),
        (-7, "killed by SIGBUS (bus error)"),
        (-15, "killed by SIGTERM (terminated)"),
        (-10, "killed by SIGUSR1"),
        (0, "exited with code 0 (it ended on its own)"),
        (1, "exited with code 1 (an error; its stderr says which)"),
        (2, "exited with code 2 (a usage error: the engine refused its arguments)"),
        (3, "exited with code 3"),
        (127, "exited with code 127 (the command was not found)"),
        (139, "exited with code 139 (128 + killed by SIGSEGV (segmentation fault))"),
        (255, "exited with code 255"),
    ],
)
def test_describe(code: int, words: str) -> None:
    assert describe(code) == words


@pytest.mark.parametrize(
    ("code", "phase", "text"),
    [
        (
            -11,
            "readiness",
            "engine killed by SIGSEGV (segmentation fault) during its readiness "
            "request; last stderr: boom",
        ),
        (
            1,
            "loading",
            "engine exited with code 1 (an error; its stderr says which) while "
            "loading (before its health check answered); last stderr: boom",
        ),
        (-6, "serving", "engine killed by SIGABRT (aborted) while serving; last stderr: boom"),
    ],
)
def test_reason_names_signal_phase_and_stderr(code: int, phase: ExitPhase, text: str) -> None:
    assert reason(Exit(code, phase), "  boom\n") == text


def test_reason_without_stderr() -> None:
    assert reason(Exit(-11, "loading")).endswith("; its stderr was empty")


@pytest.mark.parametrize(
    ("a", "b", "same"),
    [
        (Exit(-11, "readiness"), Exit(-11, "readiness"), True),
        (Exit(-11, "readiness"), Exit(139, "readiness"), True),  # a shell's 128+N is signal N
        (Exit(-11, "readiness"), Exit(-11, "loading"), False),
        (Exit(-11, "readiness"), Exit(-6, "readiness"), False),
        (Exit(1, "loading"), Exit(1, "loading"), True),
        (Exit(1, "loading"), Exit(2, "loading"), False),
    ],
)
def test_signature(a: Exit, b: Exit, same: bool) -> None:
    assert (a.signature == b.signature) is same


CPU = "llama.cpp crashes on this CPU; rebuild with scripts/install.sh --llama-portable"
CORRUPT = "the model file is corrupt or does not suit this engine; mr pull it again"


@pytest.mark.parametrize(
    ("exit", "engine", "starts_with"),
    [
        (Exit(-11, "readiness"), "llama.cpp", CPU),
        (Exit(-11, "serving"), "llama.cpp", CPU),
        (Exit(-4, "loading"), "llama.cpp", CPU),
        (Exit(-11, "loading"), "llama.cpp", CORRUPT),
        (Exit(-7, "loading"), "llama.cpp", CORRUPT),
        (Exit(-6, "loading"), "llama.cpp", CORRUPT),
        (Exit(-11, "readiness"), "vllm", CORRUPT),
        (Exit(-9, "loading"), "llama.cpp", "the host ran out of memory"),
        (Exit(1, "loading"), "llama.cpp", "the engine ends the same way at every start"),
    ],
)
def test_advice(exit: Exit, engine: str, starts_with: str) -> None:
    assert advice(exit, engine).startswith(starts_with)
