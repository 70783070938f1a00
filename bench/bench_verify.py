"""The cost of verifying a blob before an engine loads it, beside the engine's start, for the
98 MB SmolLM2-135M GGUF, all in this same run:

  first      store.check_intact(ref) with no record: every layer hashed (sha256), as after a
             pull, a change of the file, or the first start of this version
  cold       the same with the file dropped from the page cache first (posix_fadvise
             DONTNEED), as on a server's first start after a reboot
  recorded   store.check_intact(ref) again: the stat stamp matches the record, nothing read
             (every later server start)
  engine     engines.create_instance(...) + await start() of the llama.cpp engine until
             ready (spawn, import, load, one real token)

Printed as medians of --runs runs, with the ratios first/engine, cold/engine and
recorded/engine (the issue's goal: verifying must cost little beside the load it guards).
Usage: python bench/bench_verify.py [--runs N] [--threads N]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from pathlib import Path

import msgspec

from bench_engine_start import CONTEXT, smollm2  # this folder, beside this script
from modelrunner import engines
from modelrunner.manifest.spec import ModelManifest
from modelrunner.settings import Settings
from modelrunner.store import Store

REF = "bench/smollm2:q4"


def drop_from_cache(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def timed(fn: object) -> float:
    start = time.perf_counter()
    fn()  # type: ignore[operator]
    return time.perf_counter() - start


async def engine_start(store: Store, threads: int, log_dir: Path) -> float:
    doc = {"apiVersion": "modelrunner/v1", "name": "smollm2", "model": REF,
           "context_size": CONTEXT, "llama.cpp": {"threads": threads}}  # fmt: skip
    manifest = msgspec.convert(doc, ModelManifest)
    files = store.resolve(REF)
    start = time.perf_counter()
    instance = engines.create_instance(manifest, files, Settings(log_dir=log_dir))
    await instance.start()
    elapsed = time.perf_counter() - start
    await instance.stop()
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(Path(tmp) / "store")
        files = store.package(REF, gguf=smollm2())
        blob = files.path.resolve()
        size = blob.stat().st_size
        first, cold, recorded, engine = [], [], [], []
        for _ in range(args.runs):
            store.verified.path.unlink(missing_ok=True)
            first.append(timed(lambda: store.check_intact(REF)))
            recorded.append(timed(lambda: store.check_intact(REF)))
            store.verified.path.unlink(missing_ok=True)
            drop_from_cache(blob)
            cold.append(timed(lambda: store.check_intact(REF)))
            engine.append(asyncio.run(engine_start(store, args.threads, Path(tmp))))
    runs = {"first": first, "cold": cold, "recorded": recorded, "engine": engine}
    med = {name: statistics.median(values) for name, values in runs.items()}
    print(f"SmolLM2-135M Q4_1 GGUF, {size / 1e6:.0f} MB, median of {args.runs} runs")
    for name, seconds in med.items():
        extra = f"  ({size / seconds / 1e6:.0f} MB/s)" if name in ("first", "cold") else ""
        print(f"  {name:<9} {seconds * 1000:9.1f} ms{extra}")
    for name in ("first", "cold", "recorded"):
        print(f"  {name}/engine = {med[name] / med['engine']:.3f}")


if __name__ == "__main__":
    main()
