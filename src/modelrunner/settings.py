"""Server settings: a frozen Struct built from defaults, ``MR_*`` environment variables
and command-line flags (in that order of precedence, flags last)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import msgspec


def default_data_dir() -> Path:
    """A per-user data folder (XDG_DATA_HOME, else ~/.local/share)."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "modelrunner"


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    models_dir: Path = Path("models.d")
    store_dir: Path = msgspec.field(default_factory=lambda: default_data_dir() / "store")
    log_dir: Path = msgspec.field(default_factory=lambda: default_data_dir() / "logs")
    host: str = "127.0.0.1"
    port: int = 12434
    # API keys: a file with one key per line, and/or a comma-separated variable.
    api_keys_file: Path | None = None
    api_keys: tuple[str, ...] = ()
    cors_origins: tuple[str, ...] = ()
    # Host names served besides loopback names and IP addresses (DNS rebinding guard).
    allowed_hosts: tuple[str, ...] = ()
    # Open client connections at most; more are refused at once (a flood costs no memory).
    max_connections: int = 512
    # Interpreter of the virtual environment vLLM is installed in.
    vllm_python: str | None = None
    # Registries spoken to over plain HTTP besides loopback ones.
    insecure_registries: tuple[str, ...] = ()
    drain_timeout: float = 30.0
    resync_interval: float = 60.0
    debounce: float = 0.2
    poll: bool = False
    max_body_bytes: int = 16 * 1024 * 1024
    # The request inspector keeps this many request/answer pairs per model (0: off).
    record_requests: int = 10
    # Memory models may take together ("16GiB", "80%"); unset: 90% of RAM (estimate.py).
    memory_budget: str | None = None


# Settings that can come from MR_<NAME>; tuples are comma-separated.
_ENV_FIELDS = (
    "models_dir",
    "store_dir",
    "log_dir",
    "host",
    "port",
    "api_keys_file",
    "api_keys",
    "cors_origins",
    "allowed_hosts",
    "max_connections",
    "vllm_python",
    "insecure_registries",
    "drain_timeout",
    "resync_interval",
    "debounce",
    "poll",
    "max_body_bytes",
    "record_requests",
    "memory_budget",
)


def from_env(environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
    """Settings from ``MR_*`` variables, then ``overrides`` (None values are ignored)."""
    environ = os.environ if environ is None else environ
    raw: dict[str, Any] = {}
    tuple_fields = {"api_keys", "cors_origins", "allowed_hosts", "insecure_registries"}
    for name in _ENV_FIELDS:
        value = environ.get(f"MR_{name.upper()}")
        if value is None or value == "":
            continue
        if name in tuple_fields:
            raw[name] = [item.strip() for item in value.split(",") if item.strip()]
        elif name == "poll":
            raw[name] = value.lower() in ("1", "true", "yes", "on")
        else:
            raw[name] = value
    raw.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return msgspec.convert(raw, Settings, strict=False, dec_hook=_decode)
    except msgspec.ValidationError as exc:
        from modelrunner.errors import UsageError

        raise UsageError(f"invalid setting: {exc}") from None


def _decode(kind: type, value: Any) -> Any:
    if kind is Path:
        return Path(value).expanduser()
    raise NotImplementedError
