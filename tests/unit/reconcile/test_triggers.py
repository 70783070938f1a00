"""What starts a reconcile pass: the debounce with its maximum, the event filter, and a
resync that nothing queued can hold back. The file events are real (watchfiles on a
temporary folder); the pass is a recorder, since only the trigger timing is under test."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from modelrunner.reconcile.triggers import MAX_DEBOUNCE, Triggers, is_relevant, wait_before_pass
from modelrunner.settings import Settings


@pytest.mark.parametrize(
    ("now", "first", "last", "quiet", "wait"),
    [(0.0, 0.0, 0.0, 0.2, 0.2),     # one event: the quiet period
     (0.5, 0.0, 0.45, 0.2, 0.15),   # a later event extends it ...
     (0.9, 0.0, 0.9, 0.2, 0.1),     # ... but not past MAX_DEBOUNCE after the first
     (1.3, 0.0, 1.25, 0.2, 0.0),    # due: events keep coming, the pass runs anyway
     (1.0, 0.0, 0.5, 0.2, 0.0),     # quiet long enough
     (0.0, 0.0, 0.0, 3.0, 3.0)],    # a quiet period above the maximum is kept
)  # fmt: skip
def test_wait_before_pass(now: float, first: float, last: float, quiet: float, wait: float) -> None:
    assert wait_before_pass(now, first, last, quiet) == pytest.approx(wait)


@pytest.mark.parametrize(
    ("path", "relevant"),
    [("/m/a.yaml", True), ("/m/b.yml", True), ("/m/..data", True), ("/m/..data_tmp", True),
     ("/m/.heartbeat", False), ("/m/.a.yaml.swp", False), ("/m/.a.yaml.tmp", False),
     ("/m/a.yaml~", False), ("/m/notes.txt", False), ("/m/4913", False),
     ("/m/..2026_11_30_19_00_00.123/a.yaml", True)],
)  # fmt: skip
def test_only_what_the_loader_reads_is_an_event(path: str, relevant: bool) -> None:
    assert is_relevant(path) is relevant


def _run(triggers_settings: Settings, body: object) -> list[tuple[float, bool]]:
    passes: list[tuple[float, bool]] = []

    async def record(*, retry_failed: bool = False) -> None:
        passes.append((time.monotonic(), retry_failed))

    async def main() -> None:
        triggers = Triggers(triggers_settings, record)
        async with triggers.running():
            await body(triggers)  # type: ignore[operator]

    asyncio.run(main())
    return passes


def test_a_busy_hidden_file_does_not_delay_a_manifest_change(tmp_path: Path) -> None:
    """The issue's case: `.heartbeat` rewritten every 0.1 s; a manifest edited meanwhile is
    picked up within about a second, not when the writes stop."""
    edited_at: list[float] = []

    async def body(_triggers: Triggers) -> None:
        await asyncio.sleep(0.5)  # the watcher is up
        end = time.monotonic() + 6.0
        while time.monotonic() < end:
            (tmp_path / ".heartbeat").write_text(str(time.monotonic()))
            if not edited_at and time.monotonic() > end - 5.0:
                (tmp_path / "smollm2.yaml").write_text("aliases: [chat]\n")
                edited_at.append(time.monotonic())
            await asyncio.sleep(0.1)

    settings = Settings(models_dir=tmp_path, debounce=0.2, resync_interval=3600)
    passes = _run(settings, body)
    after_edit = [t - edited_at[0] for t, _ in passes if t >= edited_at[0]]
    assert after_edit, "the manifest change never started a pass"
    assert after_edit[0] < MAX_DEBOUNCE + 1.0, f"first pass {after_edit[0]:.1f} s after the edit"
    assert len(after_edit) == 1, "the hidden file's writes started passes of their own"


def test_constant_events_cannot_starve_passes_or_the_resync(tmp_path: Path) -> None:
    """Events every 50 ms, and a quiet period (10 s) that never comes: the resync still
    runs on its own schedule."""

    async def body(triggers: Triggers) -> None:
        end = time.monotonic() + 3.0
        while time.monotonic() < end:
            triggers.fire()
            await asyncio.sleep(0.05)

    settings = Settings(models_dir=tmp_path, debounce=10.0, resync_interval=0.5)
    passes = _run(settings, body)
    resyncs = [t for t, retry in passes if retry]
    assert len(resyncs) >= 4, f"{len(resyncs)} resync passes in 3 s with a 0.5 s interval"
