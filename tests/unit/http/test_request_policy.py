"""The Host, Origin and Content-Type policy (pure deciding, table-tested)."""

from __future__ import annotations

import pytest

from modelrunner.http.request_policy import (
    RequestPolicy,
    host_allowed,
    is_json,
    origin_allowed,
    refusal,
)

DEFAULT = RequestPolicy.of((), (), keys_enabled=False)


@pytest.mark.parametrize(
    ("host", "extra", "allowed"),
    [("127.0.0.1:12434", (), True), ("localhost:12434", (), True), ("LOCALHOST", (), True),
     ("app.localhost", (), True), ("[::1]:80", (), True), ("10.1.2.3", (), True),
     ("localhost.", (), True),
     ("rebind.evil.example", (), False), ("rebind.evil.example:12434", (), False),
     ("localhost.evil.example", (), False), ("127.0.0.1.nip.io", (), False),
     ("models.example.org:443", ("models.example.org",), True),
     ("a.svc.cluster.local", (".svc.cluster.local",), True),
     ("svc.cluster.local", (".svc.cluster.local",), True),
     ("evilsvc.cluster.local", (".svc.cluster.local",), False),
     ("anything.example", ("*",), True)],
)  # fmt: skip
def test_host_allow_list(host: str, extra: tuple[str, ...], allowed: bool) -> None:
    policy = RequestPolicy.of(extra, (), keys_enabled=False)
    assert host_allowed(host, policy.allowed_hosts) is allowed


@pytest.mark.parametrize(
    ("origin", "host", "cors", "allowed"),
    [("http://127.0.0.1:12434", "127.0.0.1:12434", (), True),  # the server's own pages
     ("http://evil.example", "127.0.0.1:12434", (), False),
     ("null", "127.0.0.1:12434", (), False),
     ("http://127.0.0.1:9999", "127.0.0.1:12434", (), False),  # another local port
     ("https://app.example", "127.0.0.1:12434", ("https://app.example/",), True),
     ("https://APP.example", "127.0.0.1:12434", ("https://app.example",), True),
     ("https://other.example", "127.0.0.1:12434", ("*",), True)],
)  # fmt: skip
def test_origin(origin: str, host: str, cors: tuple[str, ...], allowed: bool) -> None:
    policy = RequestPolicy.of((), cors, keys_enabled=False)
    assert origin_allowed(origin, host, policy) is allowed


@pytest.mark.parametrize(
    ("content_type", "json"),
    [("application/json", True), ("Application/JSON; charset=utf-8", True),
     ("application/merged-patch+json", True), ("text/plain", False),
     ("application/x-www-form-urlencoded", False), ("multipart/form-data; boundary=x", False),
     ("", False), ("text/json", False)],
)  # fmt: skip
def test_is_json(content_type: str, json: bool) -> None:
    assert is_json(content_type) is json


CHAT = "/v1/chat/completions"
LOCAL = "127.0.0.1:12434"


@pytest.mark.parametrize(
    ("method", "path", "host", "origin", "ctype", "body", "keys", "status", "code"),
    [("GET", "/status", "rebind.evil.example", None, None, False, False, 403, "host_not_allowed"),
     ("GET", "/status", LOCAL, None, None, False, False, None, None),
     ("GET", "/status", None, None, None, False, False, None, None),  # HTTP/1.0: no Host
     ("POST", CHAT, LOCAL, None, "text/plain", True, False, 415, "unsupported_media_type"),
     ("POST", CHAT, LOCAL, None, None, True, False, 415, "unsupported_media_type"),
     ("POST", CHAT, LOCAL, None, "multipart/form-data", True, True, 415, "unsupported_media_type"),
     ("POST", CHAT, LOCAL, None, "application/json", True, False, None, None),
     ("POST", "/models/create", LOCAL, None, None, False, False, None, None),  # no body
     ("POST", CHAT, LOCAL, "https://evil.example", "application/json", True, False, 403,
      "origin_not_allowed"),
     ("POST", CHAT, LOCAL, "https://evil.example", "application/json", True, True, None, None),
     ("POST", "/api/chat", LOCAL, "https://evil.example", "application/json", True, False, 403,
      "origin_not_allowed"),  # a route added later is covered without opting in
     ("POST", "/v1/messages", "evil.example", None, "application/json", True, True, 403,
      "host_not_allowed"),  # keys do not lift the Host check
     ("GET", "/healthz", "evil.example", "https://evil.example", None, False, False, None, None),
     ("GET", "/readyz", "evil.example", None, None, False, False, None, None)],
)  # fmt: skip
def test_refusal(
    method: str,
    path: str,
    host: str | None,
    origin: str | None,
    ctype: str | None,
    body: bool,
    keys: bool,
    status: int | None,
    code: str | None,
) -> None:
    policy = RequestPolicy.of((), (), keys_enabled=keys)
    found = refusal(method, path, host, origin, ctype, body, policy)
    if status is None:
        assert found is None
    else:
        assert found is not None
        assert (found.status, found.body.error.code) == (status, code)
        assert found.body.error.message
