"""`mr lint` as a user calls it: exit codes, output formats, --strict, bad paths."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from modelrunner.cli import main
from tests.fixtures.common import ROOT

GOOD = "apiVersion: modelrunner/v1\nmodel: ai/smollm2:135M-Q4_1\n"
FLOATING = "apiVersion: modelrunner/v1\nmodel: ai/smollm2\n"
BAD = "apiVersion: modelrunner/v1\nmodel: ai/smollm2:135M-Q4_1\ncontext_size: 0\n"


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


def test_clean_folder_exits_0(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write(tmp_path, "a.yaml", GOOD)
    assert main(["lint", str(tmp_path)]) == 0
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "1 valid manifest(s): 0 error(s), 0 warning(s)" in captured.err


def test_problem_line_has_file_line_column_path_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, "a.yaml", BAD)
    assert main(["lint", str(path)]) == 1
    assert capsys.readouterr().out.strip() == f"{path}:3:15: $.context_size: must be >= 1; got 0"


def test_reports_every_problem_not_the_first(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write(tmp_path, "a.yaml", "apiVersion: x\nmodel: 3\nengine: llamacpp\nthreads: 2\n")
    write(tmp_path, "b.yaml", BAD)
    assert main(["lint", str(tmp_path)]) == 1
    out = capsys.readouterr().out.splitlines()
    assert [line.split(": ", 2)[1] for line in out] == [
        "$.apiVersion",
        "$.model",
        "$.engine",
        "$.threads",
        "$.context_size",
    ]
    assert "did you mean 'llama.cpp'?" in out[2]


def test_floating_tag_warns_and_strict_fails(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write(tmp_path, "a.yaml", FLOATING)
    assert main(["lint", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "warning: 'ai/smollm2' is a floating tag (latest): pin a digest" in out
    assert main(["lint", "--strict", str(tmp_path)]) == 1


def test_json_format(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, "a.yaml", BAD)
    main(["lint", "--format", "json", str(path)])
    assert json.loads(capsys.readouterr().out) == [
        {
            "file": str(path),
            "line": 3,
            "column": 15,
            "path": "$.context_size",
            "message": "must be >= 1; got 0",
            "severity": "error",
            "rule": "schema",
        }
    ]


def test_github_format_annotates(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, "a.yaml", BAD)
    main(["lint", "--format", "github", str(path)])
    line = capsys.readouterr().out.strip()
    assert line.startswith(f"::error file={path},line=3,col=15,title=mr lint schema::")
    assert line.endswith("::$.context_size: must be >= 1; got 0")


def test_missing_folder_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["lint", str(tmp_path / "nope")]) == 2
    assert "no such file or folder" in capsys.readouterr().err


def test_unknown_option_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["lint", "--format", "xml"]) == 2
    assert "invalid choice: 'xml'" in capsys.readouterr().err


def test_default_path_is_models_d(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "models.d").mkdir()
    write(tmp_path / "models.d", "m.yaml", BAD)
    monkeypatch.chdir(tmp_path)
    assert main(["lint"]) == 1
    assert capsys.readouterr().out.startswith("models.d/m.yaml:3:15:")


def test_lint_imports_no_engine() -> None:
    """`mr lint` stays fast: no torch, vllm, diffusers or llama_cpp on the way."""
    code = (
        "import sys\n"
        "from modelrunner.cli import main\n"
        "rc = main(['lint', 'examples'])\n"
        "heavy = [m for m in ('torch', 'vllm', 'diffusers', 'llama_cpp', 'transformers', 'oras')"
        " if m in sys.modules]\n"
        "print(rc, heavy)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "0 []"
