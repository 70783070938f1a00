"""A frozen engine replaced, measured on a real `mr serve` with SmolLM2.

Per run, a stream is started, then the engine is stopped in the middle of it, and the time
until the model answers a short request again is measured:
- freeze: SIGSTOP (a deadlock, a swapped-out host): found by the liveness check (no good
  /health answer for 5 s), killed, restarted (goal: < 10 s);
- baseline, in the same run: SIGKILL (the process ends): found at once, restarted.
Also, the engine's /health latency while it runs a long prefill (about 1,900 tokens), beside
its latency idle: the liveness check relies on it staying short.

Usage: python bench/bench_liveness.py [--runs N]
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

from modelrunner.engines.ports import free_port

sys.path.insert(0, str(Path(__file__).parent))
from bench_reconcile import smollm2

NO_EOS = {"0": -100, "2": -100}


def engine(server_pid: int) -> tuple[int, str]:
    """The engine's pid and base URL (its --port)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            argv = (entry / "cmdline").read_bytes().decode().split("\0")
        except (OSError, ValueError):
            continue
        if parent == server_pid and "modelrunner.engines.llamacpp.main" in argv:
            return int(entry.name), f"http://127.0.0.1:{argv[argv.index('--port') + 1]}"
    raise RuntimeError("no engine under mr serve")


def answers(url: str) -> bool:
    body = {"model": "smol", "prompt": "Hi", "max_tokens": 2}
    try:
        return httpx.post(f"{url}/v1/completions", json=body, timeout=30).is_success
    except httpx.HTTPError:
        return False


def until(check: Any, timeout: float = 120.0) -> float:
    start = time.monotonic()
    while not check():
        if time.monotonic() - start > timeout:
            raise RuntimeError("timed out")
        time.sleep(0.05)
    return time.monotonic() - start


def replaced_after(url: str, server_pid: int, sig: signal.Signals) -> float:
    """Stop the engine with ``sig`` in the middle of a stream; seconds until it answers."""
    until(lambda: answers(url))
    pid, _ = engine(server_pid)
    body = {"model": "smol", "prompt": "Once upon a time", "max_tokens": 900,
            "logit_bias": NO_EOS, "stream": True}  # fmt: skip
    with httpx.stream("POST", f"{url}/v1/completions", json=body, timeout=120) as stream:
        lines = stream.iter_lines()
        next(line for line in lines if line.startswith("data:"))
        os.kill(pid, sig)
        frozen = time.monotonic()
        for _ in lines:
            pass
    until(lambda: answers(url))
    return time.monotonic() - frozen


def health_latency(base: str, during_prefill: bool) -> float:
    """The slowest /health answer, idle or while a long prefill runs."""
    done = threading.Event()

    def prefill() -> None:
        body = {"model": "smol", "prompt": "hello " * 1900, "max_tokens": 1}
        httpx.post(f"{base}/v1/completions", json=body, timeout=300)
        done.set()

    if during_prefill:
        threading.Thread(target=prefill, daemon=True).start()
        time.sleep(0.2)
    slowest, start = 0.0, time.monotonic()
    while (not done.is_set()) if during_prefill else time.monotonic() - start < 3:
        began = time.monotonic()
        httpx.get(f"{base}/health", timeout=30)
        slowest = max(slowest, time.monotonic() - began)
        time.sleep(0.1)
    return slowest


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        models = Path(tmp) / "models.d"
        models.mkdir()
        doc = {"apiVersion": "modelrunner/v1", "name": "smol", "model": str(smollm2()),
               "engine": "llama.cpp", "context_size": 2048,
               "llama.cpp": {"threads": 1}}  # fmt: skip
        (models / "smol.yaml").write_text(yaml.safe_dump(doc))
        port = free_port()
        env = {**os.environ, "MR_PORT": str(port), "MR_STORE_DIR": f"{tmp}/store",
               "MR_LOG_DIR": f"{tmp}/logs"}  # fmt: skip
        with (Path(tmp) / "serve.log").open("wb") as log:
            server = subprocess.Popen(
                [sys.executable, "-m", "modelrunner", "serve", "--models-dir", str(models)],
                env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        url = f"http://127.0.0.1:{port}"
        try:
            until(lambda: answers(url))
            _, base = engine(server.pid)
            idle = health_latency(base, during_prefill=False)
            busy = health_latency(base, during_prefill=True)
            frozen, killed = [], []
            for _ in range(args.runs):
                frozen.append(replaced_after(url, server.pid, signal.SIGSTOP))
                killed.append(replaced_after(url, server.pid, signal.SIGKILL))
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(60)
    freeze, kill = statistics.median(frozen), statistics.median(killed)
    print(f"runs: {args.runs}")
    print(f"freeze (SIGSTOP) -> answering again: median {freeze:.1f} s, max {max(frozen):.1f} s "
          f"(goal < 10 s); all: {', '.join(f'{t:.1f}' for t in frozen)}")  # fmt: skip
    print(f"baseline crash (SIGKILL) -> answering again: median {kill:.1f} s; "
          f"all: {', '.join(f'{t:.1f}' for t in killed)}")  # fmt: skip
    print(f"ratio freeze / crash: {freeze / kill:.1f}x (the difference: the 5 s without an answer)")
    print(f"engine /health, slowest answer: idle {idle * 1000:.0f} ms, during a 1,900-token "
          f"prefill {busy * 1000:.0f} ms ({busy / idle:.1f}x; hung after 5 s)")  # fmt: skip


if __name__ == "__main__":
    main()
