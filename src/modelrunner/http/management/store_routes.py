"""The local store over HTTP, at Docker Model Runner's paths: ``POST /models/create``,
``GET``/``DELETE /models/{name}``, ``POST /models/{name}/tag`` and ``/push``.

The store's calls block (disk, registry): they run in a thread. Pulls and pushes stream
their progress as JSON lines (see ``transfer.py``).
"""

from __future__ import annotations

from typing import Any, Final

from litestar import Response, delete, get, post
from litestar.handlers import HTTPRouteHandler
from litestar.params import Parameter
from litestar.response import Stream

from modelrunner.errors import UnknownModel, UsageError
from modelrunner.http.errors import from_exception, to_response
from modelrunner.http.management.problems import HANDLERS, TAGS, blocking, errors, problem
from modelrunner.http.management.shapes import (
    CreateModelRequest,
    DeleteAction,
    StoredModel,
    TagResponse,
    delete_actions,
    split_action,
    stored_model,
    tag_target,
)
from modelrunner.http.management.transfer import LineProgress, start_transfer
from modelrunner.registry import Registry
from modelrunner.status import StatusSource
from modelrunner.store.store import Store

_NDJSON: Final = "application/x-ndjson"


def served_reference(registry: Registry, status: StatusSource, name: str) -> str:
    """A served model's name or alias stands for the reference its manifest pulls."""
    try:
        served = registry.lookup(name).name
    except UnknownModel:
        return name
    for known in status.snapshot():
        if known.name == served and known.reference:
            return known.reference
    return name


async def transfer_response(work: Any, mode: Any, where: str) -> Response[Any]:
    """A pull or push as a stream of JSON progress lines, or its error if it failed at once."""
    started = await start_transfer(work, mode)
    if started.failed is not None:
        return to_response(problem(started.failed, where))
    assert started.lines is not None
    return Stream(started.lines, media_type=_NDJSON, headers={"cache-control": "no-cache"})


def store_handlers(
    registry: Registry, status: StatusSource, store: Store
) -> list[HTTPRouteHandler]:
    def reference_of(name: str) -> str:
        return served_reference(registry, status, name)

    @post(
        "/models/create",
        tags=TAGS,
        exception_handlers=HANDLERS,
        status_code=200,
        responses=errors(400, 401, 403, 404, 422, 502, 503),
        description="Pull `from` (an OCI reference) into the store. The answer streams "
        "JSON lines: `progress` lines per blob (`layer.id`, `layer.size`, `layer.current`, "
        "`total`), then one `success` or `error` line. A pull that fails before any byte "
        "moved gets its HTTP status instead (400 bad reference, 404 unknown, 403 refused, "
        "503 registry unreachable). `bearer-token`, if given, is a registry token sent as "
        "`Authorization: Bearer` for this pull (before the configured credentials); it is "
        "never logged nor recorded.",
    )
    async def create_model(data: CreateModelRequest) -> Response[Any]:
        """Pull a model into the store."""
        where = f"POST /models/create ({data.from_})"

        def work(progress: LineProgress) -> str:
            files = store.pull(data.from_, progress, bearer_token=data.bearer_token or None)
            return f"Model pulled successfully: {files.digest}"

        return await transfer_response(work, "pull", where)

    @get(
        "/models/{name:path}",
        tags=TAGS,
        exception_handlers=HANDLERS,
        responses=errors(400, 401, 404),
    )
    async def get_stored_model(name: str) -> StoredModel:
        """A stored model (a reference, or a served model's name or alias): digest, tags,
        created, and the artifact's config."""
        name = name.strip("/")
        where = f"GET /models/{name}"
        info = await blocking(where, store.inspect, reference_of(name))
        return stored_model(info)

    @delete(
        "/models/{name:path}",
        tags=TAGS,
        exception_handlers=HANDLERS,
        status_code=200,
        responses=errors(400, 401, 404, 409),
        description="Remove a tag; the model goes with its last tag. A model a manifest "
        "serves is refused with 409 unless `force=true` (as `mr rm --force`).",
    )
    async def delete_model(
        name: str,
        force: bool = Parameter(default=False, description="Remove even a served model."),
    ) -> list[DeleteAction]:
        """Remove a model from the store."""
        name = name.strip("/")
        where = f"DELETE /models/{name}"

        def remove() -> list[DeleteAction]:
            ref = reference_of(name)
            before = store.inspect(ref)
            digest = store.remove(ref, force=force)
            left = {t for t, d in _tags(store).items() if d == digest}
            removed = [t for t in before["tags"] if t not in left]
            return delete_actions(removed, digest, still_tagged=bool(left))

        result: list[DeleteAction] = await blocking(where, remove)
        return result

    @post(
        "/models/{name_and_action:path}",
        tags=TAGS,
        exception_handlers=HANDLERS,
        status_code=200,
        responses=errors(400, 401, 403, 404, 502, 503),
        description="`POST /models/{name}/tag?repo=R&tag=T` gives a stored model another "
        "reference (201). `POST /models/{name}/push` uploads it to the registry its "
        "reference names, streaming JSON progress lines like `/models/create`.",
    )
    async def model_action(
        name_and_action: str,
        repo: str | None = Parameter(default=None, description="tag: the new repository"),
        tag: str | None = Parameter(default=None, description="tag: the new tag"),
    ) -> Response[Any]:
        """Tag or push a stored model."""
        name, action = split_action(name_and_action)
        where = f"POST /models/{name}/{action}"
        if not name or action not in ("tag", "push"):
            unknown = UnknownModel(
                f"No route for POST /models/{name_and_action.strip('/')}: expected "
                "/models/{name}/tag or /models/{name}/push"
            )
            return to_response(from_exception(unknown, where))
        if action == "tag":
            try:
                target = tag_target(repo, tag)
            except UsageError as exc:
                return to_response(problem(exc, where))
            await blocking(where, store.tag, reference_of(name), target)
            body = TagResponse(message=f"Model tagged successfully with {target!r}", target=target)
            return Response(body, status_code=201)

        ref = reference_of(name)

        def work(progress: LineProgress) -> str:
            return f"Model pushed successfully: {store.push(ref, progress)}"

        return await transfer_response(work, "push", where)

    return [create_model, get_stored_model, delete_model, model_action]


def _tags(store: Store) -> dict[str, str]:
    """Familiar reference -> digest, for every tag in the store."""
    return {tag: m.digest for m in store.list() for tag in m.tags}
