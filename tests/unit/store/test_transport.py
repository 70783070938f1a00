"""Plain HTTP or HTTPS to a registry, decided from its name alone: plain HTTP only for a
loopback registry or one named in MR_INSECURE_REGISTRIES, so credentials never cross a
network unencrypted unless the operator said so."""

from __future__ import annotations

from pathlib import Path

import pytest

from modelrunner.reference import parse
from modelrunner.store import Store


@pytest.mark.parametrize(
    ("registry", "listed", "plain"),
    [
        ("127.0.0.1:5000", (), True),
        ("127.8.9.1:5000", (), True),
        ("localhost:5000", (), True),
        ("registry.localhost", (), True),
        ("[::1]:5000", (), True),
        ("192.0.2.7:5000", (), False),
        ("10.0.0.5", (), False),
        ("[fd00::2]:5000", (), False),
        ("registry.example.test", (), False),
        ("localhost.example.test:5000", (), False),
        ("127.0.0.1.nip.io:5000", (), False),
        ("docker.io", (), False),
        ("192.0.2.7:5000", ("192.0.2.7:5000",), True),
        ("192.0.2.7:5000", ("192.0.2.7",), True),  # a host listed: every port of it
        ("192.0.2.7:5001", ("192.0.2.7:5000",), False),  # a port listed: that one only
        ("192.0.2.7:5000", ("192.0.2.8",), False),
        ("registry.example.test:5000", ("registry.example.test",), True),
        ("evil.registry.example.test", ("registry.example.test",), False),
    ],
)
def test_plain_http_only_on_loopback_or_when_listed(
    tmp_path: Path, registry: str, listed: tuple[str, ...], plain: bool
) -> None:
    store = Store(tmp_path / "store", listed, environ={"DOCKER_CONFIG": str(tmp_path)})
    assert store.is_insecure(registry) is plain
    client = store._client(parse(f"{registry}/team/model:1"))
    assert client.base.startswith("http://" if plain else "https://"), client.base
