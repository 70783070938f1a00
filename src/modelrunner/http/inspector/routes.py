"""``GET /engines/requests``: the request inspector's pairs, as JSON or followed as
server-sent events (``?stream=true``, or ``Accept: text/event-stream`` as Docker Model
Runner's CLI asks)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any, Final

import msgspec
from litestar import Request, get
from litestar.handlers import HTTPRouteHandler
from litestar.params import Parameter
from litestar.response import Stream

from modelrunner.http.inspector.recorder import ModelRecords, Recorder

TAGS: Final = ["Management"]
_HEARTBEAT: Final = 15.0  # seconds between comment lines that keep proxies from closing


def sse_event(event: str, data: object) -> bytes:
    return b"event: " + event.encode() + b"\ndata: " + msgspec.json.encode(data) + b"\n\n"


def inspector_handlers(recorder: Recorder | None) -> list[HTTPRouteHandler]:
    @get(
        "/engines/requests",
        tags=TAGS,
        responses=None,
        description="The last request/answer pairs per model (`MR_RECORD_REQUESTS`, default "
        "10; 0 turns recording off and this list stays empty). Streamed answers are "
        "reassembled into one JSON answer; base64 media and bodies over 64 KiB are "
        "shortened. With `stream=true` (or `Accept: text/event-stream`) the answer is a "
        "server-sent event stream: `connected`, then `existing_request` for each kept pair "
        "when `include_existing=true`, then `new_request` for each pair as it completes.",
    )
    async def requests(
        request: Request[Any, Any, Any],
        model: str | None = Parameter(
            default=None, description="Only this model's pairs (a name or alias)."
        ),
        stream: bool = Parameter(default=False, description="Follow new pairs as SSE."),
        include_existing: bool = Parameter(
            default=False, description="When following: send the kept pairs first."
        ),
    ) -> list[ModelRecords] | Stream:
        """Recorded requests and answers, per model."""
        follow = stream or request.headers.get("accept", "") == "text/event-stream"
        if not follow:
            return recorder.snapshot(model) if recorder is not None else []
        return Stream(
            _follow(recorder, model, include_existing),
            media_type="text/event-stream",
            headers={"cache-control": "no-cache", "x-accel-buffering": "no"},
        )

    return [requests]


async def _follow(
    recorder: Recorder | None, model: str | None, include_existing: bool
) -> AsyncIterator[bytes]:
    yield sse_event("connected", {"status": "connected", "recording": recorder is not None})
    if recorder is None:
        return
    with recorder.follow() as queue:
        if include_existing:
            for group in recorder.snapshot(model):
                for record in group.records:
                    one = ModelRecords(count=1, model=group.model, records=[record])
                    yield sse_event("existing_request", [one])
        wanted = recorder.canonical(model) if model else None
        while True:
            try:
                entry = await asyncio.wait_for(queue.get(), _HEARTBEAT)
            except TimeoutError:
                yield b": keep-alive\n\n"
                continue
            if wanted is None or entry.model == wanted:
                yield sse_event("new_request", [Recorder.group(entry.model, [entry])])
