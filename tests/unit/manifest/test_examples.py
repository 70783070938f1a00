"""The shipped manifests are tests: every valid one lints clean, every invalid one fails
with exactly the problems its `# expect:` lines state (line, column, path and message)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from modelrunner.cli import main
from tests.fixtures.common import ROOT

EXAMPLES = ROOT / "examples"
INVALID = EXAMPLES / "invalid"
SCHEMA_LINE = re.compile(r"^# yaml-language-server: \$schema=(\S+)$")


def _lint_json(
    capsys: pytest.CaptureFixture[str], *args: str
) -> tuple[int, list[dict[str, object]]]:
    code = main(["lint", "--format", "json", *args])
    return code, json.loads(capsys.readouterr().out)


def test_valid_examples_and_default_models_lint_clean(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(ROOT)
    code, problems = _lint_json(capsys, "--strict", "examples", "models.d")
    assert problems == []
    assert code == 0


def test_every_example_points_editors_at_the_schema() -> None:
    files = [*EXAMPLES.glob("*.yaml"), *INVALID.glob("*.yaml"), *(ROOT / "models.d").glob("*.yaml")]
    assert len(files) >= 20
    for path in files:
        first = path.read_bytes().split(b"\n", 1)[0].decode()
        match = SCHEMA_LINE.match(first)
        assert match, f"{path}: first line must be the yaml-language-server $schema line"
        target = (path.parent / match.group(1)).resolve()
        assert target == ROOT / "schema" / "model-manifest.schema.json", path


def _expected(path: Path) -> set[str]:
    lines = path.read_bytes().decode("utf-8", "replace").splitlines()
    return {line.removeprefix("# expect: ") for line in lines if line.startswith("# expect: ")}


@pytest.mark.parametrize("path", sorted(INVALID.glob("*.yaml")), ids=lambda p: p.name)
def test_invalid_example_fails_with_its_stated_problems(
    path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(ROOT)
    expected = _expected(path)
    assert expected, f"{path.name} states no `# expect:` line"
    # The whole folder at once, so the cross-file checks (duplicate names) take part.
    code, problems = _lint_json(capsys, "examples/invalid")
    assert code == 1
    shown = path.relative_to(ROOT).as_posix()
    got = {
        f"{p['line']}:{p['column']}: {p['path']}: {p['message']}"
        for p in problems
        if p["file"] == shown
    }
    assert got == expected
