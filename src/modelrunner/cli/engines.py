"""``mr engines``: which engines are installed here, their versions and interpreters."""

from __future__ import annotations

import argparse
import json
from typing import Any


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "engines",
        help="show the installed engines and their versions",
        description="Show which engines are installed, their versions and the Python each "
        "runs under (vLLM: $MR_VLLM_PYTHON, else .venv-vllm beside this environment), "
        "and the optional packages some settings need there (ray, for vLLM's Ray backend). "
        "Exit 0 when every engine is installed, 1 otherwise.",
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
