"""A request's keep_alive on the Ollama routes, end to end: the official `ollama` client ->
`mr serve` -> llama.cpp on SmolLM2. Its own server: the test unloads the model."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import ollama
import pytest

from tests.fixtures.serve import Server, manifest

pytestmark = [pytest.mark.engine]
PROMPT = [{"role": "user", "content": "Say hi."}]
ONE_TOKEN = {"temperature": 0, "num_predict": 1}


def expires_in(client: ollama.Client, name: str) -> timedelta | None:
    loaded = {m.model: m.expires_at for m in client.ps().models}
    expires = loaded.get(name)
    return None if expires is None else expires - datetime.now(UTC)


def answered(client: ollama.Client) -> bool:
    """A chat turn; False while the model is loading (503, Retry-After)."""
    try:
        client.chat(model="smol", messages=PROMPT, options=ONE_TOKEN)
    except ollama.ResponseError as exc:
        if exc.status_code == 503:
            return False
        raise
    return True


def test_request_keep_alive_replaces_the_manifest_one(
    start_server: Callable[..., Server], smollm2_gguf: Path
) -> None:
    server = start_server()
    server.write("smol.yaml", manifest(smollm2_gguf, "smol", keep_alive="10m"))
    server.wait_for("smol to be ready", lambda: server.ready("smol"), timeout=180)
    client = ollama.Client(host=server.url, timeout=120)

    with pytest.raises(ollama.ResponseError, match="keep_alive") as refused:
        client.chat(model="smol", messages=PROMPT, options=ONE_TOKEN, keep_alive="soon")
    assert refused.value.status_code == 400

    client.chat(model="smol", messages=PROMPT, options=ONE_TOKEN)
    left = expires_in(client, "smol")
    assert left is not None and left <= timedelta(minutes=10, seconds=5)  # the manifest's

    client.chat(model="smol", messages=PROMPT, options=ONE_TOKEN, keep_alive="1h")
    left = expires_in(client, "smol")
    assert left is not None and timedelta(minutes=59) < left <= timedelta(hours=1, seconds=5)

    # Editing the manifest's keep_alive (an in-place change) drops the request's.
    server.write("smol.yaml", manifest(smollm2_gguf, "smol", keep_alive="20m"))
    server.wait_for("the edit", lambda: server.status()["smol"]["keep_alive"] == "20m")
    left = expires_in(client, "smol")
    assert left is not None and timedelta(minutes=15) < left <= timedelta(minutes=20, seconds=5)
    server.write("smol.yaml", manifest(smollm2_gguf, "smol", keep_alive="10m"))
    server.wait_for("the edit back", lambda: server.status()["smol"]["keep_alive"] == "10m")

    # keep_alive 0: answered, then unloaded as soon as idle (not after the manifest's 10m).
    answer = client.generate(model="smol", prompt="Hi", options=ONE_TOKEN, keep_alive=0)
    assert answer.done
    server.wait_for("the unload", lambda: server.status()["smol"]["phase"] == "standby", timeout=30)
    assert expires_in(client, "smol") is None  # /api/ps no longer lists it

    # The next request loads it again; the new instance has the manifest's keep_alive.
    server.wait_for("smol to load again", lambda: answered(client), timeout=180)
    left = expires_in(client, "smol")
    assert left is not None and timedelta(minutes=9) < left <= timedelta(minutes=10, seconds=5)

    # `ollama stop`: an empty generate with keep_alive 0 unloads it.
    stopped = client.generate(model="smol", prompt="", keep_alive=0)
    assert stopped.done_reason == "unload"
    server.wait_for("the stop", lambda: server.status()["smol"]["phase"] == "standby", timeout=30)

    # A keep_alive sent while the model is in standby is kept for the instance it loads.
    with pytest.raises(ollama.ResponseError) as loading:
        client.chat(model="smol", messages=PROMPT, options=ONE_TOKEN, keep_alive="1h")
    assert loading.value.status_code == 503  # loading now; the client retries
    server.wait_for("smol to load again", lambda: answered(client), timeout=180)
    left = expires_in(client, "smol")
    assert left is not None and timedelta(minutes=59) < left <= timedelta(hours=1, seconds=5)
