"""Resident memory and membership of an engine's process group, read from /proc (Linux)."""

from __future__ import annotations

import os
from pathlib import Path


def group_pids(pgid: int, proc: Path = Path("/proc")) -> list[int]:
    """Every live process whose process group is ``pgid``."""
    pids: list[int] = []
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # exited while we looked
        # The command name (field 2) is in parentheses and may contain spaces.
        fields = stat[stat.rfind(")") + 2 :].split()
        if len(fields) > 2 and int(fields[2]) == pgid and fields[0] != "Z":
            pids.append(int(entry.name))
    return pids


def rss_bytes(pid: int, proc: Path = Path("/proc")) -> int:
    try:
        status = (proc / str(pid) / "status").read_text()
    except OSError:
        return 0
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def group_rss_bytes(pgid: int) -> int:
    """Resident memory of the whole group (shared pages are counted once per process)."""
    return sum(rss_bytes(pid) for pid in group_pids(pgid))


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return bool(group_pids(pgid))
