"""Every error case, as a client sees it: status, OpenAI-shaped body, headers."""

from __future__ import annotations

import threading
import time

import httpx
import pytest

from modelrunner.registry import Endpoint, Registry, ServedModel
from modelrunner.settings import Settings
from tests.fixtures.http import (
    NO_EOS,
    SMOLLM2,
    Crashable,
    RunningApp,
    free_port,
    serve_in_thread,
    smollm2_registry,
    wait_until,
)

pytestmark = pytest.mark.engine
CHAT = {"model": SMOLLM2, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}


def error_of(response: httpx.Response) -> dict[str, object]:
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert "Traceback" not in response.text
    return dict(body["error"])


def post(api: RunningApp, path: str, **kwargs: object) -> httpx.Response:
    return httpx.post(api.base_url + path, timeout=60, **kwargs)  # type: ignore[arg-type]


def test_unknown_model_is_404_model_not_found_never_a_default(api: RunningApp) -> None:
    response = post(api, "/v1/chat/completions", json={**CHAT, "model": "gpt-4o"})
    assert response.status_code == 404
    error = error_of(response)
    assert (error["code"], error["param"]) == ("model_not_found", "model")
    assert error["message"] == "The model 'gpt-4o' does not exist"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        (b"{not json", None),
        (b'{"messages": [{"role": "user"}]}', "model"),
        (b'{"model": 5, "messages": [{}]}', "model"),
        (b'{"model": "smollm2"}', "messages"),
        (b"[]", None),
    ],
)
def test_malformed_body_is_400(api: RunningApp, body: bytes, param: str | None) -> None:
    response = post(
        api, "/v1/chat/completions", content=body, headers={"content-type": "application/json"}
    )
    assert response.status_code == 400
    error = error_of(response)
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param
    assert "POST /v1/chat/completions" in str(error["message"])


def test_starting_model_is_503_with_retry_after(api: RunningApp) -> None:
    response = post(api, "/engines/v1/completions", json={"model": "warming", "prompt": "x"})
    assert response.status_code == 503
    assert response.headers["retry-after"] == "2"
    assert error_of(response)["message"] == "The model 'warming' is starting"


def test_model_of_another_engine_is_refused_clearly(api: RunningApp) -> None:
    response = post(api, "/engines/vllm/v1/chat/completions", json=CHAT)
    assert response.status_code == 404
    assert error_of(response)["message"] == (
        "The model 'smollm2' is served by the llama.cpp engine, not vllm: use "
        "/engines/llama.cpp/v1/chat/completions or /engines/v1/chat/completions"
    )
    assert httpx.get(api.base_url + "/engines/vllm/v1/models/smollm2").status_code == 404


def test_unknown_engine_in_path_is_404(api: RunningApp) -> None:
    response = post(api, "/engines/llamacpp/v1/chat/completions", json=CHAT)
    assert response.status_code == 404
    assert "Unknown engine 'llamacpp'" in str(error_of(response)["message"])


def test_engine_failure_is_502(crashable: Crashable) -> None:
    # A real engine failure: the engine process dies while it generates the answer.
    app = crashable.app
    body = {"model": SMOLLM2, "prompt": "x", "max_tokens": 1500, "logit_bias": NO_EOS}
    answer: list[httpx.Response] = []
    sender = threading.Thread(
        target=lambda: answer.append(post(app, "/v1/completions", json=body)), daemon=True
    )
    sender.start()
    assert wait_until(lambda: app.in_flight(SMOLLM2) == 1)
    time.sleep(1.0)  # the request has reached the engine (1500 tokens take 15 s or more)
    assert app.in_flight(SMOLLM2) == 1, "the request ended before the engine was killed"
    crashable.kill_engine()
    sender.join(60)
    (response,) = answer
    assert response.status_code == 502
    error = error_of(response)
    assert error["code"] == "upstream_failed"
    assert "llama.cpp instance smollm2-1" in str(error["message"])


def test_unreachable_instance_is_503() -> None:
    registry = Registry()
    dead = f"http://127.0.0.1:{free_port()}"
    registry.publish(ServedModel("gone", "llama.cpp", endpoint=Endpoint("g1", "llama.cpp", dead)))
    with serve_in_thread(registry) as app:
        response = httpx.post(
            app.base_url + "/v1/completions", json={"model": "gone", "prompt": "x"}
        )
    assert response.status_code == 503
    assert response.headers["retry-after"] == "1"
    assert "Cannot reach the engine for POST /v1/completions for model 'gone'" in str(
        error_of(response)["message"]
    )


def test_body_over_the_limit_is_413(llama_engine: str) -> None:
    settings = Settings(port=free_port(), max_body_bytes=1000)
    with serve_in_thread(smollm2_registry(llama_engine), settings) as app:
        big = {**CHAT, "messages": [{"role": "user", "content": "x" * 2000}]}
        response = httpx.post(app.base_url + "/v1/chat/completions", json=big)
        assert response.status_code == 413
        assert error_of(response)["code"] == "request_too_large"
        assert (
            httpx.post(app.base_url + "/v1/chat/completions", json=CHAT, timeout=60).status_code
            == 200
        )


def test_unknown_route_and_method(api: RunningApp) -> None:
    assert error_of(httpx.get(api.base_url + "/v2/nothing"))["code"] == "not_found"
    response = httpx.get(api.base_url + "/v1/chat/completions")
    assert response.status_code == 405
    assert error_of(response)["message"] == "Method not allowed: GET /v1/chat/completions"
