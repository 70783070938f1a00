"""Fuzzing: the proxied routes of a running app with malformed bodies (random bytes, deep
nesting and text in random encodings, sent with a length (the short way) and chunked (the
Litestar fallback)); then every route of a real `mr serve` serving SmolLM2, with bodies
drawn from its OpenAPI document's schemas and mutated, and with raw HTTP mutations over a
socket. Never a 5xx (but the documented 503s), never a traceback in the server's log; every
refusal is an error body with a message. Fixed seed, bounded time."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st

from modelrunner.registry import Registry
from modelrunner.settings import Settings
from tests.fixtures.fuzz import (
    RawRequest,
    Schemas,
    encode,
    exchange,
    mutated,
    raw_requests,
    status_of,
)
from tests.fixtures.http import RunningApp, free_port, serve_in_thread
from tests.fixtures.serve import Server, launch, manifest, stop

PREFIXES = ("/v1", "/engines/v1", "/engines/llama.cpp/v1")
OPERATIONS = ("chat/completions", "completions", "embeddings", "images/generations")
ROUTES = [f"{prefix}/{op}" for prefix in PREFIXES for op in OPERATIONS]
ENCODINGS = ["utf-8", "utf-16", "utf-16-le", "utf-32", "latin-1", "cp1252", "shift_jis"]


@pytest.fixture(scope="module")
def app() -> Iterator[RunningApp]:
    # No model is served: a body that gets through validation is a 404, never an engine's.
    with serve_in_thread(Registry(), Settings(port=free_port())) as running:
        yield running


@pytest.fixture(scope="module")
def client(app: RunningApp) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=app.base_url, timeout=30) as c:
        yield c


def _nested(depth: int, opener: str) -> bytes:
    closer = {"[": "]", '{"a":': "}"}[opener]
    return b'{"model": "m", "messages": ' + (opener * depth).encode() + b"1" + (
        closer * depth).encode() + b"}"  # fmt: skip


def _encoded(text: str, encoding: str) -> bytes:
    document = '{"model": "m", "prompt": "%s", "messages": [{"role": "user", "content": "%s"}]}'
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    return (document % (escaped, escaped)).encode(encoding, errors="replace")


def _spliced(junk: bytes, at: int) -> bytes:
    """Valid UTF-8 JSON with random (often invalid) bytes put inside a string."""
    valid = _encoded("x" * 40, "utf-8")
    return valid[:at] + junk + valid[at:]


bodies = st.one_of(
    st.binary(max_size=2048),
    st.builds(_nested, st.integers(1, 200_000), st.sampled_from(["[", '{"a":'])),
    st.builds(_encoded, st.text(max_size=200), st.sampled_from(ENCODINGS)),
    st.builds(_spliced, st.binary(min_size=1, max_size=8), st.integers(0, 120)),
)


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow,
          HealthCheck.function_scoped_fixture, HealthCheck.data_too_large])  # fmt: skip
@given(
    route=st.sampled_from(ROUTES),
    body=bodies,
    charset=st.sampled_from(["", "; charset=utf-8", "; charset=utf-16", "; charset=latin-1"]),
    chunked=st.booleans(),
)
def test_malformed_bodies_never_get_a_5xx(
    client: httpx.Client, route: str, body: bytes, charset: str, chunked: bool
) -> None:
    content: bytes | Iterator[bytes] = iter([body]) if chunked else body
    answer = client.post(route, content=content,
                         headers={"content-type": "application/json" + charset})  # fmt: skip
    assert answer.status_code < 500, answer.text
    assert answer.status_code in (400, 404, 413), answer.text
    error = answer.json()["error"]
    assert error["message"]
    if answer.status_code == 400 and "JSON" in error["message"]:
        assert error["param"] is None


@pytest.mark.parametrize("chunked", [False, True])
@pytest.mark.parametrize(
    ("body", "reason"),
    [(_nested(100_000, "["), "JSON nested too deeply"),
     (_nested(100_000, '{"a":'), "JSON nested too deeply"),
     (b'{"model": "m", "messages": [{"role": "user", "content": "caf\xe9 \xc3("}]}', "UTF-8")],
)  # fmt: skip
def test_the_issues_bodies_get_a_400(
    client: httpx.Client, body: bytes, reason: str, chunked: bool
) -> None:
    content: bytes | Iterator[bytes] = iter([body]) if chunked else body
    answer = client.post("/v1/chat/completions", content=content,
                         headers={"content-type": "application/json"})  # fmt: skip
    assert answer.status_code == 400
    error = answer.json()["error"]
    assert error["param"] is None
    assert reason in error["message"]


# -- every route of a real `mr serve`, with our own fuzzer (tests/fixtures/fuzz.py) -------
KEY = "fuzz-key-0123456789"
# Fixed seed and time per test, so CI stays fast and repeatable; FUZZ_SEED and
# FUZZ_SECONDS (each test's time) run a longer, different hunt by hand.
SEED = int(os.environ.get("FUZZ_SEED", "20261204"))
JSON_BUDGET = float(os.environ.get("FUZZ_SECONDS", "25"))
RAW_BUDGET = float(os.environ.get("FUZZ_SECONDS", "15"))
EXAMPLES = 100_000  # the time ends a run, not the count


class Enough(Exception):
    """The time of a run is up (ends hypothesis' run: generation only, no shrinking)."""


CLOSED = free_port()  # a loopback port nothing listens on: the only registry pulls may name


@dataclass
class Target:
    server: Server
    document: dict[str, Any]
    routes: list[tuple[str, str, dict[str, Any]]]  # method, path template, operation
    port: int
    log_start: int


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory, smollm2_gguf: Path) -> Iterator[Target]:
    server = launch(tmp_path_factory.mktemp("fuzz"), MR_API_KEYS=KEY)
    try:
        # A small context bounds any generation a valid body asks for.
        text = manifest(smollm2_gguf, "smol", context_size=128,
                        **{"llama.cpp": {"threads": 1, "embeddings": True}})  # fmt: skip
        server.write("smol.yaml", text)
        server.wait_for("smol to be ready", lambda: server.ready("smol"), timeout=180)
        auth = {"authorization": f"Bearer {KEY}"}
        document = httpx.get(server.url + "/schema/openapi.json", headers=auth, timeout=30).json()
        routes = [
            (method.upper(), path, op)
            for path, item in document["paths"].items()
            for method, op in item.items()
        ]
        port = int(server.url.rsplit(":", 1)[1])
        yield Target(server, document, routes, port, server.log.stat().st_size)
    finally:
        stop(server)


