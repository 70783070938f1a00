"""``mr engines``: versions and interpreters, without importing any engine."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from modelrunner.cli import main


def test_json_lists_every_engine(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["engines", "--json", "--vllm-python", sys.executable])
    rows = json.loads(capsys.readouterr().out)
    assert [r["engine"] for r in rows] == ["llama.cpp", "vllm", "diffusers"]
    by_name = {r["engine"]: r for r in rows}
    assert by_name["llama.cpp"]["version"] == "0.3.36"
    assert by_name["vllm"]["python"] == sys.executable
    assert by_name["vllm"]["version"] is None  # this interpreter has no vLLM
    assert code == 1  # not every engine is usable with that interpreter


def test_text_names_a_missing_interpreter(capsys: pytest.CaptureFixture[str]) -> None:
    main(["engines", "--vllm-python", "/nonexistent/python"])
    out = capsys.readouterr().out
    assert "vllm" in out
    assert "/nonexistent/python" in out
    assert "MR_VLLM_PYTHON" in out


def test_imports_no_engine() -> None:
    code = (
        "import sys; from modelrunner.cli import main; main(['engines', '--json']); "
        "heavy = {'torch', 'llama_cpp', 'diffusers', 'vllm', 'transformers'} & set(sys.modules); "
        "sys.exit(f'imported {heavy}' if heavy else 0)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
