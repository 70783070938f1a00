"""What the request inspector and the Responses translation cost, side by side in one run.

    .venv/bin/python bench/bench_inspector.py [--seconds 3] [--repeat 3]

Against bench_proxy.py's stub engine (canned answers: it isolates mr's own cost), two mr
processes: one with recording off (MR_RECORD_REQUESTS=0), one with the default (10 pairs
per model). Rows 1-4: the same proxied completion (short and streamed, 16 chunks) through
each, at concurrency 1 and 32. Rows 5-6: ``POST /v1/responses`` against
``POST /v1/chat/completions`` on the recording-off mr (the translation's cost). Rounds
alternate between the two sides so a neighbour's load spike hits both; medians shown.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_proxy as bp


def _serve_main(port: int, record: int, upstream: str) -> None:
    from modelrunner.http.app import create_app
    from modelrunner.http.server import serve
    from modelrunner.metrics import Metrics
    from modelrunner.registry import Endpoint, Registry, ServedModel
    from modelrunner.settings import Settings
    from modelrunner.status import ModelStatus

    registry = Registry()
    registry.publish(
        ServedModel("stub", "llama.cpp", endpoint=Endpoint("s", "llama.cpp", upstream))
    )

    class Ready:
        def snapshot(self) -> list[ModelStatus]:
            return [ModelStatus(name="stub", phase="ready")]

        def problems(self) -> list[object]:
            return []

        def is_ready(self, names: tuple[str, ...] = ()) -> bool:
            return True

    settings = Settings(port=port, record_requests=record)
    app = create_app(settings, registry, Ready(), Metrics())  # type: ignore[arg-type]
    serve(app, settings, log_level="warning")


def _row(label: str, a: bp.Result, b: bp.Result) -> str:
    return (
        f"{label:<22} | {a.rps:>9.1f} {a.p50_ms:>7.2f} {a.p99_ms:>7.2f} | {b.rps:>9.1f} "
        f"{b.p50_ms:>7.2f} {b.p99_ms:>7.2f} | {b.p50_ms - a.p50_ms:>+7.3f} "
        f"{100 * b.rps / a.rps:>5.0f}%"
        + (f"  errors {a.errors}/{b.errors}" if a.errors + b.errors else "")
    )


def _compare(
    port_a: int, raw_a: bytes, port_b: int, raw_b: bytes, conc: int, seconds: float, repeat: int
) -> tuple[bp.Result, bp.Result]:
    sides_a, sides_b = [], []
    for _ in range(repeat):
        sides_a.append(asyncio.run(bp.load(port_a, raw_a, conc, seconds)))
        sides_b.append(asyncio.run(bp.load(port_b, raw_b, conc, seconds)))
    return bp.median_of(sides_a), bp.median_of(sides_b)


def run(seconds: float, repeat: int) -> None:
    bp._use_uvloop()
    me = [sys.executable, __file__]
    stub, off, on = bp.free_port(), bp.free_port(), bp.free_port()
    upstream = f"http://127.0.0.1:{stub}"
    with contextlib.ExitStack() as stack:
        stack.enter_context(bp.started([sys.executable, bp.__file__, "stub", str(stub)], stub))
        stack.enter_context(bp.started([*me, "serve", str(off), "0", upstream], off))
        stack.enter_context(bp.started([*me, "serve", str(on), "10", upstream], on))
        head = f"{'rps':>9} {'p50 ms':>7} {'p99 ms':>7}"
        print(f"{'request  conc':<22} | {head} | {head} | {'+p50 ms':>7} {'rps %':>6}")
        print(f"{'':<22} | {'recording off':^25} | {'recording on (10)':^25} |")
        for kind, stream in (("short", False), ("stream", True)):
            body: dict[str, object] = {"model": "stub", "prompt": "Hello", "max_tokens": 1}
            if stream:
                body.update(stream=True, max_tokens=bp.STREAM_CHUNKS)
            for conc in (1, 32):
                raw_off = bp.raw_request(off, "/v1/completions", body)
                raw_on = bp.raw_request(on, "/v1/completions", body)
                a, b = _compare(off, raw_off, on, raw_on, conc, seconds, repeat)
                print(_row(f"{kind:<8} {conc:>4}", a, b), flush=True)
        print(f"{'':<22} | {'/v1/chat/completions':^25} | {'/v1/responses':^25} |")
        for conc in (1, 32):
            chat = {"model": "stub", "messages": [{"role": "user", "content": "Hello"}]}
            asked = {"model": "stub", "input": "Hello", "store": False}
            raw_chat = bp.raw_request(off, "/v1/chat/completions", chat)
            raw_resp = bp.raw_request(off, "/v1/responses", asked)
            a, b = _compare(off, raw_chat, off, raw_resp, conc, seconds, repeat)
            print(_row(f"{'responses':<8} {conc:>4}", a, b), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command")
    serve = sub.add_parser("serve")
    serve.add_argument("port", type=int)
    serve.add_argument("record", type=int)
    serve.add_argument("upstream")
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    if args.command == "serve":
        bp._use_uvloop()
        _serve_main(args.port, args.record, args.upstream)
    else:
        run(args.seconds, args.repeat)


if __name__ == "__main__":
    main()
