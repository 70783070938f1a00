"""OpenAI's Responses API, at ``/v1/responses``, ``/responses``, ``/engines/v1/responses``
and ``/engines/{engine}/v1/responses``: create (JSON or streamed events), get, list input
items, delete.

Each request becomes one chat completion call to the model's engine (``EngineCall``); a
streamed answer is translated chunk by chunk as it arrives, never held back. Finished
responses are kept in a bounded in-memory ``ResponseStore`` for ``previous_response_id``.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Annotated, Any, Final, Literal

import msgspec
from litestar import Request, Response, delete, get, post
from litestar.handlers import HTTPRouteHandler
from litestar.params import Parameter
from litestar.response import Stream

from modelrunner.errors import ModelRunnerError
from modelrunner.http.errors import ErrorAnswer, problem, to_response
from modelrunner.http.inspector.recorder import Entry, Recorder
from modelrunner.http.openai.routes import EngineParam, checked_segment, error_responses
from modelrunner.http.responses.answers import Output, ResponsesStream, response_object
from modelrunner.http.responses.shapes import BadInput, ResponsesRequest, new_id
from modelrunner.http.responses.store import ResponseStore, page
from modelrunner.http.responses.translate import chat_body, input_items, refuse_unsupported
from modelrunner.http.translated.engine_call import EngineCall, EventStream, problem_of

TAGS: Final = ["OpenAI Responses"]
_PREFIXES: Final = ("/responses", "/v1/responses", "/engines/v1/responses",
                    "/engines/{engine:str}/v1/responses")  # fmt: skip
_STREAM_HEADERS: Final = {"cache-control": "no-cache", "x-accel-buffering": "no"}
ResponseId = Annotated[str, Parameter(description="A response id (resp_...).")]


def _paths(suffix: str = "") -> list[str]:
    return [prefix + suffix for prefix in _PREFIXES]


def sse(events: list[dict[str, Any]]) -> bytes:
    return b"".join(
        b"event: " + e["type"].encode() + b"\ndata: " + msgspec.json.encode(e) + b"\n\n"
        for e in events
    )


def responses_handlers(call: EngineCall, recorder: Recorder | None) -> list[HTTPRouteHandler]:
    store = ResponseStore()

    def not_found(response_id: str) -> Response[bytes]:
        found = problem(404, f"Response with id '{response_id}' not found.",
                        param="response_id", code="not_found")  # fmt: skip
        return to_response(found)

    def answer_problem(found: ErrorAnswer, entry: Entry | None) -> Response[bytes]:
        if entry is not None and recorder is not None:
            entry.finish(found.status, found.encode(), complete=True)
            recorder.done(entry)
        return to_response(found)

    @post(
        _paths(),
        tags=TAGS,
        status_code=200,
        responses=error_responses(400, 401, 404, 413, 429, 502, 503, 504),
        description="Create a response: `input` (a string or message, function_call and "
        "function_call_output items), `instructions`, function `tools` and `tool_choice`, "
        "`text.format` (`json_schema` or `json_object`), `max_output_tokens`, "
        "`temperature`, `top_p`, `previous_response_id` (a response this server kept), "
        "`store` (default true). With `stream: true` the answer is the Responses event "
        "stream (response.created ... response.completed).",
    )
    async def create_response(
        request: Request[Any, Any, Any], data: ResponsesRequest, engine: EngineParam = ""
    ) -> Response[Any]:
        """Create a model response."""
        where = f"POST {request.url.path}"
        segment = checked_segment(engine)
        entry = None
        if recorder is not None:
            agent = request.headers.get("user-agent")
            body = await request.body()
            entry = recorder.begin_for(data.model, "POST", request.url.path, agent, body)
        try:
            refuse_unsupported(data)
            items = input_items(data.input)
            history: list[dict[str, Any]] = []
            if data.previous_response_id is not None:
                earlier = store.get(data.previous_response_id)
                if earlier is None:
                    raise BadInput(
                        f"Previous response with id '{data.previous_response_id}' not found.",
                        "previous_response_id",
                    )
                history = earlier.history
            chat = chat_body(data, history, items)
        except BadInput as exc:
            return answer_problem(problem(400, f"{where}: {exc}", param=exc.param), entry)
        if data.stream:
            try:
                events = await call.stream("chat/completions", data.model, chat, segment,
                                           route="responses")  # fmt: skip
            except ModelRunnerError as exc:
                return answer_problem(problem_of(exc, where), entry)
            translator = ResponsesStream(new_id("resp"), events.model.name, data)
            if entry is not None:
                entry.stream = True
            relay = _relay(translator, events, store, items, history, entry, recorder)
            return Stream(relay, media_type="text/event-stream", headers=_STREAM_HEADERS)
        try:
            answer = await call.complete("chat/completions", data.model, chat, segment,
                                         route="responses")  # fmt: skip
        except ModelRunnerError as exc:
            return answer_problem(problem_of(exc, where), entry)
        output = Output()
        output.add_completion(answer.body)
        created = response_object(new_id("resp"), int(time.time()), answer.model.name, data,
                                   output, "completed")  # fmt: skip
        if data.store:
            store.save(created, items, history)
        if entry is not None and recorder is not None:
            entry.finish(200, msgspec.json.encode(created), complete=True)
            recorder.done(entry)
        return Response(created, status_code=200)

    @get(_paths("/{response_id:str}"), tags=TAGS, responses=error_responses(400, 401, 404))
    async def get_response(response_id: ResponseId, engine: EngineParam = "") -> Response[Any]:
        """A stored response."""
        checked_segment(engine)
        stored = store.get(response_id)
        return not_found(response_id) if stored is None else Response(stored.response)

    @get(
        _paths("/{response_id:str}/input_items"),
        tags=TAGS,
        responses=error_responses(400, 401, 404),
    )
    async def list_input_items(
        response_id: ResponseId,
        engine: EngineParam = "",
        order: Literal["asc", "desc"] = Parameter(default="desc", description="By position."),
        limit: int = Parameter(default=20, ge=1, le=100, description="Items per page."),
        after: str | None = Parameter(default=None, description="Items after this item id."),
    ) -> Response[Any]:
        """The input items a stored response was created from."""
        checked_segment(engine)
        stored = store.get(response_id)
        if stored is None:
            return not_found(response_id)
        return Response(page(stored.input_items, order, limit, after))

    @delete(
        _paths("/{response_id:str}"),
        tags=TAGS,
        status_code=200,
        responses=error_responses(400, 401, 404),
    )
    async def delete_response(response_id: ResponseId, engine: EngineParam = "") -> Response[Any]:
        """Forget a stored response."""
        checked_segment(engine)
        if not store.delete(response_id):
            return not_found(response_id)
        return Response({"id": response_id, "object": "response", "deleted": True})

    return [create_response, get_response, list_input_items, delete_response]


async def _relay(
    translator: ResponsesStream,
    events: EventStream,
    store: ResponseStore,
    items: list[dict[str, Any]],
    history: list[dict[str, Any]],
    entry: Entry | None,
    recorder: Recorder | None,
) -> AsyncIterator[bytes]:
    """The engine's chunks as Responses events, each sent as soon as it is translated."""
    final: dict[str, Any] | None = None
    try:
        yield sse(translator.start())
        # One write per network read of the engine; the closing events go with the last.
        last: list[dict[str, Any]] = []
        async for batch in events.batches():
            said = [event for chunk in batch for event in translator.chunk(chunk)]
            if events.ended:
                last = said  # the batch the end came with: the stream ends after it
            elif said:
                yield sse(said)
        closing = translator.finish()
        final = closing[-1]["response"]
        if translator.request.store:
            store.save(final, items, history)
        yield sse([*last, *closing])
    except ModelRunnerError as exc:
        code = problem_of(exc, "POST /v1/responses").body.error.code or "upstream_failed"
        failing = translator.fail(code, str(exc))
        final = failing[-1]["response"]
        yield sse(failing)
    finally:
        await events.aclose()
        if entry is not None and recorder is not None:
            answer = msgspec.json.encode(final) if final is not None else None
            entry.finish(200, answer, complete=final is not None)
            recorder.done(entry)
