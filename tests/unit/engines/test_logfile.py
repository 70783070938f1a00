"""Captured engine output: rotation and the stderr tail."""

from __future__ import annotations

from pathlib import Path

from modelrunner.engines.logfile import RotatingLog, Tail


def test_rotates_at_the_cap_and_keeps_a_few(tmp_path: Path) -> None:
    log = RotatingLog(tmp_path / "i.log", max_bytes=10, backups=2)
    for n in range(5):
        log.write(f"line{n}...\n".encode())  # 10 bytes each: one per file
    log.close()
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["i.log", "i.log.1", "i.log.2"]
    assert (tmp_path / "i.log").read_text() == "line4...\n"
    assert (tmp_path / "i.log.1").read_text() == "line3...\n"
    assert (tmp_path / "i.log.2").read_text() == "line2...\n"


def test_appends_to_an_existing_log(tmp_path: Path) -> None:
    (tmp_path / "i.log").write_bytes(b"old\n")
    log = RotatingLog(tmp_path / "i.log", max_bytes=100)
    log.write(b"new\n")
    log.close()
    assert (tmp_path / "i.log").read_text() == "old\nnew\n"


def test_no_backups_means_truncate(tmp_path: Path) -> None:
    log = RotatingLog(tmp_path / "i.log", max_bytes=4, backups=0)
    log.write(b"abcd")
    log.write(b"efgh")
    log.close()
    assert [p.name for p in tmp_path.iterdir()] == ["i.log"]
    assert (tmp_path / "i.log").read_text() == "efgh"


def test_tail_keeps_last_lines_across_chunks_and_carriage_returns() -> None:
    tail = Tail(lines=3)
    tail.feed(b"one\ntw")
    tail.feed(b"o\r\nthree\rfour\n\nfi")
    assert tail.text() == "three\nfour\nfi"  # pending "fi" shown, oldest dropped
    tail.feed(b"ve\n")
    assert tail.text() == "three\nfour\nfive"
    tail.clear()
    assert tail.text() == ""


def test_tail_survives_invalid_utf8_and_long_lines() -> None:
    tail = Tail(lines=2, max_line=5)
    tail.feed(b"\xff\xfeabc\n" + b"x" * 50)
    lines = tail.text().splitlines()
    assert lines[0].endswith("abc")
    assert lines[1] == "xxxxx"
