"""Images end to end: the official openai client -> `mr serve` (the reconciler starting the
product's Diffusers engine on a tiny Stable Diffusion DDUF) -> a PNG of the asked size."""

from __future__ import annotations

import base64
import io
from collections.abc import Callable
from pathlib import Path

import httpx
import openai
import pytest
import yaml
from PIL import Image

from tests.fixtures.serve import Server, manifest

pytestmark = pytest.mark.engine
PREFIXES = ("/v1", "/engines/v1", "/engines/diffusers/v1")


def sd_manifest(dduf: Path, name: str) -> str:
    document = {
        "apiVersion": "modelrunner/v1",
        "name": name,
        "model": str(dduf),
        "engine": "diffusers",
        "diffusers": {"dtype": "float32", "steps": 2},
    }
    return yaml.safe_dump(document, sort_keys=False)


def test_images_generate_through_every_path_prefix(
    start_server: Callable[..., Server], tiny_sd_dduf: Path, smollm2_gguf: Path
) -> None:
    server = start_server()
    server.write("sd.yaml", sd_manifest(tiny_sd_dduf, "tiny-sd"))
    server.write("smol.yaml", manifest(smollm2_gguf, "smol"))
    server.wait_for("tiny-sd to be ready", lambda: server.ready("tiny-sd"), timeout=300)
    server.wait_for("smol to be ready", lambda: server.ready("smol"), timeout=120)

    for prefix in PREFIXES:
        client = openai.OpenAI(base_url=server.url + prefix, api_key="unused", max_retries=0)
        answer = client.images.generate(
            model="tiny-sd", prompt="a red fox", size="64x64", response_format="b64_json", n=1
        )
        assert answer.data is not None and len(answer.data) == 1, prefix
        encoded = answer.data[0].b64_json
        assert encoded, prefix
        image = Image.open(io.BytesIO(base64.b64decode(encoded)))
        assert image.format == "PNG", prefix
        image.load()
        assert image.size == (64, 64), prefix

    # The engine path names the model's engine: images of tiny-sd are not llama.cpp's.
    wrong = httpx.post(
        server.url + "/engines/llama.cpp/v1/images/generations",
        json={"model": "tiny-sd", "prompt": "a red fox", "size": "64x64"},
        timeout=30,
    )
    assert wrong.status_code == 404
    assert wrong.json()["error"]["code"] == "model_not_found"
    # No text tokenizer in a Diffusers pipeline: /tokenize says so, naming the field.
    tokenized = httpx.post(
        server.url + "/tokenize", json={"model": "tiny-sd", "prompt": "a red fox"}, timeout=30
    )
    assert tokenized.status_code == 400
    assert tokenized.json()["error"]["param"] == "model"
    assert "diffusers engine has no text tokenizer" in tokenized.json()["error"]["message"]
    listed = server.client(max_retries=0).models.list()
    engines = {m.id: getattr(m, "engine", None) for m in listed}
    assert engines == {"tiny-sd": "diffusers", "smol": "llama.cpp"}
    diffusers_only = openai.OpenAI(
        base_url=server.url + "/engines/diffusers/v1", api_key="unused", max_retries=0
    )
    assert [m.id for m in diffusers_only.models.list()] == ["tiny-sd"]
