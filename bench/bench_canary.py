"""A canary's cost on the request path: the same requests through `mr` to a model with no
rollout and to one whose canary takes 50% (and with an X-Session-Id), side by side; the same
for Ollama's /api/chat (a translated route), each route against itself.

    .venv/bin/python bench/bench_canary.py [--seconds 3] [--repeat 3]

Both models point at the same stub engine (bench_proxy.py's: canned answers), so the rows
differ only by the registry's split (a counter, or a hash of the session id) and the
per-revision counting. Rounds alternate between the rows, so a busy host slows them
alike; the figures are p50 latency at concurrency 1 and the difference in milliseconds.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_proxy as bp  # this folder, beside this script

BODY = {"model": "", "prompt": "hi", "max_tokens": 1}


def _serve_main(port: int, upstream: str) -> None:
    """mr with two models on one stub: `plain` (no rollout) and `canary` (a 50% split)."""
    from modelrunner.registry import Endpoint, Registry, ServedModel, Split

    registry = Registry()
    plain = Endpoint("plain", "llama.cpp", upstream, revision="aaaaaaaaaaaa")
    registry.publish(ServedModel("plain", "llama.cpp", endpoint=plain))
    stable = Endpoint("stable", "llama.cpp", upstream, revision="bbbbbbbbbbbb")
    canary = Endpoint("canary", "llama.cpp", upstream, revision="cccccccccccc")
    registry.publish(ServedModel("canary", "llama.cpp", endpoint=stable, split=Split(canary, 50)))

    bp.serve_registry(port, registry)


def _request(port: int, model: str, session: str | None, ollama: bool = False) -> bytes:
    if ollama:  # a translated route: the revision is tagged by its own middleware
        chat = {"model": model, "messages": [{"role": "user", "content": "hi"}],
                "stream": False, "options": {"num_predict": 1}}  # fmt: skip
        raw = bp.raw_request(port, "/api/chat", chat)
    else:
        raw = bp.raw_request(port, "/v1/completions", {**BODY, "model": model})
    if session is None:
        return raw
    head, _, body = raw.partition(b"\r\n\r\n")
    return head + f"\r\nx-session-id: {session}".encode() + b"\r\n\r\n" + body


def run(seconds: float, repeat: int) -> None:
    stub_port, mr_port = bp.free_port(), bp.free_port()
    here = str(Path(__file__).resolve())
    with (
        bp.started([sys.executable, str(Path(bp.__file__)), "stub", str(stub_port)], stub_port),
        bp.started(
            [sys.executable, here, "serve", str(mr_port), f"http://127.0.0.1:{stub_port}"], mr_port
        ),
    ):
        rows = {
            "no rollout": _request(mr_port, "plain", None),
            "canary 50%": _request(mr_port, "canary", None),
            "canary 50%, X-Session-Id": _request(mr_port, "canary", "conversation-42"),
            "ollama, no rollout": _request(mr_port, "plain", None, ollama=True),
            "ollama, canary 50%": _request(mr_port, "canary", None, ollama=True),
        }
        for raw in rows.values():  # warm up: connections, imports, first-call paths
            asyncio.run(bp.load(mr_port, raw, 1, 0.5))
        p50s: dict[str, list[float]] = {name: [] for name in rows}
        errors = dict.fromkeys(rows, 0)
        for _ in range(repeat):
            for name, raw in rows.items():
                result = asyncio.run(bp.load(mr_port, raw, 1, seconds))
                p50s[name].append(result.p50_ms)
                errors[name] += result.errors
    print(f"p50 at concurrency 1, median of {repeat} alternating rounds of {seconds:g} s")
    print(f"{'row':<28}{'p50 ms':>9}{'vs no rollout':>16}{'ratio':>8}{'errors':>8}")
    for name, values in p50s.items():
        # Each route against itself without a rollout.
        base = statistics.median(p50s["ollama, no rollout" if "ollama" in name else "no rollout"])
        p50 = statistics.median(values)
        print(f"{name:<28}{p50:>9.3f}{p50 - base:>+13.3f} ms{p50 / base:>8.3f}{errors[name]:>8}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="mode")
    serve = sub.add_parser("serve")
    serve.add_argument("port", type=int)
    serve.add_argument("upstream")
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    if args.mode == "serve":
        _serve_main(args.port, args.upstream)
    else:
        run(args.seconds, args.repeat)


if __name__ == "__main__":
    main()
