"""Process-group membership and memory from /proc."""

from __future__ import annotations

import os
import subprocess
import sys

from modelrunner.engines.memory import group_alive, group_pids, group_rss_bytes, rss_bytes


def test_a_new_group_and_its_memory() -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(30)"], start_new_session=True
    )
    try:
        assert group_pids(child.pid) == [child.pid]
        assert group_alive(child.pid)
        assert group_rss_bytes(child.pid) > 1024 * 1024  # one process: its own RSS
        assert rss_bytes(child.pid) > 1024 * 1024
    finally:
        child.kill()
        child.wait()
    assert not group_alive(child.pid)
    assert group_rss_bytes(child.pid) == 0


def test_this_process_is_in_its_own_group() -> None:
    assert os.getpid() in group_pids(os.getpgid(0))
