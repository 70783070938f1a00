"""`mr lint` wall time for 1 and for 500 manifests, beside the bare interpreter start.

Each figure is the median of several runs of a fresh process (what CI and an operator
see), printed side by side with `python -c pass` measured in the same run, because these
machines are noisy. Usage: python bench/bench_lint.py [--runs N]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MANIFEST = """\
apiVersion: modelrunner/v1
name: model-{i}
aliases: [alias-{i}]
model: registry.example:5000/team/model-{i}:v1
engine: llama.cpp
context_size: 4096
keep_alive: 10m
llama.cpp:
  threads: 2
  parallel: 2
runtime_flags: ["--n_batch", "256"]
"""


def wall(argv: list[str], runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(argv, check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    lint = [sys.executable, "-m", "modelrunner", "lint"]
    with tempfile.TemporaryDirectory() as one, tempfile.TemporaryDirectory() as many:
        Path(one, "model-0.yaml").write_text(MANIFEST.format(i=0))
        for i in range(500):
            Path(many, f"model-{i}.yaml").write_text(MANIFEST.format(i=i))
        baseline = wall([sys.executable, "-c", "pass"], args.runs)
        t1 = wall([*lint, one], args.runs)
        t500 = wall([*lint, many], args.runs)
    print(f"{'case':<28}{'wall (median)':>15}{'vs python -c pass':>20}")
    print(f"{'python -c pass (baseline)':<28}{baseline * 1000:>12.0f} ms{1.0:>19.1f}x")
    print(f"{'mr lint, 1 manifest':<28}{t1 * 1000:>12.0f} ms{t1 / baseline:>19.1f}x")
    print(f"{'mr lint, 500 manifests':<28}{t500 * 1000:>12.0f} ms{t500 / baseline:>19.1f}x")
    print(f"per manifest beyond start-up: {(t500 - t1) / 499 * 1000:.2f} ms")


if __name__ == "__main__":
    main()
