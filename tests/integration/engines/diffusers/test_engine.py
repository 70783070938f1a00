"""Diffusers for real: a tiny Stable Diffusion pipeline made by the test, exported as DDUF,
served by the project's image server on the CPU."""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from PIL import Image

from modelrunner import engines
from modelrunner.engines.memory import group_alive
from modelrunner.engines.process import EngineProcess
from modelrunner.model_files import ModelFiles
from modelrunner.settings import Settings
from tests.fixtures.engines import LoopThread, make_manifest
from tests.fixtures.http import raw_exchange

pytestmark = pytest.mark.engine
IMAGES = "/v1/images/generations"


@pytest.fixture(scope="module")
def sd(
    loop_thread: LoopThread, tiny_sd_dduf: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[EngineProcess]:
    manifest = make_manifest(
        name="tiny-sd", diffusers={"steps": 2, "size": "32x32"}, runtime_flags=["--seed", "1"]
    )
    settings = Settings(log_dir=tmp_path_factory.mktemp("logs"))
    instance = engines.create_instance(manifest, ModelFiles("dduf", tiny_sd_dduf), settings)
    loop_thread.run(instance.start())
    yield instance
    pgid = instance.pid
    loop_thread.run(instance.stop())
    assert pgid is not None and not group_alive(pgid)


def decode(item: dict[str, str]) -> Image.Image:
    image = Image.open(io.BytesIO(base64.b64decode(item["b64_json"])))
    assert image.format == "PNG"
    image.load()
    return image


def test_images_of_the_requested_size(sd: EngineProcess) -> None:
    body = {"model": "tiny-sd", "prompt": "a red fox", "size": "64x48", "n": 2}
    body["response_format"] = "b64_json"
    response = httpx.post(sd.base_url + IMAGES, json=body, timeout=120)
    assert response.status_code == 200, response.text
    data = response.json()["data"]
    assert len(data) == 2
    assert [decode(item).size for item in data] == [(64, 48), (64, 48)]


def test_default_size_comes_from_the_manifest(sd: EngineProcess) -> None:
    response = httpx.post(sd.base_url + IMAGES, json={"prompt": "a cat"}, timeout=120)
    assert response.status_code == 200, response.text
    assert decode(response.json()["data"][0]).size == (32, 32)


def test_same_seed_same_image(sd: EngineProcess) -> None:
    body = {"prompt": "a tree", "size": "32x32", "seed": 5}
    first, second = (httpx.post(sd.base_url + IMAGES, json=body, timeout=120) for _ in range(2))
    assert first.json()["data"][0]["b64_json"] == second.json()["data"][0]["b64_json"]


def _image(sd: EngineProcess, **fields: object) -> str:
    body = {"prompt": "a tree", "size": "32x32", **fields}
    response = httpx.post(sd.base_url + IMAGES, json=body, timeout=120)
    assert response.status_code == 200, response.text
    return str(response.json()["data"][0]["b64_json"])


def test_the_request_seed_decides_the_image(sd: EngineProcess) -> None:
    # The engine was started with --seed 1: a request's seed must win over it.
    assert _image(sd, seed=5) == _image(sd, seed=5)
    assert _image(sd, seed=5) != _image(sd, seed=6)
    assert _image(sd, seed=1) == _image(sd)  # no seed: the engine's


def test_the_negative_prompt_changes_the_image(sd: EngineProcess) -> None:
    plain = _image(sd, seed=5)
    negative = _image(sd, seed=5, negative_prompt="leaves, green")
    assert negative != plain
    assert _image(sd, seed=5, negative_prompt="leaves, green") == negative  # still seeded


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"prompt": "x", "size": "63x64"}, "multiples of 8"),
        ({"prompt": "x", "size": "big"}, "must look like 512x512"),
        ({"prompt": "x", "n": 0}, "n must be an integer"),
        ({"prompt": ""}, "prompt must be"),
        ({"prompt": "x", "response_format": "url"}, "only b64_json"),
        # The test pipeline's DDIM scheduler indexes past its table at 1000 steps.
        ({"prompt": "x", "steps": 1000}, "steps 1000 is more than this model's scheduler takes"),
    ],
)
def test_bad_requests_are_openai_errors(
    sd: EngineProcess, body: dict[str, object], message: str
) -> None:
    response = httpx.post(sd.base_url + IMAGES, json=body, timeout=30)
    assert response.status_code == 400
    assert message in response.json()["error"]["message"]


def test_models_and_health(sd: EngineProcess) -> None:
    assert httpx.get(sd.base_url + "/health").json() == {"status": "ok", "device": "cpu"}
    assert httpx.get(sd.base_url + "/v1/models").json()["data"][0]["id"] == "tiny-sd"


@pytest.mark.parametrize("length", [b"abc", b"-5", b"1e3", b"12, 13"])
def test_a_bad_content_length_is_a_400_and_the_connection_closed(
    sd: EngineProcess, length: bytes
) -> None:
    request = b"POST " + IMAGES.encode() + b" HTTP/1.1\r\nContent-Length: " + length
    answer = raw_exchange(sd.base_url, request + b"\r\n\r\n{}")
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.lower().startswith(b"http/1.1 400"), answer
    assert b"connection: close" in head.lower()
    assert b"Content-Length" in body
