"""The Responses API's memory: stored responses, for ``previous_response_id`` and
``GET``/``DELETE /v1/responses/{id}``.

Bounded: at most ``max_responses`` responses and about ``max_bytes`` of their items; the
oldest go first. It lives in the server's memory only, so a restart forgets every response
(a client then gets 404 / 400 for an id it kept).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Final

import msgspec

MAX_RESPONSES: Final = 1000
MAX_BYTES: Final = 64 * 1024 * 1024


@dataclass(frozen=True)
class Stored:
    response: dict[str, Any]  # the response object as it was answered
    input_items: list[dict[str, Any]]  # this turn's input items
    history: list[dict[str, Any]]  # every item up to and including this turn's output
    size: int


class ResponseStore:
    def __init__(self, max_responses: int = MAX_RESPONSES, max_bytes: int = MAX_BYTES) -> None:
        self._max_responses = max_responses
        self._max_bytes = max_bytes
        self._items: OrderedDict[str, Stored] = OrderedDict()
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._items)

    def save(
        self,
        response: dict[str, Any],
        input_items: list[dict[str, Any]],
        earlier: list[dict[str, Any]],
    ) -> None:
        """Keep a finished response; ``earlier``: the items of the turns before it."""
        history = [*earlier, *input_items, *response["output"]]
        # Items are shared with the earlier turns' lists, so this over-counts a long chain:
        # the bound is reached sooner, never later.
        size = len(msgspec.json.encode(input_items)) + len(msgspec.json.encode(response))
        self.delete(response["id"])
        self._items[response["id"]] = Stored(response, input_items, history, size)
        self._bytes += size
        while self._items and (
            len(self._items) > self._max_responses or self._bytes > self._max_bytes
        ):
            _, dropped = self._items.popitem(last=False)
            self._bytes -= dropped.size

    def get(self, response_id: str) -> Stored | None:
        return self._items.get(response_id)

    def delete(self, response_id: str) -> bool:
        dropped = self._items.pop(response_id, None)
        if dropped is None:
            return False
        self._bytes -= dropped.size
        return True


def page(items: list[dict[str, Any]], order: str, limit: int, after: str | None) -> dict[str, Any]:
    """``GET .../input_items``: a list page (``order`` asc or desc, items after ``after``)."""
    ordered = items if order == "asc" else list(reversed(items))
    if after is not None:
        ids = [item.get("id") for item in ordered]
        ordered = ordered[ids.index(after) + 1 :] if after in ids else []
    chosen = ordered[:limit]
    return {
        "object": "list",
        "data": chosen,
        "first_id": chosen[0]["id"] if chosen else None,
        "last_id": chosen[-1]["id"] if chosen else None,
        "has_more": len(ordered) > limit,
    }
