"""API keys and CORS on a running app."""

from __future__ import annotations

import httpx
import pytest
from openai import AuthenticationError, OpenAI

from modelrunner.errors import UsageError
from modelrunner.http.app import create_app
from modelrunner.metrics import Metrics
from modelrunner.registry import Registry
from modelrunner.settings import Settings
from tests.fixtures.http import (
    SMOLLM2,
    RegistryStatus,
    free_port,
    serve_in_thread,
    smollm2_registry,
)

pytestmark = pytest.mark.engine


def test_create_app_refuses_a_public_bind_without_keys() -> None:
    with pytest.raises(UsageError, match=r"refusing to listen on 0\.0\.0\.0"):
        create_app(Settings(host="0.0.0.0"), Registry(), RegistryStatus(Registry()), Metrics())


def test_keys_are_required_when_configured(llama_engine: str) -> None:
    settings = Settings(port=free_port(), api_keys=("s3cret",))
    with serve_in_thread(smollm2_registry(llama_engine), settings) as app:
        url = app.base_url
        missing = httpx.get(url + "/v1/models")
        assert missing.status_code == 401
        assert missing.headers["www-authenticate"] == "Bearer"
        assert missing.json()["error"]["code"] == "invalid_api_key"
        assert (
            httpx.get(url + "/v1/models", headers={"authorization": "Bearer nope"}).status_code
            == 401
        )
        assert httpx.get(url + "/healthz").status_code == 200  # probes stay open
        # Without a key, /readyz answers for the whole server only ("warming" is starting).
        anonymous = httpx.get(url + "/readyz?model=smollm2")
        assert anonymous.status_code == 503 and anonymous.json()["models"] == []
        keyed = {"authorization": "Bearer s3cret"}
        assert httpx.get(url + "/readyz?model=smollm2", headers=keyed).status_code == 200
        with pytest.raises(AuthenticationError):
            OpenAI(base_url=url + "/v1", api_key="wrong", max_retries=0).models.list()
        client = OpenAI(base_url=url + "/v1", api_key="s3cret", max_retries=0)
        answer = client.completions.create(model=SMOLLM2, prompt="Hi", max_tokens=2)
        assert answer.choices[0].text is not None


def test_cors_is_off_by_default(api: object) -> None:
    from tests.fixtures.http import RunningApp

    assert isinstance(api, RunningApp)
    response = httpx.get(api.base_url + "/v1/models", headers={"origin": "https://app.example"})
    assert "access-control-allow-origin" not in response.headers


def test_cors_allow_list(llama_engine: str) -> None:
    settings = Settings(port=free_port(), cors_origins=("https://app.example",))
    with serve_in_thread(smollm2_registry(llama_engine), settings) as app:
        preflight = httpx.options(
            app.base_url + "/v1/chat/completions",
            headers={
                "origin": "https://app.example",
                "access-control-request-method": "POST",
                "access-control-request-headers": "authorization, content-type",
            },
        )
        assert preflight.status_code in (200, 204)
        assert preflight.headers["access-control-allow-origin"] == "https://app.example"
        other = httpx.get(app.base_url + "/v1/models", headers={"origin": "https://evil.example"})
        assert "access-control-allow-origin" not in other.headers
