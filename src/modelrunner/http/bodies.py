"""Request and answer shapes: what the OpenAPI document shows and the router checks.

The request Structs hold only what routing needs (``model``, ``stream``) and the one field
each operation cannot do without; unknown fields are allowed, and the body is forwarded
to the engine byte for byte, so engines see every field the client sent.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

ModelField = Annotated[str, Meta(min_length=1, description="A served model name or alias.")]
# A string, or a list of strings, token ids or lists of token ids (checked by the engine).
Prompt = str | list[Any]


class ChatCompletionRequest(msgspec.Struct, kw_only=True):
    model: ModelField
    messages: Annotated[list[dict[str, Any]], Meta(min_length=1)]
    stream: bool | None = None


class CompletionRequest(msgspec.Struct, kw_only=True):
    model: ModelField
    prompt: Prompt
    stream: bool | None = None


class EmbeddingRequest(msgspec.Struct, kw_only=True):
    model: ModelField
    input: Prompt


class ImageRequest(msgspec.Struct, kw_only=True):
    model: ModelField
    prompt: Annotated[str, Meta(min_length=1)]


AnyRequest = ChatCompletionRequest | CompletionRequest | EmbeddingRequest | ImageRequest


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
