"""Model management over HTTP at Docker Model Runner's paths (/models/create, tag, push,
delete, /engines/...) on a real `mr serve` with SmolLM2 pulled from a real OCI registry."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from modelrunner.store import Store
from tests.fixtures.registry import PASSWORD, USER, Registry, TokenService, docker_config
from tests.fixtures.served_store import AUTH, Setup, ndjson_lines

pytestmark = [pytest.mark.engine, pytest.mark.registry]


def test_create_pulls_with_progress_lines_then_finds_it_stored(setup: Setup) -> None:
    lines = ndjson_lines(setup.post("/models/create", json={"from": setup.ref}))
    progress = [line for line in lines if line["type"] == "progress"]
    assert progress and all(line["mode"] == "pull" for line in lines)
    gguf = max(progress, key=lambda line: line["layer"]["size"])
    assert gguf["layer"]["size"] > 90_000_000
    assert lines[-1]["type"] == "success"
    assert any(
        line["layer"]["current"] == line["layer"]["size"] == gguf["layer"]["size"]
        for line in progress
    )
    again = ndjson_lines(setup.post("/models/create", json={"from": setup.ref}))
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
    lines = ndjson_lines(setup.post("/models/create", json={"from": ref, "bearer-token": token}))
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
    lines = ndjson_lines(served.post(f"/models/{repo}:v2/push"))
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


def test_force_delete_of_a_served_model(served: Setup) -> None:
    """Last: it takes the served model's files away."""
    removed = served.delete(f"/models/{served.ref}", params={"force": "true"})
    assert removed.status_code == 200, removed.text
    assert removed.json()[-1]["Deleted"].startswith("sha256:")
    assert served.get(f"/models/{served.ref}").status_code == 404
