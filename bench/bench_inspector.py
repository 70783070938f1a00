"""What the request inspector and the Responses translation cost, side by side in one run.

    .venv/bin/python bench/bench_inspector.py [--seconds 3] [--repeat 3] [--gguf PATH]

Against bench_proxy.py's stub engine (canned answers: it isolates mr's own cost), two mr
processes: one with recording off (MR_RECORD_REQUESTS=0), one with the default (10 pairs
per model). Rows 1-4: the same proxied completion (short and streamed, 16 chunks) through
each, at concurrency 1 and 32; rows 5-12 the same for Ollama's ``/api/chat`` and
Anthropic's ``/v1/messages``. Then ``POST /v1/responses`` against
``POST /v1/chat/completions`` on the recording-off mr (the translation's cost), short and
streamed, against the stub and against the product's llama.cpp engine on SmolLM2 (one
context, one thread; skipped with ``--skip-llama``). Rounds alternate between the two
sides so a neighbour's load spike hits both; medians shown.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_proxy as bp


def _serve_main(port: int, record: int, upstreams: list[str]) -> None:
    from modelrunner.http.app import create_app
    from modelrunner.http.server import serve
    from modelrunner.metrics import Metrics
    from modelrunner.registry import Endpoint, Registry, ServedModel
    from modelrunner.settings import Settings
    from modelrunner.status import ModelStatus

    registry = Registry()
    for item in upstreams:
        name, url = item.split("=", 1)
        registry.publish(ServedModel(name, "llama.cpp", endpoint=Endpoint(name, "llama.cpp", url)))

    class Ready:
        def snapshot(self) -> list[ModelStatus]:
            return [ModelStatus(name=m.name, phase="ready") for m in registry.models()]

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


def run(seconds: float, repeat: int, gguf: Path | None) -> None:
    bp._use_uvloop()
    me = [sys.executable, __file__]
    stub, off, on = bp.free_port(), bp.free_port(), bp.free_port()
    with contextlib.ExitStack() as stack:
        stack.enter_context(bp.started([sys.executable, bp.__file__, "stub", str(stub)], stub))
        upstreams = {"stub": stub}
        if gguf is not None:
            upstreams["llama.cpp"] = stack.enter_context(bp.llama_instance(gguf))
        pairs = [f"{name}=http://127.0.0.1:{port}" for name, port in upstreams.items()]
        stack.enter_context(bp.started([*me, "serve", str(off), "0", *pairs], off))
        stack.enter_context(bp.started([*me, "serve", str(on), "10", *pairs], on))
        head = f"{'rps':>9} {'p50 ms':>7} {'p99 ms':>7}"
        print(f"{'upstream request conc':<22} | {head} | {head} | {'+p50 ms':>7} {'rps %':>6}")
        print(f"{'':<22} | {'recording off':^25} | {'recording on (10)':^25} |")
        for kind, stream in (("short", False), ("stream", True)):
            body: dict[str, object] = {"model": "stub", "prompt": "Hello", "max_tokens": 1}
            if stream:
                body.update(stream=True, max_tokens=bp.STREAM_CHUNKS)
            for conc in (1, 32):
                raw_off = bp.raw_request(off, "/v1/completions", body)
                raw_on = bp.raw_request(on, "/v1/completions", body)
                a, b = _compare(off, raw_off, on, raw_on, conc, seconds, repeat)
                print(_row(f"stub {kind:<8} {conc:>4}", a, b), flush=True)
        # The translated routes, recorded by their own middleware and assemblers.
        for path in ("/api/chat", "/v1/messages"):
            for kind, stream in (("short", False), ("stream", True)):
                tokens = bp.STREAM_CHUNKS if stream else 1
                asked = {"model": "stub", "messages": [{"role": "user", "content": "Hello"}],
                         "stream": stream, "max_tokens": tokens,
                         "options": {"num_predict": tokens}}  # fmt: skip
                if path == "/api/chat":
                    del asked["max_tokens"]
                else:
                    del asked["options"]
                for conc in (1, 32):
                    raw_off = bp.raw_request(off, path, asked)
                    raw_on = bp.raw_request(on, path, asked)
                    a, b = _compare(off, raw_off, on, raw_on, conc, seconds, repeat)
                    print(_row(f"{path[-8:]} {kind:<6} {conc:>4}", a, b), flush=True)
        print(f"{'':<22} | {'/v1/chat/completions':^25} | {'/v1/responses':^25} |")
        for name in upstreams:
            for kind, stream in (("short", False), ("stream", True)):
                tokens = bp.STREAM_CHUNKS if stream else 1
                chat = {"model": name, "messages": [{"role": "user", "content": "Hello"}],
                        "max_tokens": tokens, "stream": stream}  # fmt: skip
                asked = {"model": name, "input": "Hello", "store": False,
                         "max_output_tokens": tokens, "stream": stream}  # fmt: skip
                for conc in (1, 32):
                    raw_chat = bp.raw_request(off, "/v1/chat/completions", chat)
                    raw_resp = bp.raw_request(off, "/v1/responses", asked)
                    a, b = _compare(off, raw_chat, off, raw_resp, conc, seconds, repeat)
                    print(_row(f"{name:<9} {kind:<6} {conc:>4}", a, b), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command")
    serve = sub.add_parser("serve")
    serve.add_argument("port", type=int)
    serve.add_argument("record", type=int)
    serve.add_argument("upstreams", nargs="+")
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--gguf", type=Path, default=None)
    parser.add_argument("--skip-llama", action="store_true")
    args = parser.parse_args()
    if args.command == "serve":
        bp._use_uvloop()
        _serve_main(args.port, args.record, args.upstreams)
    else:
        run(args.seconds, args.repeat, None if args.skip_llama else args.gguf or bp.find_gguf())


if __name__ == "__main__":
    main()
