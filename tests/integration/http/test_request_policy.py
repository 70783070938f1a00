"""Cross-site use of a running app: DNS rebinding (Host), simple cross-site POSTs
(Content-Type), foreign pages (Origin), and what /readyz tells a caller without a key."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from modelrunner.errors import UsageError
from modelrunner.http.app import create_app
from modelrunner.metrics import Metrics
from modelrunner.registry import Registry, ServedModel
from modelrunner.settings import Settings
from tests.fixtures.http import RegistryStatus, RunningApp, free_port, serve_in_thread

CHAT_BODY = b'{"model": "absent", "messages": [{"role": "user", "content": "hi"}]}'


def _registry() -> Registry:
    registry = Registry()
    registry.publish(ServedModel(name="secret-model", engine="llama.cpp", aliases=("hidden",),
                                 unavailable_reason="is starting"))  # fmt: skip
    return registry


@pytest.fixture(scope="module")
def app() -> Iterator[RunningApp]:
    settings = Settings(port=free_port(), allowed_hosts=("models.example.org",))
    with serve_in_thread(_registry(), settings) as running:
        yield running


@pytest.mark.parametrize("path", ["/status", "/v1/models", "/models", "/schema/openapi.json"])
def test_a_rebinding_host_is_refused(app: RunningApp, path: str) -> None:
    answer = httpx.get(app.base_url + path, headers={"host": "rebind.evil.example"})
    assert answer.status_code == 403
    error = answer.json()["error"]
    assert error["code"] == "host_not_allowed"
    assert "rebind.evil.example" in error["message"]


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost:12434", "models.example.org"])
def test_loopback_names_ips_and_listed_hosts_are_served(app: RunningApp, host: str) -> None:
    assert httpx.get(app.base_url + "/status", headers={"host": host}).status_code == 200


def test_probes_answer_any_host(app: RunningApp) -> None:
    assert httpx.get(app.base_url + "/healthz", headers={"host": "pod.internal"}).status_code == 200


@pytest.mark.parametrize(
    ("content_type", "content"),
    [("text/plain", CHAT_BODY), ("application/x-www-form-urlencoded", b"model=absent"),
     ("multipart/form-data; boundary=x", b"--x\r\n\r\n" + CHAT_BODY + b"\r\n--x--"),
     (None, CHAT_BODY)],
)  # fmt: skip
@pytest.mark.parametrize("path", ["/v1/chat/completions", "/engines/llama.cpp/v1/completions"])
def test_simple_cross_site_posts_get_415(
    app: RunningApp, path: str, content_type: str | None, content: bytes
) -> None:
    headers = {"content-type": content_type} if content_type else {}
    answer = httpx.post(app.base_url + path, content=content, headers=headers)
    assert answer.status_code == 415
    assert answer.json()["error"]["code"] == "unsupported_media_type"


def test_json_reaches_the_route(app: RunningApp) -> None:
    answer = httpx.post(app.base_url + "/v1/chat/completions", content=CHAT_BODY,
                        headers={"content-type": "application/json; charset=utf-8"})  # fmt: skip
    assert answer.status_code == 404
    assert answer.json()["error"]["code"] == "model_not_found"


def test_a_foreign_origin_is_refused(app: RunningApp) -> None:
    for method, path in (("GET", "/status"), ("POST", "/v1/chat/completions")):
        answer = httpx.request(method, app.base_url + path, content=CHAT_BODY, headers={
            "content-type": "application/json", "origin": "https://evil.example"})  # fmt: skip
        assert answer.status_code == 403, (method, path)
        assert answer.json()["error"]["code"] == "origin_not_allowed"


def test_the_servers_own_origin_is_allowed(app: RunningApp) -> None:
    answer = httpx.get(app.base_url + "/status", headers={"origin": app.base_url})
    assert answer.status_code == 200


def test_listed_origins_and_keys_let_foreign_pages_call() -> None:
    origin = {"origin": "https://app.example", "content-type": "application/json"}
    listed = Settings(port=free_port(), cors_origins=("https://app.example",))
    with serve_in_thread(_registry(), listed) as running:
        answer = httpx.post(running.base_url + "/v1/chat/completions", content=CHAT_BODY,
                            headers=origin)  # fmt: skip
        assert answer.status_code == 404
        assert answer.headers["access-control-allow-origin"] == "https://app.example"
    keyed = Settings(port=free_port(), api_keys=("k1",))
    with serve_in_thread(_registry(), keyed) as running:
        url = running.base_url + "/v1/chat/completions"
        assert httpx.post(url, content=CHAT_BODY, headers=origin).status_code == 401
        with_key = {**origin, "authorization": "Bearer k1"}
        assert httpx.post(url, content=CHAT_BODY, headers=with_key).status_code == 404


def test_readyz_gives_callers_without_a_key_only_the_aggregate() -> None:
    settings = Settings(port=free_port(), api_keys=("k1",))
    with serve_in_thread(_registry(), settings) as running:
        url = running.base_url + "/readyz?model=secret-model,hidden,nope"
        anonymous = httpx.get(url)
        assert anonymous.status_code == 503  # secret-model is still starting
        assert anonymous.json() == {"ready": False, "models": [], "not_ready": []}
        assert "secret-model" not in anonymous.text and "hidden" not in anonymous.text
        keyed = httpx.get(url, headers={"authorization": "Bearer k1"})
        assert keyed.json()["not_ready"] == ["secret-model", "hidden", "nope"]


def test_a_non_ascii_key_is_refused_at_start() -> None:
    settings = Settings(api_keys=("clé",))
    with pytest.raises(UsageError, match="non-ASCII"):
        create_app(settings, Registry(), RegistryStatus(Registry()), Metrics())
