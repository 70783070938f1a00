"""How long a loaded model may stay idle: the manifest's ``keep_alive``, unless a request
replaced it for the running instance (Ollama's ``keep_alive``; ``Endpoint.keep_alive``).
Seconds throughout; ``float('inf')`` keeps the model loaded."""

from __future__ import annotations


def effective(manifest: float, override: float | None) -> float:
    """The keep-alive in force: a request's override wins over the manifest's."""
    return manifest if override is None else override


def idle_limit(manifest: float, override: float | None, served: int, grace: float) -> float:
    """Seconds of idleness after which the instance is unloaded. An instance that has not
    yet answered a request is kept at least ``grace`` for its first one; once a request
    has ended (``served``), a keep-alive of 0 unloads as soon as it is idle."""
    keep = effective(manifest, override)
    return keep if served else max(keep, grace)
