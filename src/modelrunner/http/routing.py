"""Pure routing decisions: which engine a path names, whether a model may be served under
it, and the model listings. No I/O; every function takes what it decides on."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from modelrunner.errors import UnknownModel
from modelrunner.http.shapes import (
    DmrModel,
    DmrModelConfig,
    ModelList,
    ModelObject,
    Readiness,
)
from modelrunner.manifest.engines import ENGINE_FOR_FORMAT, ENGINES
from modelrunner.registry import ServedModel
from modelrunner.status import ModelStatus

_FORMAT_FOR_ENGINE: dict[str, str] = {engine: fmt for fmt, engine in ENGINE_FOR_FORMAT.items()}


def unknown_engine_message(segment: str) -> str | None:
    """None when ``segment`` names an engine, else what is wrong with it."""
    if segment in ENGINES:
        return None
    return f"Unknown engine '{segment}' in the path: expected one of {', '.join(ENGINES)}"


def check_engine(model: ServedModel, segment: str | None, op: str) -> None:
    """Refuse a model that the engine named in the path does not serve."""
    if segment is None or model.engine == segment:
        return
    raise UnknownModel(
        f"The model '{model.name}' is served by the {model.engine} engine, not {segment}: "
        f"use /engines/{model.engine}/v1/{op} or /engines/v1/{op}"
    )


def model_object(model: ServedModel) -> ModelObject:
    return ModelObject(
        id=model.name,
        created=int(model.created),
        engine=model.engine,
        aliases=list(model.aliases),
        ready=model.endpoint is not None,
    )


def model_list(models: Iterable[ServedModel], segment: str | None) -> ModelList:
    return ModelList(
        data=[model_object(m) for m in models if segment is None or m.engine == segment]
    )


def dmr_models(models: Iterable[ServedModel], status: Mapping[str, ModelStatus]) -> list[DmrModel]:
    """Docker Model Runner's ``GET /models``: id (digest when known), tags, created, config."""
    listing = []
    for model in models:
        known = status.get(model.name)
        reference = known.reference if known else None
        tags = [model.name, *model.aliases]
        if reference and reference not in tags:
            tags.append(reference)
        listing.append(
            DmrModel(
                id=(known.digest if known and known.digest else model.name),
                tags=tags,
                created=int(model.created),
                config=DmrModelConfig(
                    format=_FORMAT_FOR_ENGINE.get(model.engine),
                    engine=model.engine,
                    reference=reference,
                ),
            )
        )
    return listing


def readiness(snapshot: Iterable[ModelStatus], names: tuple[str, ...], ready: bool) -> Readiness:
    """The /readyz body: the models asked about (every model when none) and which are not
    ready; a name no manifest serves is not ready."""
    models = list(snapshot)
    phase = {served: m.phase for m in models for served in (m.name, *m.aliases)}
    asked = list(names) if names else [m.name for m in models]
    return Readiness(
        ready=ready, models=asked, not_ready=[n for n in asked if phase.get(n) != "ready"]
    )
