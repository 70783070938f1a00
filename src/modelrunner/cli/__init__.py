"""The ``mr`` command line.

Each subcommand lives in its own module with ``register(subparsers)``; those modules
import only what argument parsing needs, and do their heavy imports inside the command,
so every ``mr`` invocation starts fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from modelrunner import __version__
from modelrunner.errors import ModelRunnerError, UsageError

# Subcommand modules, in the order `mr --help` lists them.
COMMAND_MODULES = (
    "lint",
    "lock",
    "serve",
    "status",
    "rollout",
    "store",
    "engines",
    "run",
    "requests",
)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{self.prog}: {message}")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="mr", description="modelrunner: a declarative model server.")
    parser.add_argument("--version", action="version", version=f"mr {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name in COMMAND_MODULES:
        module = importlib.import_module(f"modelrunner.cli.{name}")
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if not getattr(args, "run", None):
            parser.print_help()
            return 2
        code: int = args.run(args)
        return code
    except UsageError as exc:
        print(exc, file=sys.stderr)
        return 2
    except ModelRunnerError as exc:
        print(f"mr: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (`mr lint | head`): stop quietly, as other tools do.
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
