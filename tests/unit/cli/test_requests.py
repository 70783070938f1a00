"""`mr requests`' summary of a structured answer's schema check (pure)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from modelrunner.cli.requests import schema_summary


def answer(*checks: dict[str, Any]) -> str:
    return json.dumps({"choices": [{"index": i, "schema_check": c} for i, c in enumerate(checks)]})


@pytest.mark.parametrize(
    ("response", "shown"),
    [
        (answer({"checked_only": [], "valid": True}), "  (schema enforced by the grammar: valid)"),
        (
            answer({"checked_only": ["uniqueItems", "not"], "valid": False}),
            "  (schema enforced by the grammar, not, uniqueItems checked after: INVALID)",
        ),
        (
            answer(
                {"checked_only": ["not"], "valid": True}, {"checked_only": ["not"], "valid": False}
            ),
            "  (schema enforced by the grammar, not checked after: INVALID)",
        ),
        (json.dumps({"choices": [{"index": 0}]}), ""),
        ("not json", ""),
        (None, ""),
        (json.dumps([1]), ""),
    ],
)
def test_schema_summary(response: Any, shown: str) -> None:
    assert schema_summary(response) == shown
