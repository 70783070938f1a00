"""The Ollama API's request bodies, as msgspec Structs: what the OpenAPI document shows and
what the routes decode. Unknown fields are allowed, as Ollama allows them; the fields mr
cannot honour are refused by the translator (``ollama_translate``) with a clear 400."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from msgspec import Meta

# "json", or a JSON schema the answer must follow.
Format = str | dict[str, Any]
# A duration ("5m", "1h", "-1", "0") or a number of seconds; negative: keep loaded.
KeepAlive = str | float | int


class OllamaOptions(msgspec.Struct, kw_only=True):
    """The model options mr maps to the OpenAI call; any other option is ignored and named
    in the answer's ``Warning`` header."""

    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    min_p: float | None = None
    typical_p: float | None = None
    seed: int | None = None
    num_predict: int | None = None
    stop: list[str] | str | None = None
    repeat_penalty: float | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None


class OllamaMessage(msgspec.Struct, kw_only=True):
    role: Annotated[str, Meta(min_length=1)]
    content: str = ""
    images: list[str] | None = None
    tool_calls: list[dict[str, Any]] | None = None
    tool_name: str | None = None
    thinking: str | None = None


class OllamaChatRequest(msgspec.Struct, kw_only=True):
    model: Annotated[str, Meta(min_length=1)]
    messages: list[OllamaMessage] = msgspec.field(default_factory=list)
    tools: list[dict[str, Any]] | None = None
    format: Format | None = None
    options: dict[str, Any] | None = None
    stream: bool = True
    keep_alive: KeepAlive | None = None


class OllamaGenerateRequest(msgspec.Struct, kw_only=True):
    model: Annotated[str, Meta(min_length=1)]
    prompt: str = ""
    system: str | None = None
    raw: bool = False
    format: Format | None = None
    options: dict[str, Any] | None = None
    stream: bool = True
    keep_alive: KeepAlive | None = None
    images: list[str] | None = None
    suffix: str | None = None
    template: str | None = None
    context: list[int] | None = None


class OllamaEmbedRequest(msgspec.Struct, kw_only=True):
    model: Annotated[str, Meta(min_length=1)]
    input: str | list[str]
    truncate: bool = True
    options: dict[str, Any] | None = None
    keep_alive: KeepAlive | None = None


class OllamaEmbeddingsRequest(msgspec.Struct, kw_only=True):
    model: Annotated[str, Meta(min_length=1)]
    prompt: str
    options: dict[str, Any] | None = None
    keep_alive: KeepAlive | None = None


class OllamaModelRequest(msgspec.Struct, kw_only=True):
    """``show``, ``pull`` and ``delete``: the model by ``model`` (or the older ``name``)."""

    model: str = ""
    name: str = ""
    stream: bool = True
    insecure: bool = False
    verbose: bool = False

    @property
    def which(self) -> str:
        return self.model or self.name
