"""Management routes on a running app: listings, status, probes, metrics, OpenAPI."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from modelrunner.registry import Endpoint, Registry, ServedModel
from tests.fixtures.http import SMOLLM2, RunningApp, free_port, serve_in_thread

pytestmark = pytest.mark.engine


def test_dmr_models_listing(api: RunningApp) -> None:
    listing = httpx.get(api.base_url + "/models").json()
    smollm2 = next(m for m in listing if m["tags"][0] == SMOLLM2)
    assert smollm2["tags"] == [SMOLLM2, "ai/smollm2"]
    assert smollm2["config"]["format"] == "gguf"
    assert isinstance(smollm2["created"], int)


def test_status_and_probes(api: RunningApp) -> None:
    status = {s["name"]: s["phase"] for s in httpx.get(api.base_url + "/status").json()}
    assert status == {SMOLLM2: "ready", "warming": "starting", "tiny-vllm": "ready"}
    assert httpx.get(api.base_url + "/healthz").json() == {"status": "ok"}
    everything = httpx.get(api.base_url + "/readyz")
    assert everything.status_code == 503
    assert everything.json()["not_ready"] == ["warming"]
    assert (
        httpx.get(api.base_url + "/readyz", params={"model": "smollm2,ai/smollm2"}).status_code
        == 200
    )
    assert (
        httpx.get(api.base_url + "/readyz", params={"model": "smollm2,warming"}).status_code == 503
    )


def test_metrics_count_requests_tokens_and_in_flight(api: RunningApp) -> None:
    body = {"model": SMOLLM2, "prompt": "Hi", "max_tokens": 3}
    assert httpx.post(api.base_url + "/v1/completions", json=body, timeout=60).status_code == 200
    httpx.post(api.base_url + "/v1/completions", json={**body, "model": "nope"})
    text = httpx.get(api.base_url + "/metrics").text
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    ok = ("mr_requests_total", (("model", SMOLLM2), ("route", "completions"), ("status", "200")))
    assert samples[ok] >= 1
    assert (
        samples[
            (
                "mr_requests_total",
                (("model", "unknown"), ("route", "completions"), ("status", "404")),
            )
        ]
        >= 1
    )
    assert samples[("mr_tokens_total", (("kind", "completion"), ("model", SMOLLM2)))] >= 1
    assert samples[("mr_requests_in_flight", (("model", SMOLLM2),))] == 0
    assert (
        "mr_request_duration_seconds_count",
        (("model", SMOLLM2), ("route", "completions")),
    ) in samples


class MetricsEngine:
    """An engine that only exposes /metrics (as vLLM does), for the re-exposition."""

    TEXT = b"# TYPE vllm:num_requests_running gauge\nvllm:num_requests_running 3.0\n"

    def __init__(self, status: str = "200 OK") -> None:
        self.port = free_port()
        self.status = status  # "404 Not Found": an engine without /metrics (Diffusers)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        text = self.TEXT if self.status.startswith("200") else b""
        head = f"HTTP/1.1 {self.status}\r\ncontent-length: {len(text)}\r\nconnection: close\r\n\r\n"
        writer.write(head.encode() + text)
        await writer.drain()
        writer.close()


@pytest.fixture
def with_metrics_engine(llama_engine: str) -> Iterator[RunningApp]:
    engine, bare = MetricsEngine(), MetricsEngine("404 Not Found")
    loop = asyncio.new_event_loop()
    servers = [
        loop.run_until_complete(asyncio.start_server(e.handle, "127.0.0.1", e.port))
        for e in (engine, bare)
    ]
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    registry = Registry()
    url = f"http://127.0.0.1:{engine.port}"
    registry.publish(ServedModel("tiny", "vllm", endpoint=Endpoint("t1", "vllm", url)))
    registry.publish(
        ServedModel(SMOLLM2, "llama.cpp", endpoint=Endpoint("s1", "llama.cpp", llama_engine))
    )
    bare_url = f"http://127.0.0.1:{bare.port}"
    registry.publish(
        ServedModel("bare", "diffusers", endpoint=Endpoint("b1", "diffusers", bare_url))
    )
    gone_url = f"http://127.0.0.1:{free_port()}"  # nothing listens: the scrape fails
    registry.publish(ServedModel("gone", "vllm", endpoint=Endpoint("g1", "vllm", gone_url)))
    try:
        with serve_in_thread(registry) as app:
            yield app
    finally:
        for server in servers:
            loop.call_soon_threadsafe(server.close)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)


def test_engine_metrics_are_reexposed_with_a_model_label(with_metrics_engine: RunningApp) -> None:
    text = httpx.get(with_metrics_engine.base_url + "/metrics").text
    assert 'vllm:num_requests_running{model="tiny"} 3.0' in text
    # The product's llama.cpp engine is scraped too, its series labelled with the model.
    assert 'llamacpp:slots{model="smollm2"}' in text
    assert 'llamacpp:requests_processing{model="smollm2"}' in text
    # An engine that cannot be reached counts a scrape error; one without /metrics (404)
    # and the ones that answered count none.
    assert 'mr_engine_scrape_errors_total{model="gone"} 1.0' in text
    for model in ("bare", "smollm2", "tiny"):
        assert f'mr_engine_scrape_errors_total{{model="{model}"}}' not in text


def test_openapi_document(api: RunningApp) -> None:
    doc = httpx.get(api.base_url + "/schema/openapi.json").json()
    for path in (
        "/v1/chat/completions",
        "/engines/v1/embeddings",
        "/engines/{engine}/v1/images/generations",
        "/v1/models/{model_id}",
        "/models",
        "/status",
        "/healthz",
        "/readyz",
        "/metrics",
    ):
        assert path in doc["paths"], path
    error = doc["paths"]["/v1/chat/completions"]["post"]["responses"]["404"]
    assert (
        error["content"]["application/json"]["schema"]["$ref"] == "#/components/schemas/ErrorBody"
    )
