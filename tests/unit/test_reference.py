"""Reference parsing and normalisation, the way Docker Model Runner reads references."""

from __future__ import annotations

import pytest

from modelrunner.errors import InvalidReference
from modelrunner.reference import is_loopback_host, parse

HEX = "a" * 64


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("smollm2", "docker.io/ai/smollm2:latest"),
        ("ai/smollm2", "docker.io/ai/smollm2:latest"),
        ("ai/smollm2:360M-Q4_K_M", "docker.io/ai/smollm2:360M-Q4_K_M"),
        ("SmolLM2", "docker.io/ai/smollm2:latest"),
        ("myorg/model:v1", "docker.io/myorg/model:v1"),
        ("docker.io/ai/gemma3", "docker.io/ai/gemma3:latest"),
        ("index.docker.io/ai/gemma3", "docker.io/ai/gemma3:latest"),
        ("registry.example:5000/team/m:tag", "registry.example:5000/team/m:tag"),
        ("registry.example/m", "registry.example/m:latest"),
        ("Registry.Example/Team/M:Tag", "registry.example/team/m:Tag"),
        ("localhost/m", "localhost/m:latest"),
        ("localhost:5000/a/b/c:1", "localhost:5000/a/b/c:1"),
        ("127.0.0.1:5000/ai/x", "127.0.0.1:5000/ai/x:latest"),
        ("[::1]:5000/ai/x", "[::1]:5000/ai/x:latest"),
        (f"ai/x@sha256:{HEX}", f"docker.io/ai/x@sha256:{HEX}"),
        (f"ai/x:v1@sha256:{HEX}", f"docker.io/ai/x:v1@sha256:{HEX}"),
    ],
)
def test_normalisation(text: str, expected: str) -> None:
    assert str(parse(text)) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty"),
        (" ai/x", "spaces"),
        ("https://registry.example/m", "leave out the scheme"),
        ("ai/x@sha256:abc", "digest must be sha256"),
        ("ai/x@md5:" + HEX, "digest must be sha256"),
        ("ai/x:-bad", "bad tag"),
        ("ai/x:" + "t" * 129, "bad tag"),
        ("ai//x", "bad name component"),
        ("ai/x_-y", "bad name component"),
        ("registry.example:port/m", "bad registry"),
        ("a" * 256, "longer than"),
    ],
)
def test_invalid_references_say_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(InvalidReference, match=message):
        parse(text)


@pytest.mark.parametrize(
    ("registry", "loopback"),
    [
        ("localhost", True),
        ("localhost:5000", True),
        ("127.0.0.1:5000", True),
        ("127.1.2.3", True),
        ("[::1]:5000", True),
        ("registry.localhost:80", True),
        ("docker.io", False),
        ("10.0.0.1:5000", False),
        ("registry.example:5000", False),
    ],
)
def test_loopback_registries(registry: str, loopback: bool) -> None:
    assert is_loopback_host(registry) is loopback


def test_familiar_form_drops_docker_hub() -> None:
    assert parse("smollm2").familiar == "ai/smollm2:latest"
    assert parse("localhost:5000/m").familiar == "localhost:5000/m:latest"
