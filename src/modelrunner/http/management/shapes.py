"""Model management over HTTP, the deciding half: Docker Model Runner's shapes for the
store and engine routes, store errors as HTTP problems, and pull/push progress as JSON
lines. Pure: no I/O, no Litestar."""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any, Literal

import msgspec

from modelrunner.errors import (
    DigestMismatch,
    InvalidReference,
    ModelInUse,
    ModelNotFound,
    RegistryError,
    RegistryUnauthorized,
    RegistryUnavailable,
    StoreError,
    UsageError,
)
from modelrunner.http.errors import ErrorAnswer, problem
from modelrunner.registry import ServedModel
from modelrunner.status import ModelStatus


# -- bodies -----------------------------------------------------------------------------
class CreateModelRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """``POST /models/create``: pull ``from`` into the store."""

    from_: str = msgspec.field(name="from")
    # A registry token for this pull (sent as ``Authorization: Bearer``); never logged.
    bearer_token: str | None = msgspec.field(name="bearer-token", default=None)


class UnloadRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """``POST /engines/unload``: every loaded model, or those named, or one engine's."""

    all: bool = False
    backend: str = ""
    models: list[str] = msgspec.field(default_factory=list)


class UnloadResponse(msgspec.Struct):
    unloaded_runners: int


class StoredModel(msgspec.Struct, kw_only=True):
    """``GET /models/{name}``: a model in the store, as Docker Model Runner shows one."""

    id: str  # the manifest digest
    tags: list[str]
    created: int
    config: dict[str, Any]


class DeleteAction(msgspec.Struct, omit_defaults=True):
    Untagged: str | None = None
    Deleted: str | None = None


class TagResponse(msgspec.Struct):
    message: str
    target: str


class RunningModel(msgspec.Struct, kw_only=True):
    """One entry of ``GET /engines/ps``."""

    backend_name: str
    model_name: str
    mode: Literal["completion", "embedding", "image-generation"]
    last_used: str | None  # RFC 3339, None before the first request
    in_use: bool
    loading: bool
    instance: str | None


class DiskUsageReport(msgspec.Struct, kw_only=True):
    models_disk_usage: int  # bytes of the store's blobs
    default_backend_disk_usage: int  # engines are installed packages; nothing downloaded
    reclaimable_bytes: int
    partial_bytes: int
    free_bytes: int


class ProgressLayer(msgspec.Struct):
    id: str
    size: int
    current: int


class ProgressMessage(msgspec.Struct, kw_only=True):
    """One JSON line of a streamed pull or push (Docker Model Runner's progress lines)."""

    type: Literal["progress", "success", "warning", "error"]
    message: str
    total: int = 0
    layer: ProgressLayer | None = None
    mode: Literal["pull", "push"]


# -- deciding ---------------------------------------------------------------------------
def tag_target(repo: str | None, tag: str | None) -> str:
    """``?repo=...&tag=...`` of ``POST /models/{name}/tag`` as one reference."""
    if not repo or not tag:
        missing = " and ".join(n for n, v in (("repo", repo), ("tag", tag)) if not v)
        raise UsageError(f"POST /models/{{name}}/tag needs the query parameter(s) {missing}")
    return f"{repo}:{tag}"


def split_action(path: str) -> tuple[str, str]:
    """``ai/smollm2:q4/tag`` -> (``ai/smollm2:q4``, ``tag``)."""
    name, _, action = path.strip("/").rpartition("/")
    return name, action


def delete_actions(
    removed_tags: Iterable[str], digest: str, still_tagged: bool
) -> list[DeleteAction]:
    """What ``DELETE /models/{name}`` did: the tags it removed, and the model when it went."""
    actions = [DeleteAction(Untagged=t) for t in removed_tags]
    if not still_tagged:
        actions.append(DeleteAction(Deleted=digest))
    return actions


def created_unix(created: Any) -> int:
    """The artifact's ``descriptor.created`` (RFC 3339) as unix seconds; 0 when unknown."""
    if not isinstance(created, str):
        return 0
    try:
        return int(datetime.fromisoformat(created.replace("Z", "+00:00")).timestamp())
    except ValueError:
        return 0


def stored_model(info: Mapping[str, Any]) -> StoredModel:
    """``Store.inspect``'s answer in Docker Model Runner's shape."""
    raw = info.get("config") or {}
    return StoredModel(
        id=str(info["digest"]),
        tags=list(info.get("tags") or ()),
        created=created_unix((raw.get("descriptor") or {}).get("created")),
        config=dict(raw.get("config") or {}),
    )


def _mode(model: ServedModel) -> Literal["completion", "embedding", "image-generation"]:
    if model.engine == "diffusers":
        return "image-generation"
    return "embedding" if model.embeddings else "completion"


def running_models(
    models: Iterable[ServedModel],
    status: Mapping[str, ModelStatus],
    now_wall: float,
    now_mono: float,
) -> list[RunningModel]:
    """``GET /engines/ps``: models with an instance loaded or loading."""
    out = []
    for model in models:
        known = status.get(model.name)
        loading = known is not None and known.phase in ("pulling", "starting")
        endpoint = model.endpoint
        if endpoint is None and not loading:
            continue
        last_used = None
        if endpoint is not None:
            wall = now_wall - (now_mono - endpoint.last_used)
            last_used = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(wall))
        out.append(
            RunningModel(
                backend_name=model.engine,
                model_name=model.name,
                mode=_mode(model),
                last_used=last_used,
                in_use=endpoint is not None and endpoint.in_flight > 0,
                loading=loading and endpoint is None,
                instance=endpoint.instance_id if endpoint is not None else None,
            )
        )
    return out


def unload_targets(request: UnloadRequest, models: Iterable[ServedModel]) -> list[str]:
    """The served names ``POST /engines/unload`` asks for (aliases resolve to names)."""
    chosen = []
    asked = set(request.models)
    for model in models:
        named = asked.intersection((model.name, *model.aliases))
        by_backend = bool(request.backend) and model.engine == request.backend
        if request.all or named or (by_backend and not asked):
            chosen.append(model.name)
    return chosen


def engine_status(installs: Iterable[tuple[str, str | None, str | None]]) -> dict[str, str]:
    """``GET /engines/status``: engine -> ``installed VERSION`` or why not."""
    return {
        name: f"installed {version}" if version else f"not installed: {problem_text or '?'}"
        for name, version, problem_text in installs
    }


def store_problem(exc: BaseException, where: str) -> ErrorAnswer | None:
    """A store failure as an HTTP problem; None for anything that is not one."""
    text = f"{where}: {exc}"
    if isinstance(exc, InvalidReference):
        return problem(400, text, code="invalid_reference")
    if isinstance(exc, UsageError):
        return problem(400, text)
    if isinstance(exc, ModelNotFound):
        return problem(404, text, code="model_not_found")
    if isinstance(exc, ModelInUse):
        return problem(409, text, code="model_in_use")
    if isinstance(exc, RegistryUnauthorized):
        # Not 401: that would read as a wrong key for this server.
        return problem(403, text, code="registry_unauthorized")
    if isinstance(exc, RegistryUnavailable):
        return problem(503, text, code="registry_unavailable", headers=(("retry-after", "5"),))
    if isinstance(exc, RegistryError | DigestMismatch):
        return problem(502, text, code="registry_failed")
    if isinstance(exc, StoreError):
        return problem(422, text, code="invalid_model")  # e.g. not a model artifact
    return None


def progress_line(message: ProgressMessage) -> bytes:
    return msgspec.json.encode(message) + b"\n"
