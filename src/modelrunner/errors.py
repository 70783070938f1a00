"""The project's one exception tree.

Third-party errors (yaml, oras, httpx, subprocess) are turned into these where they
enter, so callers handle one family and the HTTP layer maps each to one error body.

    ModelRunnerError
    ├── UsageError              a command was called wrongly (exit code 2)
    ├── InvalidReference        an OCI reference does not parse
    ├── StoreError              the local content-addressed store
    │   ├── ModelNotFound       no such model locally or in the registry
    │   ├── DigestMismatch      bytes received do not hash to the expected digest
    │   ├── ModelInUse          refusing to delete a model an instance is serving
    │   └── RegistryError       the registry failed or refused
    │       ├── RegistryUnavailable
    │       └── RegistryUnauthorized
    ├── EngineError             an engine instance
    │   ├── EngineNotInstalled  the engine's package or interpreter is missing
    │   └── EngineStartFailed   the process exited or never became ready
    ├── UnknownModel            no manifest serves this name (HTTP 404)
    ├── ModelUnavailable        known, but starting, draining or failed (HTTP 503)
    ├── Overloaded              too many requests for the model's limits (HTTP 429)
    ├── RequestTimedOut         longer than the model's request_timeout (HTTP 504)
    └── UpstreamFailed          the engine failed while answering (HTTP 502)
"""

from __future__ import annotations


class ModelRunnerError(Exception):
    """Base of every error modelrunner raises on purpose."""


class UsageError(ModelRunnerError):
    """A command was called with arguments it cannot use."""


class InvalidReference(ModelRunnerError):
    """An OCI reference that does not parse."""


class StoreError(ModelRunnerError):
    """The local model store failed."""


class ModelNotFound(StoreError):
    """No such model, locally or in the registry."""


class DigestMismatch(StoreError):
    """Received bytes do not hash to the digest they were asked for."""


class ModelInUse(StoreError):
    """A model an instance is serving cannot be removed without force."""


class RegistryError(StoreError):
    """The registry answered with an error."""


class RegistryUnavailable(RegistryError):
    """The registry could not be reached."""


class RegistryUnauthorized(RegistryError):
    """The registry refused our credentials (or their absence)."""


class EngineError(ModelRunnerError):
    """An engine instance failed."""


class EngineNotInstalled(EngineError):
    """The engine's package or interpreter is not installed."""


class EngineStartFailed(EngineError):
    """The engine process exited or never became ready; ``exit`` (an
    ``engines.exits.Exit``) says how the process ended, when it ended by itself."""

    def __init__(self, message: str, exit: object | None = None) -> None:
        super().__init__(message)
        self.exit = exit


class UnknownModel(ModelRunnerError):
    """No manifest serves this model name or alias (HTTP 404 model_not_found)."""


class ModelUnavailable(ModelRunnerError):
    """The model is known but cannot take requests now: starting, draining or failed (HTTP 503)."""

    def __init__(self, message: str, retry_after: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Overloaded(ModelRunnerError):
    """The model's max_concurrent_requests are running and its queue is full (HTTP 429)."""

    def __init__(self, message: str, retry_after: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class RequestTimedOut(ModelRunnerError):
    """The request ran longer than the model's request_timeout; it was cancelled (HTTP 504)."""


class UpstreamFailed(ModelRunnerError):
    """The engine instance failed while answering (HTTP 502)."""