def _served_names() -> st.SearchStrategy[str]:
    return st.sampled_from(["smol"] * 6 + ["smol:latest", "Smol", "", "ai/smollm2"])


def _hints() -> dict[str, st.SearchStrategy[Any]]:
    small = st.integers(-2, 8)
    return {
        "model": _served_names(),
        "max_tokens": small,
        "max_completion_tokens": small,
        "max_output_tokens": small,
        "num_predict": small,
        "n": st.integers(-1, 3),
        "stream": st.booleans(),
    }


def _loopback_only(path: str, body: Any) -> Any:
    """Pulls name only the closed loopback port: no request may leave this machine."""
    if not isinstance(body, dict):
        return body
    keys = {"/models/create": ("from",), "/api/pull": ("model", "name")}.get(path, ())
    for key in keys:
        if key in body:
            tail = str(body[key]).replace("/", "-").replace(":", "-")[:40] or "x"
            body = {**body, key: f"127.0.0.1:{CLOSED}/fuzz/{tail}"}
    return body


def _path_value(name: str) -> st.SearchStrategy[str]:
    values = {
        "engine": st.sampled_from(["llama.cpp", "vllm", "diffusers", "x"]),
        "model_id": _served_names(),
        "name": _served_names(),
        "name_and_action": st.sampled_from(["smol/tag", "smol/push", "x/y", "smol", "/tag"]),
    }.get(name)
    text = st.text(st.characters(codec="utf-8", exclude_characters="/?#"), min_size=1, max_size=20)
    return text if values is None else st.one_of(values, values, text)


@st.composite
def _json_case(draw: Any, target: Target, schemas: Schemas) -> tuple[str, str, dict[str, str], Any]:
    method, template, op = draw(st.sampled_from(target.routes))
    path = template
    query: dict[str, str] = {}
    for param in op.get("parameters", []):
        value = draw(_path_value(param["name"])) if param["in"] == "path" else None
        if param["in"] == "path":
            path = path.replace("{" + param["name"] + "}", quote(str(value), safe=""))
        elif param["in"] == "query" and draw(st.booleans()):
            query[param["name"]] = str(draw(schemas.values(param.get("schema") or {})))
    if template == "/engines/requests":
        query["stream"] = "false"  # follow mode never ends by itself
    schema = ((op.get("requestBody") or {}).get("content") or {}).get("application/json")
    body = None
    if schema is not None:
        body = draw(mutated(schemas.values(schema["schema"])))
    elif template == "/api/delete":
        body = draw(mutated(st.fixed_dictionaries({"model": _served_names()})))
    return method, path, query, _loopback_only(template, body)


