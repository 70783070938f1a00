"""Where the weights go (huge_pages): table tests of the decisions, and llama.cpp's
load mode for the two flags."""

from __future__ import annotations

import llama_cpp as C
import pytest

from modelrunner.engines.llamacpp.huge_pages import (
    TUNABLE,
    huge_page_kib,
    huge_page_weights,
    reexec_env,
    thp_mode,
)
from modelrunner.engines.llamacpp.model import load_mode


@pytest.mark.parametrize(
    ("setting", "mode"),
    [
        ("always [madvise] never\n", "madvise"),
        ("[always] madvise never\n", "always"),
        ("always madvise [never]\n", "never"),
        ("", None),
        (None, None),
    ],
)
def test_thp_mode(setting: str | None, mode: str | None) -> None:
    assert thp_mode(setting) == mode


@pytest.mark.parametrize(
    ("use_mmap", "thp", "glibc", "gpu_layers", "huge"),
    [
        (None, "madvise", True, 0, True),  # the default here: glibc asks for them
        (None, "always", False, 0, True),  # the kernel gives them without asking
        (None, "madvise", False, 0, False),  # nobody asks: keep the shared mapping
        (None, "never", True, 0, False),
        (None, None, True, 0, False),  # no THP at all
        (None, "madvise", True, 99, False),  # offloaded: llama.cpp's own choice
        (True, "madvise", True, 0, False),  # the operator asked for the mapping
        (False, "madvise", True, 0, True),
        (False, "never", True, 0, False),  # in memory, but in small pages
    ],
)
def test_huge_page_weights(
    use_mmap: bool | None, thp: str | None, glibc: bool, gpu_layers: int, huge: bool
) -> None:
    assert huge_page_weights(use_mmap, thp, glibc, gpu_layers) is huge


def test_reexec_env_adds_the_tunable_once_and_keeps_others() -> None:
    env = reexec_env({"PATH": "/bin"})
    assert env == {"PATH": "/bin", "GLIBC_TUNABLES": TUNABLE}
    assert reexec_env(env) is None  # the started-again process does not start again
    merged = reexec_env({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"})
    assert merged is not None
    assert merged["GLIBC_TUNABLES"] == f"glibc.malloc.arena_max=2:{TUNABLE}"
    assert reexec_env({"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"}) is None  # the user's say


def test_huge_page_kib() -> None:
    rollup = "Rss:  359516 kB\nAnonymous:  239580 kB\nAnonHugePages:  206848 kB\n"
    assert huge_page_kib(rollup) == 206848
    assert huge_page_kib("Rss: 1 kB\n") == 0


@pytest.mark.parametrize(
    ("use_mmap", "use_mlock", "mode"),
    [
        (True, False, C.LLAMA_LOAD_MODE_MMAP),
        (False, False, C.LLAMA_LOAD_MODE_NONE),
        (True, True, C.LLAMA_LOAD_MODE_MMAP_MLOCK),
        (False, True, C.LLAMA_LOAD_MODE_MLOCK),
    ],
)
def test_load_mode(use_mmap: bool, use_mlock: bool, mode: int) -> None:
    assert load_mode(use_mmap, use_mlock) == mode
    params = C.llama_model_default_params()
    params.load_mode = load_mode(use_mmap, use_mlock)  # a field of the C struct
    assert "load_mode" in dict(params._fields_)
