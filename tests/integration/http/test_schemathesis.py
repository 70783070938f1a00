"""schemathesis against the generated OpenAPI document: malformed input never gets a 5xx,
and the translated APIs answer errors in their own shape (Ollama's, Anthropic's)."""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from tests.fixtures.http import RunningApp

pytestmark = pytest.mark.engine
# Store writes and transfers: a generated reference names any registry (the network) and
# the app's store. http/management/test_store_routes_served.py sends them bad input on
# purpose.
STORE_WRITES = {
    ("POST", "/models/create"),
    ("POST", "/models/{name_and_action}"),
    ("DELETE", "/models/{name}"),
    # tests/integration/http/ollama/test_routes.py pulls from a loopback registry instead.
    ("POST", "/api/pull"),
}


def error_shape_problem(path: str, status: int, body: Any) -> str | None:
    """What is wrong with an error body of a translated API, or None."""
    if status < 400:
        return None
    if path.startswith("/api/"):
        ok = isinstance(body, dict) and set(body) == {"error"} and isinstance(body["error"], str)
        return None if ok else "not Ollama's {'error': '...'}"
    if path.endswith(("/messages", "/messages/count_tokens")):
        error = body.get("error") if isinstance(body, dict) else None
        ok = (
            isinstance(error, dict)
            and body.get("type") == "error"
            and isinstance(error.get("type"), str)
            and isinstance(error.get("message"), str)
        )
        return None if ok else "not Anthropic's {'type': 'error', 'error': {...}}"
    return None


def test_no_server_errors_for_generated_requests(api: RunningApp) -> None:
    schema = schemathesis.openapi.from_url(api.base_url + "/schema/openapi.json")
    failures: list[str] = []
    for operation in schema.get_all_operations():
        op = operation.ok()  # type: ignore[union-attr]
        if (op.method.upper(), op.path) in STORE_WRITES:
            continue
        strategy = op.as_strategy()

        @settings(max_examples=25, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))  # fmt: skip
        def check(case: schemathesis.Case) -> None:  # type: ignore[type-arg]
            if case.path == "/engines/requests" and case.query:
                case.query["stream"] = "false"  # follow mode never ends by itself
            response = case.call(base_url=api.base_url, timeout=60)
            # /readyz answers 503 by design while a model is not ready
            readiness = case.path == "/readyz" and response.status_code == 503
            if response.status_code >= 500 and not readiness:
                where = f"{case.method} {case.formatted_path}"
                failures.append(f"{where}: {response.status_code} {response.text[:200]}")
            try:
                body = response.json()
            except ValueError:
                body = None
            shape = error_shape_problem(case.path, response.status_code, body)
            if shape is not None:
                where = f"{case.method} {case.formatted_path}"
                failures.append(f"{where}: {response.status_code} {shape}: {response.text[:200]}")

        from hypothesis import given

        given(strategy)(check)()
    assert not failures, "\n".join(failures[:10])
