"""Model management over HTTP, the request inspector and the OpenAI Responses API, on one
real `mr serve` (API keys on, 3 pairs kept per model) with SmolLM2 pulled over HTTP from a
real OCI registry, driven with the openai client and plain HTTP."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from modelrunner.store import Store
from tests.fixtures.registry import PASSWORD, USER, Registry, TokenService, docker_config
from tests.fixtures.serve import Server, manifest

pytestmark = [pytest.mark.engine, pytest.mark.registry]
KEY = "mgmt-secret-key-123"
AUTH = {"authorization": f"Bearer {KEY}"}
KEPT = 3  # MR_RECORD_REQUESTS


@dataclass
class Setup:
    server: Server
    ref: str  # SmolLM2 in the loopback registry
    registry: Registry

    def get(self, path: str, **kw: Any) -> httpx.Response:
        headers = {**AUTH, **kw.pop("headers", {})}
        return httpx.get(self.server.url + path, headers=headers, timeout=60, **kw)

    def post(self, path: str, **kw: Any) -> httpx.Response:
        headers = {**AUTH, **kw.pop("headers", {})}
        return httpx.post(self.server.url + path, headers=headers, timeout=300, **kw)

    def delete(self, path: str, **kw: Any) -> httpx.Response:
        headers = {**AUTH, **kw.pop("headers", {})}
        return httpx.delete(self.server.url + path, headers=headers, timeout=60, **kw)

    def client(self) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{self.server.url}/v1", api_key=KEY, max_retries=8)


def _launch(folder: Path, **env_overrides: str) -> Server:
    """`mr serve` on its own folder (the same as tests/fixtures/serve.py's, module-scoped)."""
    from tests.fixtures.serve import _healthy, free_port

    models = folder / "models.d"
    models.mkdir()
    port = free_port()
    env = {
        **os.environ,
        "MR_PORT": str(port),
        "MR_STORE_DIR": str(folder / "store"),
        "MR_LOG_DIR": str(folder / "logs"),
        "MR_DEBOUNCE": "0.1",
        **env_overrides,
    }
    log = folder / "serve.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "modelrunner", "serve", "--models-dir", str(models)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = Server(f"http://127.0.0.1:{port}", models, folder / "store", env, process, log)
    server.wait_for("the server to answer /healthz", lambda: _healthy(server.url), 30)
    return server


@pytest.fixture(scope="module")
def setup(
    tmp_path_factory: pytest.TempPathFactory, smollm2_gguf: Path, registry: Registry
) -> Iterator[Setup]:
    folder = tmp_path_factory.mktemp("mgmt")
    source = Store(folder / "source-store")  # publishes SmolLM2 as `mr package --push` does
    ref = f"{registry.address}/ai/smollm2:q4"
    source.package(ref, gguf=smollm2_gguf, context_size=1024)
    source.push(ref)
    server = _launch(folder, MR_API_KEYS=KEY, MR_RECORD_REQUESTS=str(KEPT))
    yield Setup(server, ref, registry)
    server.process.terminate()
    try:
        server.process.wait(60)
    except subprocess.TimeoutExpired:
        server.process.kill()


def _lines(response: httpx.Response) -> list[dict[str, Any]]:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/x-ndjson")
    return [json.loads(line) for line in response.text.splitlines() if line.strip()]


@pytest.fixture(scope="module")
def served(setup: Setup) -> Setup:
    """SmolLM2 pulled over HTTP and served by a manifest as `smol`."""
    if setup.get(f"/models/{setup.ref}").status_code == 404:
        _lines(setup.post("/models/create", json={"from": setup.ref}))
    text = manifest(Path("unused"), "smol", model=setup.ref, pull_policy="never")
    setup.server.write("smol.yaml", text)
    setup.server.wait_for("smol to be ready", lambda: _ready(setup), timeout=180)
    return setup


def _ready(setup: Setup) -> bool:
    status = {m["name"]: m for m in setup.get("/status").json()}
    return status.get("smol", {}).get("phase") == "ready"


# -- model management --------------------------------------------------------------------
def test_create_pulls_with_progress_lines_then_finds_it_stored(setup: Setup) -> None:
    lines = _lines(setup.post("/models/create", json={"from": setup.ref}))
    progress = [line for line in lines if line["type"] == "progress"]
    assert progress and all(line["mode"] == "pull" for line in lines)
    gguf = max(progress, key=lambda line: line["layer"]["size"])
    assert gguf["layer"]["size"] > 90_000_000
    assert lines[-1]["type"] == "success"
    assert any(
        line["layer"]["current"] == line["layer"]["size"] == gguf["layer"]["size"]
        for line in progress
    )
    again = _lines(setup.post("/models/create", json={"from": setup.ref}))
    assert [line["type"] for line in again] == ["success"]  # nothing downloaded twice
    model = setup.get(f"/models/{setup.ref}").json()
    assert model["id"].startswith("sha256:") and model["config"]["format"] == "gguf"
    assert model["tags"] == [setup.ref] and model["created"] > 1_700_000_000


def test_create_uses_the_bearer_token_and_never_logs_it(
    setup: Setup,
    token_registry: tuple[Registry, TokenService],
    smollm2_gguf: Path,
    tmp_path: Path,
) -> None:
    """Docker Model Runner's `bearer-token`: the registry token for this pull (the server
    has no credentials of its own for this registry)."""
    registry, tokens = token_registry
    ref = f"{registry.address}/team/smol-token:q4"
    publisher = Store(
        tmp_path / "pub", environ=docker_config(tmp_path / "docker", registry.address)
    )
    publisher.package(ref, gguf=smollm2_gguf, context_size=1024)
    publisher.push(ref)
    refused = setup.post("/models/create", json={"from": ref})
    assert refused.status_code == 403, refused.text
    token = httpx.get(
        tokens.realm,
        params={"service": tokens.service, "scope": "repository:team/smol-token:pull"},
        auth=(USER, PASSWORD),
    ).json()["token"]
    lines = _lines(setup.post("/models/create", json={"from": ref, "bearer-token": token}))
    assert lines[-1]["type"] == "success", lines[-1]
    assert setup.get(f"/models/{ref}").status_code == 200
    wrong = setup.post("/models/create", json={"from": ref, "bearer-token": token[:-8] + "A" * 8})
    assert wrong.status_code == 403, wrong.text  # each pull asks the registry for the tag
    secret = token.rsplit(".", 1)[1]  # the signature: in no log, record or answer
    assert secret not in setup.server.log.read_text()
    assert secret not in setup.get("/engines/requests").text
    for folder in (setup.server.store_dir, setup.server.log.parent / "logs"):
        for path in folder.rglob("*"):
            if path.is_file() and path.stat().st_size < 10_000_000:
                assert secret.encode() not in path.read_bytes(), path


@pytest.mark.parametrize(
    ("body", "status", "says"),
    [
        ({"from": "127.0.0.1:1/../x"}, 400, "invalid reference"),
        ({}, 400, "from"),
        ({"from": "ai/x", "extra": 1}, 400, "extra"),
        ("not json", 400, None),
    ],
)
def test_create_refuses_bad_input(setup: Setup, body: Any, status: int, says: str | None) -> None:
    content = body if isinstance(body, str) else json.dumps(body)
    response = setup.post(
        "/models/create", content=content, headers={**AUTH, "content-type": "application/json"}
    )
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert says is None or says in error["message"] + str(error.get("param"))


def test_create_of_a_model_the_registry_lacks_is_404_and_keys_are_needed(setup: Setup) -> None:
    missing = f"{setup.registry.address}/ai/nothing-here:v1"
    response = setup.post("/models/create", json={"from": missing})
    assert response.status_code == 404 and response.json()["error"]["code"] == "model_not_found"
    anonymous = httpx.post(setup.server.url + "/models/create", json={"from": setup.ref})
    assert anonymous.status_code == 401
    for path in ("/engines/ps", "/engines/df", "/engines/requests", f"/models/{setup.ref}"):
        assert httpx.get(setup.server.url + path).status_code == 401, path


def test_tag_push_and_delete_over_http(served: Setup) -> None:
    repo = f"{served.registry.address}/team/smol"
    tagged = served.post(f"/models/{served.ref}/tag", params={"repo": repo, "tag": "v2"})
    assert tagged.status_code == 201 and tagged.json()["target"] == f"{repo}:v2"
    lines = _lines(served.post(f"/models/{repo}:v2/push"))
    assert lines[-1]["type"] == "success" and {line["mode"] for line in lines} == {"push"}
    pushed = httpx.get(
        f"http://{served.registry.address}/v2/team/smol/manifests/v2",
        headers={"accept": "application/vnd.oci.image.manifest.v1+json"},
    )
    assert pushed.status_code == 200
    assert served.get(f"/models/{repo}:v2").json()["id"] == served.get("/models/smol").json()["id"]
    untagged = served.delete(f"/models/{repo}:v2")
    assert untagged.status_code == 200 and untagged.json() == [{"Untagged": f"{repo}:v2"}]
    refused = served.delete(f"/models/{served.ref}")
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "model_in_use"
    assert served.get(f"/models/{served.ref}").status_code == 200  # still there
    missing = served.delete("/models/ai/never-pulled")
    assert missing.status_code == 404


@pytest.mark.parametrize(
    ("method", "path", "params"),
    [
        ("POST", "/models/ai/x/tag", {"repo": "ai/y"}),  # no tag
        ("POST", "/models/ai/x/rename", {}),
        ("POST", "/models/UPPER CASE/tag", {"repo": "a", "tag": "b"}),
        ("GET", "/models/a..b", {}),
        ("DELETE", "/models/ai/x", {"force": "maybe"}),
        ("POST", "/engines/unload", {}),  # no body
    ],
)
def test_management_bad_input_is_a_4xx_in_openai_shape(
    setup: Setup, method: str, path: str, params: dict[str, str]
) -> None:
    response = httpx.request(method, setup.server.url + path, params=params, headers=AUTH)
    assert 400 <= response.status_code < 500, response.text
    assert set(response.json()["error"]) >= {"message", "type"}


def test_engines_ps_df_status_and_unload(served: Setup) -> None:
    ps = served.get("/engines/ps").json()
    assert [(m["model_name"], m["backend_name"], m["mode"]) for m in ps] == [
        ("smol", "llama.cpp", "completion")
    ]
    df = served.get("/engines/df").json()
    assert df["models_disk_usage"] > 90_000_000 and df["free_bytes"] > 0
    assert served.get("/engines/status").json()["llama.cpp"].startswith("installed ")
    unloaded = served.post("/engines/unload", json={"models": ["smol"]})
    assert unloaded.json() == {"unloaded_runners": 1}
    served.server.wait_for("smol to unload", lambda: not served.get("/engines/ps").json(), 60)
    assert {m["name"]: m["phase"] for m in served.get("/status").json()}["smol"] == "standby"
    # The next request loads it again (503 + Retry-After meanwhile; the client retries).
    answer = served.client().chat.completions.create(
        model="smol", messages=[{"role": "user", "content": "Hi"}], max_tokens=4
    )
    assert answer.choices[0].message.content is not None
    assert served.post("/engines/unload", json={"models": ["nope"]}).json() == {
        "unloaded_runners": 0
    }


# -- the OpenAI Responses API ------------------------------------------------------------
def test_responses_create_get_items_delete(served: Setup) -> None:
    client = served.client()
    created = client.responses.create(
        model="smol",
        input="Say hello.",
        instructions="Answer in one short sentence.",
        max_output_tokens=12,
    )
    assert created.status in ("completed", "incomplete") and created.output_text
    assert created.usage is not None and created.usage.output_tokens <= 12
    again = client.responses.retrieve(created.id)
    assert again.output_text == created.output_text and again.instructions == created.instructions
    items = client.responses.input_items.list(created.id)
    assert [item.type for item in items.data] == ["message"]
    client.responses.delete(created.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(created.id)


def test_responses_stream_events(served: Setup) -> None:
    client = served.client()
    kinds, deltas, final = [], [], None
    for event in client.responses.create(
        model="smol", input="Count to five.", stream=True, max_output_tokens=20
    ):
        kinds.append(event.type)
        if event.type == "response.output_text.delta":
            deltas.append(event.delta)
        if event.type in ("response.completed", "response.incomplete"):
            final = event.response
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert "response.output_text.done" in kinds and kinds[-1] in (
        "response.completed",
        "response.incomplete",
    )
    assert final is not None and deltas and final.output_text == "".join(deltas)
    # The same through the SDK's stream helper, which checks the event order itself.
    with client.responses.stream(model="smol", input="Hi", max_output_tokens=8) as stream:
        helped = list(stream)
    text = "".join(e.delta for e in helped if e.type == "response.output_text.delta")
    assert helped[-1].type in ("response.completed", "response.incomplete")
    assert helped[-1].response.output_text == text
    # A stored streamed response can be continued from.
    assert client.responses.retrieve(final.id).output_text == final.output_text


def test_previous_response_id_sends_the_earlier_turns(served: Setup) -> None:
    client = served.client()
    first = client.responses.create(
        model="smol", input="My name is Ada Lovelace.", max_output_tokens=16
    )
    follow = client.responses.create(
        model="smol", input="What is my name?", previous_response_id=first.id, max_output_tokens=8
    )
    alone = client.responses.create(model="smol", input="What is my name?", max_output_tokens=8)
    assert follow.previous_response_id == first.id
    assert follow.usage is not None and alone.usage is not None and first.usage is not None
    # The engine saw the first turn (its input and answer) before the question.
    assert follow.usage.input_tokens >= alone.usage.input_tokens + first.usage.output_tokens
    assert [i.type for i in client.responses.input_items.list(follow.id).data] == ["message"]
    with pytest.raises(openai.BadRequestError, match="not found"):
        client.responses.create(model="smol", input="x", previous_response_id="resp_nope")


def test_responses_json_object(served: Setup) -> None:
    answer = served.client().responses.create(
        model="smol",
        input="Describe Paris as a JSON object.",
        max_output_tokens=48,
        text={"format": {"type": "json_object"}},
    )
    if answer.status == "completed":
        assert isinstance(json.loads(answer.output_text), dict)
    else:  # cut by the token limit: still JSON so far
        assert answer.output_text.lstrip().startswith("{")


def test_responses_json_schema(served: Setup) -> None:
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
        "additionalProperties": False,
    }
    answer = served.client().responses.create(
        model="smol",
        input="Name the capital of France as JSON.",
        max_output_tokens=40,
        text={"format": {"type": "json_schema", "name": "capital", "schema": schema}},
    )
    assert isinstance(json.loads(answer.output_text)["city"], str)


def test_responses_forced_function_call_round_trip(served: Setup) -> None:
    client = served.client()
    tool = {
        "type": "function",
        "name": "get_weather",
        "description": "Weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    }
    called = client.responses.create(
        model="smol",
        input="What is the weather in Paris?",
        tools=[tool],  # type: ignore[list-item]
        tool_choice={"type": "function", "name": "get_weather"},
        max_output_tokens=40,
    )
    calls = [item for item in called.output if item.type == "function_call"]
    assert calls and calls[0].name == "get_weather"
    assert "city" in json.loads(calls[0].arguments)
    result = client.responses.create(
        model="smol",
        previous_response_id=called.id,
        max_output_tokens=16,
        input=[{"type": "function_call_output", "call_id": calls[0].call_id, "output": "sunny"}],
    )
    assert result.status in ("completed", "incomplete")


@pytest.mark.parametrize(
    ("path", "body", "status"),
    [
        ("/v1/responses", {"model": "smol"}, 400),
        ("/v1/responses", {"model": "smol", "input": [{"role": "robot", "content": "x"}]}, 400),
        ("/v1/responses", {"model": "smol", "input": "x", "tools": [{"type": "web_search"}]}, 400),
        ("/v1/responses", {"model": "smol", "input": "x", "max_output_tokens": 0}, 400),
        ("/v1/responses", {"model": "smol", "input": "x", "background": True}, 400),
        ("/v1/responses", {"model": "nope", "input": "x"}, 404),
        ("/engines/vllm/v1/responses", {"model": "smol", "input": "x"}, 404),
        ("/engines/nonsense/v1/responses", {"model": "smol", "input": "x"}, 404),
        ("/responses", {"model": "smol", "input": 5}, 400),
    ],
)
def test_responses_bad_input(served: Setup, path: str, body: Any, status: int) -> None:
    response = served.post(path, json=body)
    assert response.status_code == status, response.text
    assert set(response.json()["error"]) >= {"message", "type", "param", "code"}
    for method, where in (
        ("GET", "/v1/responses/resp_nope"),
        ("GET", "/engines/v1/responses/resp_nope/input_items"),
        ("DELETE", "/responses/resp_nope"),
    ):
        missing = httpx.request(method, served.server.url + where, headers=AUTH)
        assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"


# -- the request inspector ---------------------------------------------------------------
def _records(setup: Setup, model: str = "smol") -> list[dict[str, Any]]:
    groups = setup.get("/engines/requests", params={"model": model}).json()
    return groups[0]["records"] if groups else []


def test_inspector_shows_a_streamed_chat_reassembled_and_never_the_key(served: Setup) -> None:
    client = served.client()
    pieces = [
        chunk.choices[0].delta.content or ""
        for chunk in client.chat.completions.create(
            model="smol",
            stream=True,
            max_tokens=16,
            messages=[{"role": "user", "content": "Tell me about the sea."}],
        )
        if chunk.choices
    ]
    last = _records(served)[-1]
    assert (last["method"], last["url"], last["status_code"]) == (
        "POST",
        "/v1/chat/completions",
        200,
    )
    assert last["stream"] and last["complete"] and last["duration_ms"] > 0
    assert last["user_agent"].startswith("OpenAI/Python")
    assert json.loads(last["request"])["messages"][0]["content"] == "Tell me about the sea."
    answer = json.loads(last["response"])
    assert answer["object"] == "chat.completion"
    assert answer["choices"][0]["message"]["content"] == "".join(pieces)
    everything = served.get("/engines/requests").text
    assert KEY not in everything and "authorization" not in everything.lower()


def test_inspector_keeps_only_the_last_n(served: Setup) -> None:
    client = served.client()
    for n in range(KEPT + 2):
        client.completions.create(model="smol", prompt=f"Number {n}", max_tokens=2)
    records = _records(served)
    assert len(records) == KEPT
    assert [json.loads(r["request"])["prompt"] for r in records] == [
        f"Number {n}" for n in range(2, KEPT + 2)
    ]
    assert served.get("/engines/requests", params={"model": "nope"}).json() == []


def test_inspector_follow_mode_and_the_cli(served: Setup) -> None:
    received: list[Any] = []
    connected = threading.Event()

    def follow() -> None:
        params = {"stream": "true", "model": "smol"}
        with httpx.stream(
            "GET", served.server.url + "/engines/requests", headers=AUTH, params=params, timeout=60
        ) as stream:
            event = None
            for line in stream.iter_lines():
                if line.startswith("event:"):
                    event = line[6:].strip()
                    if event == "connected":
                        connected.set()
                elif line.startswith("data:") and event == "new_request":
                    received.extend(json.loads(line[5:]))
                    return

    reader = threading.Thread(target=follow, daemon=True)
    reader.start()
    assert connected.wait(10)
    served.client().responses.create(model="smol", input="Hi", max_output_tokens=4)
    reader.join(60)
    [group] = received
    assert group["model"] == "smol" and group["records"][0]["url"] == "/v1/responses"
    assert json.loads(group["records"][0]["response"])["object"] == "response"
    env = {**os.environ, "MR_PORT": served.server.url.rsplit(":", 1)[1], "MR_API_KEY": KEY}
    shown = subprocess.run(
        [sys.executable, "-m", "modelrunner", "requests", "smol"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert shown.returncode == 0, shown.stderr
    assert "POST /v1/responses  200" in shown.stdout and KEY not in shown.stdout
    as_json = subprocess.run(
        [sys.executable, "-m", "modelrunner", "requests", "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert json.loads(as_json.stdout)[0]["model"] == "smol"


def test_mr_requests_follow(served: Setup) -> None:
    env = {**os.environ, "MR_PORT": served.server.url.rsplit(":", 1)[1], "MR_API_KEY": KEY}
    follower = subprocess.Popen(
        [sys.executable, "-m", "modelrunner", "requests", "smol", "-f", "--json"],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    output = follower.stdout
    assert output is not None
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.append(output.readline()), daemon=True)
    reader.start()
    try:
        for _ in range(30):  # until the follower is connected and sees one
            served.client().completions.create(model="smol", prompt="Follow me", max_tokens=1)
            reader.join(1)
            if lines:
                break
        pair = json.loads(lines[0])
        assert pair["model"] == "smol" and pair["url"] == "/v1/completions"
        assert json.loads(pair["request"])["prompt"] == "Follow me"
    finally:
        follower.terminate()
        follower.wait(10)


def test_force_delete_of_a_served_model(served: Setup) -> None:
    """Last: it takes the served model's files away."""
    removed = served.delete(f"/models/{served.ref}", params={"force": "true"})
    assert removed.status_code == 200, removed.text
    assert removed.json()[-1]["Deleted"].startswith("sha256:")
    assert served.get(f"/models/{served.ref}").status_code == 404
