"""The OpenAI-compatible routes, under Docker Model Runner's three prefixes:
``/engines/{engine}/v1/...`` (only that engine's models), ``/engines/v1/...`` and ``/v1/...``
(the engine follows from the model)."""

from __future__ import annotations

from typing import Annotated, Any, Final

from litestar import Request, get, post
from litestar.exceptions import NotFoundException
from litestar.handlers import HTTPRouteHandler
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import Example
from litestar.params import Parameter
from litestar.types import ASGIApp

from modelrunner.http.errors import ErrorBody
from modelrunner.http.openai.fast_path import FastPath
from modelrunner.http.openai.shapes import (
    ChatCompletionRequest,
    CompletionRequest,
    EmbeddingRequest,
    ImageRequest,
)
from modelrunner.http.routing import check_engine, model_list, model_object, unknown_engine_message
from modelrunner.http.shapes import ModelList, ModelObject
from modelrunner.http.upstream.forwarder import Forwarder
from modelrunner.manifest.engines import ENGINES

TAGS: Final = ["OpenAI-compatible"]
# Routes without the segment see "" (Litestar fills absent path parameters from the default).
EngineParam = Annotated[
    str,
    Parameter(
        description=f"The engine: {', '.join(ENGINES)}.",
        examples=[Example(value=engine) for engine in ENGINES],
    ),
]
_ERRORS: Final = {
    400: "Malformed body or parameters",
    401: "Missing or wrong API key",
    404: "Unknown model (`model_not_found`) or engine",
    413: "Body larger than the server's limit",
    429: "limits.max_concurrent_requests reached (`rate_limit_exceeded`); see Retry-After",
    502: "The engine failed while answering",
    503: "The model is starting, draining or failed; see Retry-After",
    504: "Longer than limits.request_timeout (`timeout`); the engine's request was cancelled",
}


def error_responses(*codes: int) -> dict[int, ResponseSpec]:
    return {
        code: ResponseSpec(ErrorBody, description=_ERRORS[code], generate_examples=False)
        for code in codes
    }


PROXY_ERRORS: Final = error_responses(400, 401, 404, 413, 429, 502, 503, 504)
READ_ERRORS: Final = error_responses(400, 401, 404)
_PROXY_RESPONSES: Final = (
    "The engine's answer, relayed unchanged: JSON, or server-sent events when `stream` is "
    "true. Errors are OpenAI-shaped: 400 invalid body, 401 missing or wrong key, 404 "
    "`model_not_found`, 413 body too large, 502 engine failure, 503 model starting or "
    "draining (with Retry-After)."
)


def paths(suffix: str) -> list[str]:
    return [f"/v1/{suffix}", f"/engines/v1/{suffix}", f"/engines/{{engine:str}}/v1/{suffix}"]


def checked_segment(engine: str) -> str | None:
    """The engine a path names (None for the paths without one); 404 for an unknown one."""
    if not engine:
        return None
    if (message := unknown_engine_message(engine)) is not None:
        raise NotFoundException(detail=message)
    return engine


def openai_handlers(fw: Forwarder, fast: FastPath) -> list[HTTPRouteHandler]:
    async def proxy(
        op: str, request: Request[Any, Any, Any], model: str, engine: str, stream: bool = False
    ) -> ASGIApp:
        segment = checked_segment(engine)
        body = await request.body()
        query = request.scope["query_string"].decode("latin-1")
        return fw.call(op, segment, model, body, query, stream=stream)

    @post(
        paths("chat/completions"),
        tags=TAGS,
        status_code=200,
        description=_PROXY_RESPONSES,
        responses=PROXY_ERRORS,
        middleware=[fast.middleware("chat/completions", ChatCompletionRequest)],
    )
    async def chat_completions(
        request: Request[Any, Any, Any], data: ChatCompletionRequest, engine: EngineParam = ""
    ) -> ASGIApp:
        """Chat completion (streamed with `"stream": true`)."""
        return await proxy("chat/completions", request, data.model, engine, bool(data.stream))

    @post(
        paths("completions"),
        tags=TAGS,
        status_code=200,
        description=_PROXY_RESPONSES,
        responses=PROXY_ERRORS,
        middleware=[fast.middleware("completions", CompletionRequest)],
    )
    async def completions(
        request: Request[Any, Any, Any], data: CompletionRequest, engine: EngineParam = ""
    ) -> ASGIApp:
        """Text completion (streamed with `"stream": true`)."""
        return await proxy("completions", request, data.model, engine, bool(data.stream))

    @post(
        paths("embeddings"),
        tags=TAGS,
        status_code=200,
        description=_PROXY_RESPONSES,
        responses=PROXY_ERRORS,
        middleware=[fast.middleware("embeddings", EmbeddingRequest)],
    )
    async def embeddings(
        request: Request[Any, Any, Any], data: EmbeddingRequest, engine: EngineParam = ""
    ) -> ASGIApp:
        """Embeddings of one or more inputs."""
        return await proxy("embeddings", request, data.model, engine)

    @post(
        paths("images/generations"),
        tags=TAGS,
        status_code=200,
        description=_PROXY_RESPONSES,
        responses=PROXY_ERRORS,
        middleware=[fast.middleware("images/generations", ImageRequest)],
    )
    async def images(
        request: Request[Any, Any, Any], data: ImageRequest, engine: EngineParam = ""
    ) -> ASGIApp:
        """Image generation (diffusers)."""
        return await proxy("images/generations", request, data.model, engine)

    @get(paths("models"), tags=TAGS, responses=READ_ERRORS)
    async def list_models(engine: EngineParam = "") -> ModelList:
        """The served models (only the named engine's under an engine path)."""
        return model_list(fw.registry.models(), checked_segment(engine))

    @get(paths("models/{model_id:path}"), tags=TAGS, responses=READ_ERRORS)
    async def get_model(model_id: str, engine: EngineParam = "") -> ModelObject:
        """One served model, by name or alias."""
        segment = checked_segment(engine)
        model = fw.registry.lookup(model_id.lstrip("/"))
        check_engine(model, segment, "models")
        return model_object(model)

    return [chat_completions, completions, embeddings, images, list_models, get_model]