def _documented_5xx(path: str, status: int, headers: httpx.Headers, text: str) -> bool:
    """5xx answers that are the documented ones: a model loading (503 + Retry-After), a
    readiness probe saying not ready, and a pull whose registry is unreachable (the closed
    loopback port)."""
    if status == 503 and ("retry-after" in headers or path == "/readyz"):
        return True
    pulls = path in ("/models/create", "/api/pull")
    return pulls and status in (502, 503) and "registry" in text


def _log_problems(target: Target) -> list[str]:
    texts = [target.server.log.read_bytes()[target.log_start :].decode(errors="replace")]
    logs = target.server.log.parent / "logs"
    texts += [p.read_text(errors="replace") for p in logs.rglob("*") if p.is_file()]
    return [
        line
        for text in texts
        for line in text.splitlines()
        if "Traceback" in line or "Exception in ASGI" in line
    ]


def test_fuzz_every_route_with_bodies_from_its_schema(target: Target) -> None:
    failures: list[str] = []
    started = time.monotonic()
    sent = [0]

    @seed(SEED)
    @settings(max_examples=EXAMPLES, deadline=None, database=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))  # fmt: skip
    @given(case=_json_case(target, Schemas(target.document, _hints())))
    def run(case: tuple[str, str, dict[str, str], Any]) -> None:
        if time.monotonic() - started > JSON_BUDGET:
            raise Enough
        method, path, query, body = case
        content = None if body is None else encode(body)
        headers = {"authorization": f"Bearer {KEY}", "content-type": "application/json"}
        t0 = time.monotonic()
        try:
            answer = client.request(method, path, params=query, content=content, headers=headers)
        except httpx.HTTPError as exc:
            failures.append(f"{method} {path} {content!r:.200}: {exc!r}")
            return
        sent[0] += 1
        print(
            "FUZZ",
            answer.status_code,
            method,
            path,
            round(time.monotonic() - t0, 3),
            answer.text[:150] if answer.status_code == 404 else "",
            content[:80] if content and answer.status_code == 404 else "",
        )
        where = f"{method} {path} {query} {content!r:.300}"
        if _documented_5xx(path, answer.status_code, answer.headers, answer.text):
            return
        if answer.status_code >= 500:
            failures.append(f"{where}: {answer.status_code} {answer.text[:300]}")
        elif answer.status_code >= 400 and method != "HEAD":
            try:
                error = answer.json()["error"]
            except (ValueError, KeyError, TypeError):
                shown = answer.text[:200]
                failures.append(f"{where}: {answer.status_code} not an error body: {shown}")
            else:
                if not error:
                    failures.append(f"{where}: {answer.status_code} an empty error")

    with httpx.Client(base_url=target.server.url, timeout=60) as client, suppress(Enough):
        run()
    assert sent[0] > 50, sent  # the budget let the fuzzer do its work
    assert not failures, "\n".join(failures[:10])
    assert not _log_problems(target), "\n".join(_log_problems(target)[:20])


def test_fuzz_raw_http_mutations(target: Target) -> None:
    schemas = Schemas(target.document, _hints())
    by_route = {(m, p): op for m, p, op in target.routes if "{" not in p}
    routes = sorted(r for r in by_route if r[1] not in ("/models/create", "/api/pull"))

    def bodies(method: str, path: str) -> st.SearchStrategy[Any]:
        schema = (by_route[(method, path)].get("requestBody") or {}).get("content") or {}
        found = schema.get("application/json")
        return mutated(schemas.values(found["schema"])) if found else st.just({"model": "smol"})

    failures: list[str] = []
    answered = [0]
    started = time.monotonic()

    @seed(SEED)
    @settings(max_examples=EXAMPLES, deadline=None, database=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))  # fmt: skip
    @given(request=raw_requests(routes, bodies, KEY))
    def run(request: RawRequest) -> None:
        if time.monotonic() - started > RAW_BUDGET:
            raise Enough
        answer = exchange(target.port, request, wait=1.0 if request.complete else 0.3)
        status = status_of(answer)
        print("RAW", status, request.what, request.data[:60])
        if status is not None:
            answered[0] += 1
        line = request.data.split(b"\r\n", 1)[0]
        probe = b" /readyz" in line and status == 503  # not ready, by design
        if (
            status is not None
            and status >= 500
            and b"retry-after" not in answer.lower()
            and not probe
        ):
            failures.append(f"{request.what}: {request.data[:300]!r} -> {answer[:300]!r}")

    with suppress(Enough):
        run()
    assert answered[0] > 50, answered
    assert not failures, "\n".join(failures[:10])
    assert httpx.get(target.server.url + "/healthz", timeout=10).status_code == 200
    assert not _log_problems(target), "\n".join(_log_problems(target)[:20])
