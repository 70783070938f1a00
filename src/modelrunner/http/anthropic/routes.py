"""Anthropic's Messages API at ``/anthropic/v1/messages``, ``/v1/messages``,
``/engines/v1/messages`` and ``/engines/{engine}/v1/messages`` (plus ``.../count_tokens``),
translated to the OpenAI chat call the engines serve (``anthropic_translate``), streamed as
Anthropic's event sequence event by event, every error in Anthropic's shape."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any, Final

import msgspec
from litestar import Request, Response, post
from litestar.handlers import HTTPRouteHandler
from litestar.openapi.datastructures import ResponseSpec
from litestar.types import ASGIApp, ExceptionHandlersMap

from modelrunner.errors import RequestTimedOut, UpstreamFailed
from modelrunner.http.anthropic.shapes import (
    AnthropicError,
    AnthropicErrorDetail,
    CountTokensRequest,
    MessagesRequest,
)
from modelrunner.http.anthropic.translate import (
    AnthropicStream,
    Event,
    InvalidMessages,
    chat_request,
    count_request,
    error_type,
    input_tokens,
    message_answer,
)
from modelrunner.http.inspector.assemble import AnthropicAssembler
from modelrunner.http.inspector.recorder import Recorder
from modelrunner.http.inspector.translated import recording
from modelrunner.http.openai.routes import EngineParam, checked_segment
from modelrunner.http.tokenizer.routes import engine_answer
from modelrunner.http.tokenizer.shapes import BadBody
from modelrunner.http.translated.answers import JsonAnswer, StreamAnswer
from modelrunner.http.translated.engine_call import EngineCall, EventStream, problem_of
from modelrunner.http.translated.fast_path import TranslatedFastPath

TAGS: Final = ["Anthropic Messages"]

ERRORS: Final = {
    code: ResponseSpec(AnthropicError, description=text, generate_examples=False)
    for code, text in {
        400: "Invalid body (invalid_request_error)",
        401: "Missing or wrong API key (authentication_error)",
        404: "Unknown model (not_found_error)",
        413: "Body larger than the server's limit",
        429: "limits.max_concurrent_requests reached (rate_limit_error), see Retry-After",
        502: "The engine failed (api_error)",
        503: "The model is starting (overloaded_error), see Retry-After",
        504: "Longer than limits.request_timeout (timeout_error)",
    }.items()
}


def paths(suffix: str) -> list[str]:
    return [
        f"/anthropic/v1/{suffix}",
        f"/v1/{suffix}",
        f"/engines/v1/{suffix}",
        f"/engines/{{engine:str}}/v1/{suffix}",
    ]


def anthropic_error(exc: BaseException, where: str) -> tuple[int, AnthropicError, dict[str, str]]:
    if isinstance(exc, InvalidMessages):
        status, message, headers = 400, str(exc), {}
    else:
        found = problem_of(exc, where)
        status, message, headers = found.status, found.body.error.message, dict(found.headers)
    return status, AnthropicError(error=AnthropicErrorDetail(error_type(status), message)), headers


def handle_error(request: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    status, body, headers = anthropic_error(exc, f"{request.method} {request.url.path}")
    return Response(
        msgspec.json.encode(body),
        status_code=status,
        media_type="application/json",
        headers=headers,
    )


HANDLERS: Final[ExceptionHandlersMap] = {Exception: handle_error}


def _sse(events: list[Event]) -> bytes:
    return b"".join(
        b"event: " + name.encode() + b"\ndata: " + msgspec.json.encode(data) + b"\n\n"
        for name, data in events
    )


async def _events(stream: EventStream, translate: AnthropicStream) -> AsyncGenerator[bytes, None]:
    async with stream:
        # message_start goes out with the first piece of the answer, the closing events with
        # the last one: one write each time, as the OpenAI route's relay does.
        pending = translate.start()
        finished = False
        try:
            async for batch in stream.batches():
                pending += [event for chunk in batch for event in translate.feed(chunk)]
                if stream.ended:
                    pending += translate.finish()
                    finished = True
                if len(pending) > 1 or finished:
                    yield _sse(pending)
                    pending = []
            if not finished:
                yield _sse(pending + translate.finish())
        except (UpstreamFailed, RequestTimedOut) as exc:
            _, body, _ = anthropic_error(exc, stream.op)
            yield _sse([("error", msgspec.to_builtins(body))])


def _assembler(content_type: bytes) -> AnthropicAssembler | None:
    return AnthropicAssembler() if content_type.startswith(b"text/event-stream") else None


def anthropic_handlers(
    calls: EngineCall, fast: TranslatedFastPath, recorder: Recorder | None = None
) -> list[HTTPRouteHandler]:
    # The request inspector records each message call (see inspector_translated).
    record = [] if recorder is None else [recording(recorder, _assembler, handle_error)]

    async def message_for(data: MessagesRequest, engine: str) -> ASGIApp:
        segment = checked_segment(engine)
        body = chat_request(data)
        if data.stream:
            stream = await calls.stream(
                "chat/completions", data.model, body, segment, route="messages"
            )
            events = _events(stream, AnthropicStream(data.model))
            return StreamAnswer(events, "text/event-stream", {}, stream.aclose)
        answer = await calls.complete(
            "chat/completions", data.model, body, segment, route="messages"
        )
        return JsonAnswer(msgspec.json.encode(message_answer(answer.body, data.model)))

    short = fast.middleware(MessagesRequest, message_for)

    @post(paths("messages"), tags=TAGS, status_code=200, exception_handlers=HANDLERS,
          responses=ERRORS, middleware=[*record, short])  # fmt: skip
    async def messages(data: MessagesRequest, engine: EngineParam = "") -> ASGIApp:
        """Create a message; server-sent events in Anthropic's sequence with ``"stream": true``."""
        return await message_for(data, engine)

    # Recorded as the message calls are: a client's count before each call shows there.
    @post(paths("messages/count_tokens"), tags=TAGS, status_code=200,
          exception_handlers=HANDLERS, responses=ERRORS, middleware=record)  # fmt: skip
    async def count_tokens(data: CountTokensRequest, engine: EngineParam = "") -> dict[str, int]:
        """The input tokens a Messages request would cost (the model's chat template applied)."""
        segment = checked_segment(engine)
        route = "messages/count_tokens"
        try:
            counted = await engine_answer(
                calls, "tokenize", data.model, count_request(data), segment, route
            )
        except BadBody as exc:
            raise InvalidMessages(str(exc)) from None
        return {"input_tokens": input_tokens(counted)}

    return [messages, count_tokens]
