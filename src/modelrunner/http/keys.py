"""API keys: where they come from, when they are required, how a request shows one.

Keys come from ``Settings.api_keys`` (``MR_API_KEYS``, comma-separated) and the lines of
``Settings.api_keys_file``. Binding to anything but loopback without a key is refused.
Requests carry ``Authorization: Bearer KEY`` (what the OpenAI SDKs send) or ``x-api-key: KEY``
(what the Anthropic SDKs send); keys are compared
in constant time, each one, so timing tells nothing about which or how much matched.
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Iterable
from pathlib import Path
from typing import Final

from modelrunner.errors import UsageError
from modelrunner.settings import Settings

# Paths any caller may read: liveness and readiness probes.
PUBLIC_PATHS: Final = frozenset({"/healthz", "/readyz"})


def is_loopback(host: str) -> bool:
    """True for addresses only this machine can reach (127.0.0.0/8, ::1, localhost)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def parse_key_lines(text: str) -> tuple[str, ...]:
    """Keys from a file's text: one a line; blank lines and ``#`` comments are skipped."""
    keys = (line.strip() for line in text.splitlines())
    return tuple(key for key in keys if key and not key.startswith("#"))


def load_keys(settings: Settings) -> tuple[str, ...]:
    """All configured keys; a named key file that cannot be read or is empty is an error."""
    keys = tuple(key for key in settings.api_keys if key)
    path = settings.api_keys_file
    if path is not None:
        keys += _read_key_file(path)
    return keys


def _read_key_file(path: Path) -> tuple[str, ...]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"cannot read the API key file {path}: {exc.strerror or exc}") from None
    keys = parse_key_lines(text)
    if not keys:
        raise UsageError(f"the API key file {path} contains no keys (one key a line)")
    return keys


def check_settings(settings: Settings) -> tuple[str, ...]:
    """Refuse settings the server must not start with; return the API keys to enforce."""
    keys = load_keys(settings)
    for number, key in enumerate(keys, 1):
        if not key.isascii() or not key.isprintable():
            # HTTP header values are latin-1 on the wire: a UTF-8 key would match only
            # when a client mis-encodes it, so refuse it instead of comparing bytes oddly.
            raise UsageError(
                f"API key #{number} contains a non-ASCII or control character: keys must be "
                "printable ASCII (use e.g. `openssl rand -hex 32`)"
            )
    if not keys and not is_loopback(settings.host):
        raise UsageError(
            f"refusing to listen on {settings.host}:{settings.port} without API keys: "
            "any host that can reach it could use the models. Set MR_API_KEYS or "
            "MR_API_KEYS_FILE (one key a line), or bind to 127.0.0.1."
        )
    if not settings.allowed_hosts and not is_loopback(settings.host):
        raise UsageError(
            f"refusing to listen on {settings.host}:{settings.port} without MR_ALLOWED_HOSTS: "
            "only loopback names and IP addresses would be accepted in the Host header. "
            "List the names clients use (e.g. MR_ALLOWED_HOSTS=models.example.org,"
            ".svc.cluster.local), or '*' to accept any."
        )
    if settings.max_connections < 1:
        raise UsageError(f"invalid max_connections {settings.max_connections}: expected at least 1")
    if not 0 <= settings.port <= 65535:
        raise UsageError(f"invalid port {settings.port}: expected 0-65535")
    if settings.max_body_bytes < 1:
        raise UsageError(f"invalid max_body_bytes {settings.max_body_bytes}: expected at least 1")
    return keys


class KeyCheck:
    """Decides whether an ``Authorization`` header value carries one of the keys."""

    __slots__ = ("_keys",)

    def __init__(self, keys: Iterable[str]) -> None:
        self._keys = tuple(key.encode() for key in keys)

    @property
    def enabled(self) -> bool:
        return bool(self._keys)

    def accepts(self, authorization: str | None, x_api_key: str | None = None) -> bool:
        if not self._keys:
            return True
        if x_api_key and self._matches(x_api_key.strip()):
            return True
        if not authorization:
            return False
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer":
            return False
        return self._matches(token.strip())

    def _matches(self, token: str) -> bool:
        given = token.encode()
        found = False
        for key in self._keys:
            found |= hmac.compare_digest(given, key)
        return found
