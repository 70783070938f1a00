"""Model management over HTTP, at Docker Model Runner's paths: the local store
(``POST /models/create``, ``GET``/``DELETE /models/{name}``, ``POST /models/{name}/tag``
and ``/push``) and the engines (``GET /engines/status``, ``/engines/ps``, ``/engines/df``,
``POST /engines/unload``). Behind the same API keys as every other route.

The store's calls block (disk, registry): they run in a thread. Pulls and pushes stream
their progress as JSON lines (see ``transfer.py``).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Final, Protocol

from litestar import Response, delete, get, post
from litestar.handlers import HTTPRouteHandler
from litestar.params import Parameter
from litestar.response import Stream

from modelrunner.errors import UnknownModel, UsageError
from modelrunner.http.errors import ErrorAnswer, ErrorBody, from_exception, to_response
from modelrunner.http.management.shapes import (
    CreateModelRequest,
    DeleteAction,
    DiskUsageReport,
    RunningModel,
    StoredModel,
    TagResponse,
    UnloadRequest,
    UnloadResponse,
    delete_actions,
    engine_status,
    running_models,
    split_action,
    store_problem,
    stored_model,
    tag_target,
    unload_targets,
)
from modelrunner.http.management.transfer import LineProgress, start_transfer
from modelrunner.registry import Registry
from modelrunner.settings import Settings
from modelrunner.status import StatusSource
from modelrunner.store.store import Store

TAGS: Final = ["Model management"]
_NDJSON: Final = "application/x-ndjson"
_STATUS_TTL: Final = 60.0  # seconds an engine install probe is reused (vLLM's takes a while)


class ModelControl(Protocol):
    """What the reconciler offers the management routes."""

    def unload(self, name: str) -> bool:
        """Unload a loaded model now (it loads again on its next request)."""
        ...


def _problem(exc: BaseException, where: str) -> ErrorAnswer:
    return store_problem(exc, where) or from_exception(exc, where)


async def _blocking(where: str, fn: Any, *args: Any) -> Any:
    """Run a store call in a thread; store failures become their HTTP problem."""
    try:
        return await asyncio.to_thread(fn, *args)
    except Exception as exc:
        found = store_problem(exc, where)
        if found is None:
            raise
        raise _AsProblem(found) from None


class _AsProblem(Exception):
    def __init__(self, found: ErrorAnswer) -> None:
        super().__init__(found.body.error.message)
        self.found = found


def _as_problem(_request: Any, exc: _AsProblem) -> Response[bytes]:
    return to_response(exc.found)


_HANDLERS: Final[dict[Any, Any]] = {_AsProblem: _as_problem}


def _errors(*codes: int) -> dict[int, Any]:
    from litestar.openapi.datastructures import ResponseSpec

    return {c: ResponseSpec(ErrorBody, description="Error", generate_examples=False) for c in codes}


def management_handlers(
    settings: Settings,
    registry: Registry,
    status: StatusSource,
    store: Store,
    control: ModelControl | None,
) -> list[HTTPRouteHandler]:
    def reference_of(name: str) -> str:
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
        started = await start_transfer(work, mode)
        if started.failed is not None:
            return to_response(_problem(started.failed, where))
        assert started.lines is not None
        return Stream(started.lines, media_type=_NDJSON, headers={"cache-control": "no-cache"})

    @post(
        "/models/create",
        tags=TAGS,
        exception_handlers=_HANDLERS,
        status_code=200,
        responses=_errors(400, 401, 403, 404, 422, 502, 503),
        description="Pull `from` (an OCI reference) into the store. The answer streams "
        "JSON lines: `progress` lines per blob (`layer.id`, `layer.size`, `layer.current`, "
        "`total`), then one `success` or `error` line. A pull that fails before any byte "
        "moved gets its HTTP status instead (400 bad reference, 404 unknown, 403 refused, "
        "503 registry unreachable).",
    )
    async def create_model(data: CreateModelRequest) -> Response[Any]:
        """Pull a model into the store."""
        where = f"POST /models/create ({data.from_})"

        def work(progress: LineProgress) -> str:
            files = store.pull(data.from_, progress)
            return f"Model pulled successfully: {files.digest}"

        return await transfer_response(work, "pull", where)

    @get(
        "/models/{name:path}",
        tags=TAGS,
        exception_handlers=_HANDLERS,
        responses=_errors(400, 401, 404),
    )
    async def get_stored_model(name: str) -> StoredModel:
        """A stored model (a reference, or a served model's name or alias): digest, tags,
        created, and the artifact's config."""
        name = name.strip("/")
        where = f"GET /models/{name}"
        info = await _blocking(where, store.inspect, reference_of(name))
        return stored_model(info)

    @delete(
        "/models/{name:path}",
        tags=TAGS,
        exception_handlers=_HANDLERS,
        status_code=200,
        responses=_errors(400, 401, 404, 409),
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

        result: list[DeleteAction] = await _blocking(where, remove)
        return result

    @post(
        "/models/{name_and_action:path}",
        tags=TAGS,
        exception_handlers=_HANDLERS,
        status_code=200,
        responses=_errors(400, 401, 403, 404, 502, 503),
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
                return to_response(_problem(exc, where))
            await _blocking(where, store.tag, reference_of(name), target)
            body = TagResponse(message=f"Model tagged successfully with {target!r}", target=target)
            return Response(body, status_code=201)

        ref = reference_of(name)

        def work(progress: LineProgress) -> str:
            return f"Model pushed successfully: {store.push(ref, progress)}"

        return await transfer_response(work, "push", where)

    installs_cache: list[Any] = [0.0, None]

    @get("/engines/status", tags=TAGS, exception_handlers=_HANDLERS, responses=_errors(401))
    async def engines_status() -> dict[str, str]:
        """Each engine: `installed VERSION`, or why it is not installed."""
        from modelrunner.engines.versions import engine_installs

        checked, found = installs_cache
        if found is None or time.monotonic() - checked > _STATUS_TTL:
            installs = await asyncio.to_thread(engine_installs, settings)
            found = engine_status((i.name, i.version, i.problem) for i in installs)
            installs_cache[:] = [time.monotonic(), found]
        return dict(found)

    @get("/engines/ps", tags=TAGS, exception_handlers=_HANDLERS, responses=_errors(401))
    async def engines_ps() -> list[RunningModel]:
        """The models with an engine instance loaded (or loading)."""
        known = {s.name: s for s in status.snapshot()}
        return running_models(registry.models(), known, time.time(), time.monotonic())

    @get("/engines/df", tags=TAGS, exception_handlers=_HANDLERS, responses=_errors(401))
    async def engines_df() -> DiskUsageReport:
        """Disk used by the store's models (engines are installed packages: 0)."""
        usage = await asyncio.to_thread(store.disk_usage)
        return DiskUsageReport(
            models_disk_usage=usage.blob_bytes,
            default_backend_disk_usage=0,
            reclaimable_bytes=usage.reclaimable_bytes,
            partial_bytes=usage.partial_bytes,
            free_bytes=usage.free_bytes,
        )

    @post(
        "/engines/unload",
        tags=TAGS,
        exception_handlers=_HANDLERS,
        status_code=200,
        responses=_errors(400, 401),
    )
    async def engines_unload(data: UnloadRequest) -> UnloadResponse:
        """Unload models now (`all`, or `models` by name or alias, or one `backend`'s):
        their instances drain and stop; the next request loads them again."""
        if control is None:
            return UnloadResponse(unloaded_runners=0)
        names = unload_targets(data, registry.models())
        return UnloadResponse(unloaded_runners=sum(control.unload(n) for n in names))

    return [
        create_model,
        get_stored_model,
        delete_model,
        model_action,
        engines_status,
        engines_ps,
        engines_df,
        engines_unload,
    ]


def _tags(store: Store) -> dict[str, str]:
    """Familiar reference -> digest, for every tag in the store."""
    return {tag: m.digest for m in store.list() for tag in m.tags}
