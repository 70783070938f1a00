"""What the management routes share: store failures as HTTP problems (raised from a
thread as ``AsProblem``, answered by ``HANDLERS``) and the OpenAPI error responses."""

from __future__ import annotations

import asyncio
from typing import Any, Final

from litestar import Response

from modelrunner.http.errors import ErrorAnswer, ErrorBody, from_exception, to_response
from modelrunner.http.management.shapes import store_problem

TAGS: Final = ["Model management"]


def problem(exc: BaseException, where: str) -> ErrorAnswer:
    return store_problem(exc, where) or from_exception(exc, where)


async def blocking(where: str, fn: Any, *args: Any) -> Any:
    """Run a store call in a thread; store failures become their HTTP problem."""
    try:
        return await asyncio.to_thread(fn, *args)
    except Exception as exc:
        found = store_problem(exc, where)
        if found is None:
            raise
        raise AsProblem(found) from None


class AsProblem(Exception):
    def __init__(self, found: ErrorAnswer) -> None:
        super().__init__(found.body.error.message)
        self.found = found


def _as_problem(_request: Any, exc: AsProblem) -> Response[bytes]:
    return to_response(exc.found)


HANDLERS: Final[dict[Any, Any]] = {AsProblem: _as_problem}


def errors(*codes: int) -> dict[int, Any]:
    from litestar.openapi.datastructures import ResponseSpec

    return {c: ResponseSpec(ErrorBody, description="Error", generate_examples=False) for c in codes}
