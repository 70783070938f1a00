"""Where the engine keeps the weights: in transparent huge pages, or mapped from the file.

Every decode step reads all the weights once. Mapped from the GGUF (llama.cpp's default,
and llama-server's), they sit in 4 KiB page-cache pages: a 98 MB model is 24,000 pages,
each a TLB miss per token, and each a two-dimensional page walk in a virtual machine.
Read into anonymous memory backed by 2 MiB transparent huge pages they are 50 pages.
Measured with SmolLM2-135M (docs/design/engines.md, "Weights in huge pages"): 17% more
tokens/s on one stream at one thread, 4% to 11% elsewhere.

The cost: anonymous weights are the process's own (two instances of one model hold two
copies, where mapped pages are shared page cache), so ``--use_mmap true`` keeps the file
mapping. With the kernel's THP ``madvise`` mode, memory gets huge pages only when asked:
glibc asks for its large allocations (ggml's weight buffer is one) under the tunable
``glibc.malloc.hugetlb=1``, which glibc reads only when a process starts, so the engine
starts itself again with it (``reexec_env``).

Deciding here (pure functions, table-tested), beside the three readings they decide from
(``host_thp_mode``, ``has_glibc``, ``process_huge_page_kib``); the engine's ``main`` does
the exec.
"""

from __future__ import annotations

import platform
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Final

THP_SETTING: Final = "/sys/kernel/mm/transparent_hugepage/enabled"
TUNABLE: Final = "glibc.malloc.hugetlb=1"
_TUNABLES_VAR: Final = "GLIBC_TUNABLES"


def thp_mode(setting: str | None) -> str | None:
    """The selected mode of the THP sysfs file (``always [madvise] never`` -> ``madvise``);
    None when the file is missing or unreadable (no THP: another kernel, another OS)."""
    if setting is None:
        return None
    found = re.search(r"\[(\w+)\]", setting)
    return found.group(1) if found else None


def huge_page_weights(use_mmap: bool | None, thp: str | None, glibc: bool, gpu_layers: int) -> bool:
    """Whether the weights go to anonymous memory in huge pages.

    ``use_mmap`` None is the engine's choice: huge pages wherever the kernel gives them to
    this process; an explicit ``--use_mmap`` is obeyed. Layers offloaded to a GPU leave
    the host copy cold, so there the file mapping (llama.cpp's own choice) stays."""
    if use_mmap or gpu_layers != 0:
        return False
    # "always": every large anonymous region gets them; "madvise": glibc must ask.
    return thp == "always" or (thp == "madvise" and glibc)


def reexec_env(env: Mapping[str, str]) -> dict[str, str] | None:
    """The environment to start the engine again with so that glibc asks for huge pages,
    or None when this one already does."""
    current = env.get(_TUNABLES_VAR, "")
    if "glibc.malloc.hugetlb=" in current:
        return None
    merged = f"{current}:{TUNABLE}" if current else TUNABLE
    return {**env, _TUNABLES_VAR: merged}


def huge_page_kib(smaps_rollup: str) -> int:
    """The process's memory in transparent huge pages (KiB), from /proc/PID/smaps_rollup."""
    found = re.search(r"^AnonHugePages:\s+(\d+) kB", smaps_rollup, re.MULTILINE)
    return int(found.group(1)) if found else 0


# -- the readings ------------------------------------------------------------------------
def host_thp_mode() -> str | None:
    """This host's THP mode (``thp_mode``), None where the kernel has no THP."""
    try:
        return thp_mode(Path(THP_SETTING).read_text())
    except OSError:
        return None


def has_glibc() -> bool:
    return platform.libc_ver()[0] == "glibc"


def process_huge_page_kib(pid: int | str = "self") -> int:
    """A process's memory in transparent huge pages (KiB); OSError if it cannot be read."""
    return huge_page_kib(Path(f"/proc/{pid}/smaps_rollup").read_text())
