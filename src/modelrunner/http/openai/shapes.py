"""Request and answer shapes: what the OpenAPI document shows and the router checks.

The request Structs hold only what routing needs (``model``, ``stream``) and the one field
each operation cannot do without; unknown fields are allowed, and the body is forwarded
to the engine byte for byte, so engines see every field the client sent.
"""

from __future__ import annotations

from typing import Annotated, Any

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
