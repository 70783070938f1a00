"""How an engine process ended, in words, and what to do when it ends the same way every
time (pure: a table of signals and exit codes, no processes).

    returncode -11, during the readiness request
        -> "engine killed by SIGSEGV (segmentation fault) during its readiness request"
    three identical crashes of llama.cpp while answering
        -> "llama.cpp crashes on this CPU; rebuild with scripts/install.sh --llama-portable"
"""

from __future__ import annotations

import signal
from dataclasses import dataclass
from typing import Final, Literal

# Where in its life the process was when it ended.
#   loading    spawned, its health check not answered yet (reading weights, allocating)
#   readiness  healthy, answering the one real request that makes it ready
#   serving    ready, taking requests
ExitPhase = Literal["loading", "readiness", "serving"]

PHASE_WORDS: Final[dict[ExitPhase, str]] = {
    "loading": "while loading (before its health check answered)",
    "readiness": "during its readiness request",
    "serving": "while serving",
}

SIGNAL_WORDS: Final[dict[int, str]] = {
    signal.SIGSEGV: "segmentation fault",
    signal.SIGILL: "illegal instruction",
    signal.SIGBUS: "bus error",
    signal.SIGFPE: "floating-point exception",
    signal.SIGABRT: "aborted",
    signal.SIGKILL: "killed; often the kernel's out-of-memory killer",
    signal.SIGTERM: "terminated",
    signal.SIGINT: "interrupted",
    signal.SIGHUP: "hangup",
    signal.SIGPIPE: "broken pipe",
    signal.SIGTRAP: "trace trap",
    signal.SIGXCPU: "CPU time limit exceeded",
}

CODE_WORDS: Final[dict[int, str]] = {
    0: "it ended on its own",
    1: "an error; its stderr says which",
    2: "a usage error: the engine refused its arguments",
    126: "the command is not executable",
    127: "the command was not found",
}

# Signals that mean the machine code itself failed: a build for another CPU, a bug, or
# memory that is not what the program expects (a corrupt or truncated model file).
_FAULTS: Final = frozenset({signal.SIGSEGV, signal.SIGILL, signal.SIGBUS, signal.SIGFPE})
SAME_CRASH_LIMIT: Final = 3  # identical crashes in a row before a start is not retried


@dataclass(frozen=True, slots=True)
class Exit:
    """A process that ended: its return code as asyncio reports it, and the phase."""

    returncode: int
    phase: ExitPhase

    @property
    def signal(self) -> int | None:
        """The signal that ended it; a shell's 128+N counts as signal N."""
        code = self.returncode
        if code < 0:
            return -code
        if 128 < code < 128 + 65 and code - 128 in SIGNAL_WORDS:
            return code - 128
        return None

    @property
    def signature(self) -> tuple[int, ExitPhase]:
        """Two exits with the same signature ended the same way."""
        sig = self.signal
        return (-sig if sig is not None else self.returncode, self.phase)


def signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def describe(code: int) -> str:
    """'killed by SIGSEGV (segmentation fault)', 'exited with code 1 (an error; ...)'."""
    sig = Exit(code, "loading").signal
    if sig is not None:
        words = SIGNAL_WORDS.get(sig)
        text = f"killed by {signal_name(sig)}" + (f" ({words})" if words else "")
        return text if code < 0 else f"exited with code {code} (128 + {text})"
    words = CODE_WORDS.get(code)
    return f"exited with code {code}" + (f" ({words})" if words else "")


def reason(exit: Exit, stderr_tail: str = "") -> str:
    """The instance's reason: how and when it ended, then its last stderr lines."""
    text = f"engine {describe(exit.returncode)} {PHASE_WORDS[exit.phase]}"
    tail = stderr_tail.strip()
    return f"{text}; last stderr: {tail}" if tail else f"{text}; its stderr was empty"


def advice(exit: Exit, engine: str) -> str:
    """What to do about an engine that ends the same way at every start."""
    sig = exit.signal
    if engine == "llama.cpp" and sig == signal.SIGILL:
        return "llama.cpp crashes on this CPU; rebuild with scripts/install.sh --llama-portable"
    if engine == "llama.cpp" and sig in _FAULTS and exit.phase != "loading":
        # It loaded the weights and then faulted on its first real computation: the
        # build's instructions do not suit this CPU (issue seen with -march=native builds).
        return "llama.cpp crashes on this CPU; rebuild with scripts/install.sh --llama-portable"
    if sig in _FAULTS or sig == signal.SIGABRT:
        return (
            "the model file is corrupt or does not suit this engine; mr pull it again "
            "(and check runtime_flags)"
        )
    if sig == signal.SIGKILL:
        return "the host ran out of memory; lower context_size or free memory"
    return "the engine ends the same way at every start; see its log (mr logs) for why"
