"""Fuzzing the loader and `mr lint`: thousands of generated and mutated manifests, and not
one traceback; every problem is located (file, line >= 1, column >= 1) and says something."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modelrunner.cli import main
from modelrunner.manifest.load import LoadResult, load_file, load_text
from tests.fixtures.common import ROOT
from tests.unit.manifest.test_schema_agreement import mutated

SEEDS = [
    p.read_bytes()
    for glob in ("examples/*.yaml", "examples/invalid/*.yaml", "models.d/*.yaml")
    for p in sorted(ROOT.glob(glob))
]
FUZZ = settings(
    max_examples=1500,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
TOKENS = [
    b":", b": ", b"- ", b"[", b"]", b"{", b"}", b"&a ", b"*a", b"<<: ", b"!!", b"!tag ",
    b"\t", b"\n", b"\r\n", b"---\n", b"...\n", b"'", b'"', b"#", b"%YAML 1.2\n", b"? ",
    b"\x00", b"\x07", b"\xff", b"\xc3\xa9", b"\xe2\x80\xa8", b" " * 7, b"1e999", b".nan",
    b"0x1F", b"~", b"null", b"yes", b"2026-11-21", b"|\n  x", b">-\n  y",
]  # fmt: skip


def assert_located(result: LoadResult, text: bytes) -> None:
    lines = text.count(b"\n") + 2
    for problem in result.problems:
        assert problem.file
        assert 1 <= problem.line <= lines, problem
        assert problem.column >= 1, problem
        assert problem.path.startswith("$"), problem
        assert problem.message.strip(), problem
    for manifest in result.manifests:  # a manifest that loaded has no error at its lines
        start = manifest.document.start.line
        assert not [p for p in result.errors if p.line == start and p.path == "$"], manifest


@st.composite
def mutated_bytes(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(min_value=1, max_value=6))):
        at = draw(st.integers(min_value=0, max_value=len(data)))
        action = draw(st.sampled_from(["insert", "delete", "duplicate", "byte"]))
        if action == "insert":
            data[at:at] = draw(st.sampled_from(TOKENS))
        elif action == "delete":
            del data[at : at + draw(st.integers(min_value=1, max_value=20))]
        elif action == "duplicate":
            data[at:at] = data[max(0, at - 40) : at]
        else:
            data[at:at] = bytes([draw(st.integers(min_value=0, max_value=255))])
    return bytes(data)


@FUZZ
@given(mutated_bytes())
def test_mutated_files_never_raise(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "fuzz.yaml"
        path.write_bytes(data)
        assert_located(load_file(path), data)


@FUZZ
@given(mutated())
def test_generated_manifests_never_raise(document: Any) -> None:
    text = yaml.safe_dump(document, allow_unicode=True, sort_keys=False)
    assert_located(load_text(text, "gen.yaml", "gen"), text.encode())


@FUZZ
@given(st.text(max_size=300))
def test_arbitrary_text_never_raises(text: str) -> None:
    assert_located(load_text(text, "any.yaml", "any"), text.encode())


@settings(max_examples=200, deadline=None)
@given(mutated_bytes())
def test_lint_command_never_raises(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as folder:
        (Path(folder) / "fuzz.yaml").write_bytes(data)
        for output in ("text", "json", "github"):
            assert main(["lint", "--format", output, folder]) in (0, 1)


@pytest.fixture(autouse=True)
def _quiet(capsys: pytest.CaptureFixture[str]) -> None:
    """lint prints; the fuzz tests only care that it returns."""
