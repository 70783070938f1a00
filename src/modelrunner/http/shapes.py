"""Shapes every API surface shares: the model listings, health and readiness."""

from __future__ import annotations

from typing import Literal

import msgspec


# -- answers ------------------------------------------------------------------------
class ModelObject(msgspec.Struct, kw_only=True):
    """OpenAI's model object, with the engine, aliases and readiness added."""

    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "modelrunner"
    engine: str
    aliases: list[str]
    ready: bool


class ModelList(msgspec.Struct, kw_only=True):
    object: Literal["list"] = "list"
    data: list[ModelObject]


class DmrModelConfig(msgspec.Struct, kw_only=True, omit_defaults=True):
    format: str | None = None
    engine: str | None = None
    reference: str | None = None


class DmrModel(msgspec.Struct, kw_only=True):
    """One entry of Docker Model Runner's ``GET /models`` listing."""

    id: str
    tags: list[str]
    created: int
    config: DmrModelConfig


class Health(msgspec.Struct):
    status: Literal["ok"] = "ok"


class Readiness(msgspec.Struct, kw_only=True):
    ready: bool
    models: list[str]
    not_ready: list[str]
