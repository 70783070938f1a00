"""``POST /tokenize`` and ``POST /detokenize`` in vLLM's shapes, at the root (where vLLM
serves them), under ``/engines/{engine}/`` and ``/engines/{engine}/v1/``, and under mr's
other prefixes (``/v1/``, ``/engines/v1/``). Each is sent to the engine
serving the model (vLLM answers them itself; mr's llama.cpp server with the model's own
tokenizer and chat template), under the model's limits like any engine call. A model
without a text tokenizer (Diffusers) is a 400; errors are OpenAI-shaped, as vLLM's."""

from __future__ import annotations

from typing import Any, Final

from litestar import Request, Response, post
from litestar.handlers import HTTPRouteHandler

from modelrunner.errors import ModelRunnerError
from modelrunner.http.errors import problem, to_response
from modelrunner.http.openai.routes import EngineParam, checked_segment, error_responses
from modelrunner.http.tokenizer.shapes import (
    BadBody,
    DetokenizeRequest,
    TokenizeRequest,
    no_tokenizer,
    tokenize_body,
)
from modelrunner.http.translated.engine_call import EngineCall, problem_of

TAGS: Final = ["Tokenizer (vLLM)"]
_ERRORS: Final = error_responses(400, 401, 404, 413, 429, 502, 503, 504)


def paths(name: str) -> list[str]:
    prefixes = ("", "/v1", "/engines/v1", "/engines/{engine:str}", "/engines/{engine:str}/v1")
    return [f"{prefix}/{name}" for prefix in prefixes]


async def engine_answer(
    calls: EngineCall, op: str, model: str, body: dict[str, Any], segment: str | None, route: str
) -> dict[str, Any]:
    """The engine's answer to ``POST /{op}`` for ``model`` (``BadBody`` for an engine
    without a tokenizer); shared with Anthropic's count_tokens."""
    served = calls.resolve(model, segment, op)
    reason = no_tokenizer(served.engine)
    if reason is not None:
        raise BadBody(f"The model '{served.name}' cannot be tokenized: {reason}", "model")
    answer = await calls.complete(op, model, body, segment, route=route, path=f"/{op}")
    return answer.body


def tokenizer_handlers(calls: EngineCall) -> list[HTTPRouteHandler]:
    async def answer(
        request: Request[Any, Any, Any], op: str, model: str, body: dict[str, Any], engine: str
    ) -> Response[Any]:
        where = f"POST {request.url.path}"
        try:
            found = await engine_answer(calls, op, model, body, checked_segment(engine), op)
        except BadBody as exc:
            return to_response(problem(400, f"{where}: {exc}", param=exc.param))
        except ModelRunnerError as exc:
            return to_response(problem_of(exc, where))
        return Response(found)

    @post(paths("tokenize"), tags=TAGS, status_code=200, responses=_ERRORS,
          response_description="count, max_model_len, tokens (and token_strs)")  # fmt: skip
    async def tokenize(
        request: Request[Any, Any, Any], data: TokenizeRequest, engine: EngineParam = ""
    ) -> Response[Any]:
        """Tokenize a `prompt`, or chat `messages` with the model's chat template applied
        (`add_generation_prompt`, default true; `add_special_tokens`; `tools`)."""
        try:
            body = tokenize_body(data)
        except BadBody as exc:
            found = problem(400, f"POST {request.url.path}: {exc}", param=exc.param)
            return to_response(found)
        return await answer(request, "tokenize", data.model, body, engine)

    @post(paths("detokenize"), tags=TAGS, status_code=200, responses=_ERRORS)
    async def detokenize(
        request: Request[Any, Any, Any], data: DetokenizeRequest, engine: EngineParam = ""
    ) -> Response[Any]:
        """The text of `tokens` (token ids of the model's vocabulary)."""
        body = {"tokens": data.tokens}
        return await answer(request, "detokenize", data.model, body, engine)

    return [tokenize, detokenize]
