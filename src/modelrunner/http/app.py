"""``create_app``: the Litestar app, wired to the registry, status source and metrics.

It starts no background work of its own: the shared upstream client and the caller's
lifespans (the reconciler's) are entered in order on startup and left in reverse.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any

from litestar import Litestar, Router
from litestar.config.cors import CORSConfig
from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException
from litestar.handlers import HTTPRouteHandler
from litestar.handlers.base import BaseRouteHandler
from litestar.openapi.config import OpenAPIConfig
from litestar.openapi.spec import Components, SecurityScheme
from litestar.types import Method

from modelrunner import __version__
from modelrunner.http.anthropic.routes import anthropic_handlers
from modelrunner.http.api_errors import per_api
from modelrunner.http.errors import exception_handler
from modelrunner.http.inspector.recorder import Recorder
from modelrunner.http.inspector.routes import inspector_handlers
from modelrunner.http.keys import KeyCheck, check_settings
from modelrunner.http.management.engine_routes import ModelControl, engine_handlers
from modelrunner.http.management.rollout import RolloutControl, rollout_handlers
from modelrunner.http.management.status_routes import admin_handlers
from modelrunner.http.management.store_routes import store_handlers
from modelrunner.http.ollama.chat_routes import chat_handlers
from modelrunner.http.ollama.model_routes import model_handlers
from modelrunner.http.openai.fast_path import FastPath
from modelrunner.http.openai.routes import openai_handlers
from modelrunner.http.request_policy import RequestPolicy, RequestPolicyMiddleware
from modelrunner.http.responses.routes import responses_handlers
from modelrunner.http.tokenizer.routes import tokenizer_handlers
from modelrunner.http.translated.engine_call import EngineCall
from modelrunner.http.translated.fast_path import TranslatedFastPath
from modelrunner.http.upstream.forwarder import Forwarder
from modelrunner.http.upstream.revision import RevisionTagging
from modelrunner.metrics import Metrics
from modelrunner.registry import Registry
from modelrunner.settings import Settings
from modelrunner.status import StatusSource
from modelrunner.store.store import Store

Lifespan = Callable[[Litestar], AbstractAsyncContextManager[None]]


def create_app(
    settings: Settings,
    registry: Registry,
    status: StatusSource,
    metrics: Metrics,
    lifespan: Sequence[Lifespan] = (),
    *,
    store: Store | None = None,
    control: ModelControl | None = None,
) -> Litestar:
    """The API server. Raises ``UsageError`` for settings it must not run with
    (see ``keys.check_settings``). ``store`` is the reconciler's (its pins keep served
    models from removal; default: one on ``settings.store_dir``); ``control`` unloads
    models for ``POST /engines/unload``."""
    keys = KeyCheck(check_settings(settings))
    forwarder = Forwarder(registry, metrics)
    if settings.record_requests > 0:
        forwarder.recorder = Recorder(settings.record_requests, registry)
    store = store or Store(settings.store_dir, settings.insecure_registries)
    fast = FastPath(forwarder, keys, settings.max_body_bytes)
    # The Ollama and Anthropic APIs, translated to the OpenAI calls the engines serve.
    calls = EngineCall(forwarder)
    short = TranslatedFastPath(keys, settings.max_body_bytes)
    recorder = forwarder.recorder
    # Their answers say which revision gave them (X-Model-Revision), as the proxy's do.
    translated = Router(
        "/",
        route_handlers=[
            *model_handlers(calls, status, store),
            *chat_handlers(calls, short, recorder),
            *anthropic_handlers(calls, short, recorder),
            *responses_handlers(calls, forwarder.recorder),
            *tokenizer_handlers(calls),
        ],
        middleware=[RevisionTagging],
    )
    policy = RequestPolicy.of(settings.allowed_hosts, settings.cors_origins, keys.enabled)
    cors = (
        CORSConfig(
            allow_origins=list(settings.cors_origins),
            allow_methods=["GET", "POST", "DELETE", "OPTIONS"],
            allow_headers=["authorization", "content-type", "x-api-key", "anthropic-version"],
        )
        if settings.cors_origins
        else None
    )
    openapi = OpenAPIConfig(
        title="modelrunner",
        version=__version__,
        description="OpenAI-compatible model serving under Docker Model Runner's paths.",
        path="/schema",
        operation_id_creator=_operation_id,
        security=[{"bearer": []}] if keys.enabled else None,
        components=Components(
            security_schemes={"bearer": SecurityScheme(type="http", scheme="bearer")}
            if keys.enabled
            else None
        ),
    )
    return Litestar(
        route_handlers=[
            *openai_handlers(forwarder, fast),
            *admin_handlers(forwarder, status, keys),
            *store_handlers(registry, status, store),
            *engine_handlers(settings, registry, status, store, control),
            *rollout_handlers(registry, control if isinstance(control, RolloutControl) else None),
            *inspector_handlers(forwarder.recorder),
            translated,
        ],
        lifespan=[forwarder.lifespan, *lifespan],
        # Every route, including ones added later, unless request_policy.EXEMPT lists it.
        middleware=[lambda app: RequestPolicyMiddleware(app, policy)],
        guards=[_require_key(keys)] if keys.enabled else [],
        exception_handlers={Exception: per_api(exception_handler)},
        cors_config=cors,
        request_max_body_size=settings.max_body_bytes,
        openapi_config=openapi,
        debug=False,
        logging_config=None,  # the caller (mr serve) configures logging
    )


def _require_key(
    keys: KeyCheck,
) -> Callable[[ASGIConnection[Any, Any, Any, Any], BaseRouteHandler], None]:
    def require_key(
        connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler
    ) -> None:
        headers = connection.headers
        if handler.opt.get("public") or keys.accepts(
            headers.get("authorization"), headers.get("x-api-key")
        ):
            return
        raise NotAuthorizedException(
            detail="Missing or wrong API key: send 'Authorization: Bearer <key>' or 'x-api-key'",
            headers={"WWW-Authenticate": "Bearer"},
        )

    return require_key


def _operation_id(handler: HTTPRouteHandler, method: Method, components: list[Any]) -> str:
    """Unique per path: ``post_engines_engine_v1_chat_completions``."""
    parts = [getattr(c, "name", c) for c in components]
    return "_".join(
        [str(getattr(method, "value", method)).lower(), *(str(p).replace(".", "_") for p in parts)]
    )
