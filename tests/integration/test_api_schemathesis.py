"""schemathesis against the generated OpenAPI document: malformed input never gets a 5xx."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from tests.fixtures.http import RunningApp

pytestmark = pytest.mark.engine


def test_no_server_errors_for_generated_requests(api: RunningApp) -> None:
    schema = schemathesis.openapi.from_url(api.base_url + "/schema/openapi.json")
    failures: list[str] = []
    for operation in schema.get_all_operations():
        op = operation.ok()  # type: ignore[union-attr]
        strategy = op.as_strategy()

        @settings(max_examples=25, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))  # fmt: skip
        def check(case: schemathesis.Case) -> None:  # type: ignore[type-arg]
            response = case.call(base_url=api.base_url, timeout=60)
            # /readyz answers 503 by design while a model is not ready
            readiness = case.path == "/readyz" and response.status_code == 503
            if response.status_code >= 500 and not readiness:
                where = f"{case.method} {case.formatted_path}"
                failures.append(f"{where}: {response.status_code} {response.text[:200]}")

        from hypothesis import given

        given(strategy)(check)()
    assert not failures, "\n".join(failures[:10])
