"""Registry credentials: the Docker config file (``$DOCKER_CONFIG/config.json`` or
``~/.docker/config.json``: ``auths``, ``credHelpers``, ``credsStore``), then the
``MR_REGISTRY_USER`` / ``MR_REGISTRY_PASSWORD`` environment variables."""

from __future__ import annotations

import base64
import json
import os
import subprocess
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from modelrunner.errors import StoreError

Credentials = tuple[str, str]
_HUB_KEYS = ("https://index.docker.io/v1/", "index.docker.io", "registry-1.docker.io")


def config_path(environ: Mapping[str, str]) -> Path:
    folder = environ.get("DOCKER_CONFIG")
    return (Path(folder) if folder else Path.home() / ".docker") / "config.json"


def _keys(registry: str) -> Iterator[str]:
    names = [registry]
    if registry == "docker.io":
        names += list(_HUB_KEYS)
    if registry.startswith("localhost"):
        names.append(registry.replace("localhost", "127.0.0.1", 1))
    elif registry.startswith("127.0.0.1"):
        names.append(registry.replace("127.0.0.1", "localhost", 1))
    for name in names:
        yield name
        yield f"https://{name}"
        yield f"http://{name}"


def from_auths(config: Mapping[str, Any], registry: str) -> Credentials | None:
    """Look a registry up in a Docker config's ``auths`` (pure)."""
    auths = config.get("auths") or {}
    for key in _keys(registry):
        entry = auths.get(key)
        if not isinstance(entry, dict):
            continue
        if entry.get("username") and entry.get("password"):
            return str(entry["username"]), str(entry["password"])
        if entry.get("auth"):
            try:
                user, _, password = base64.b64decode(entry["auth"]).decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                raise StoreError(f"Docker config: bad 'auth' value for {key}") from None
            return user, password
    return None


def _helper(name: str, registry: str) -> Credentials | None:
    for key in _keys(registry):
        try:
            proc = subprocess.run(
                [f"docker-credential-{name}", "get"],
                input=key.encode(),
                capture_output=True,
                timeout=30,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired):
            return None
        if proc.returncode == 0:
            try:
                data = json.loads(proc.stdout)
                return str(data["Username"]), str(data["Secret"])
            except (ValueError, KeyError):
                return None
    return None


def lookup(registry: str, environ: Mapping[str, str] | None = None) -> Credentials | None:
    environ = os.environ if environ is None else environ
    path = config_path(environ)
    config: dict[str, Any] = {}
    if path.is_file():
        try:
            config = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise StoreError(f"{path}: unreadable Docker config ({exc})") from None
    found = from_auths(config, registry)
    helper = (config.get("credHelpers") or {}).get(registry) or config.get("credsStore")
    if found is None and helper:
        found = _helper(str(helper), registry)
    if found is None and environ.get("MR_REGISTRY_USER"):
        found = environ["MR_REGISTRY_USER"], environ.get("MR_REGISTRY_PASSWORD", "")
    return found
