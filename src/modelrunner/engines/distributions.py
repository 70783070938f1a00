"""The installed version of a distribution in another interpreter (vLLM's, say)."""

from __future__ import annotations

import subprocess
from typing import Final

# Prints the version of the first distribution installed, or nothing.
_ASK: Final = (
    "import importlib.metadata as m, sys\n"
    "for name in sys.argv[1:]:\n"
    "    try:\n"
    "        print(m.version(name)); break\n"
    "    except m.PackageNotFoundError:\n"
    "        pass\n"
)


def distribution_version(python: str, names: tuple[str, ...]) -> str | None:
    """The version of the first of ``names`` installed for ``python`` (a subprocess).

    Raises OSError or subprocess.TimeoutExpired when the interpreter cannot be run."""
    done = subprocess.run(
        [python, "-c", _ASK, *names], capture_output=True, text=True, timeout=30, check=False
    )
    return done.stdout.strip() or None
