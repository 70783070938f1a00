"""What Ollama's ``/api/tags``, ``/api/show`` and ``/api/ps`` say about a served model:
facts read from its artifact (the store's config for an OCI model, the GGUF header for a
local file), and the pure shaping of those facts into Ollama's objects.

``OllamaFacts.read`` does I/O (the store, the GGUF header: run it in a thread); ``FactsCache``
keeps the facts per model file, so a listing reads each artifact once.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Final

from modelrunner import reference
from modelrunner.errors import ModelRunnerError
from modelrunner.http.ollama.translate import KEEP_ALIVE_FOREVER, timestamp
from modelrunner.model_files import from_local_path
from modelrunner.registry import ServedModel
from modelrunner.status import ModelStatus
from modelrunner.store.gguf_meta import discover_shards, read_fields
from modelrunner.store.store import Store

_MAX_CACHED: Final = 256
# Ollama's capability names per what a model is served for.
_CHAT_CAPABILITIES: Final = ["completion"]


@dataclass(frozen=True)
class OllamaFacts:
    format: str | None = None
    family: str | None = None
    parameter_size: str | None = None
    quantization: str | None = None
    size: int = 0
    digest: str | None = None
    modified: float = field(default_factory=time.time)
    metadata: dict[str, Any] = field(default_factory=dict)  # the GGUF header's fields
    context_size: int | None = None

    @staticmethod
    def read(status: ModelStatus, store: Store) -> OllamaFacts:
        """The facts of a served model's artifact; empty facts when it cannot be read (a
        listing must not fail because one artifact is gone)."""
        model = status.reference
        try:
            if model is None:
                return OllamaFacts()
            if reference.is_local_path(model):
                return _local_facts(status, model)
            return _store_facts(store, model)
        except (ModelRunnerError, OSError, ValueError):
            return OllamaFacts()


def _local_facts(status: ModelStatus, model: str) -> OllamaFacts:
    path = Path(model).expanduser()
    if not path.is_absolute() and status.file:
        path = Path(status.file).parent / path
    files = from_local_path(path)
    if files.format != "gguf":
        size = (
            sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
            if path.is_dir()
            else path.stat().st_size
        )
        return OllamaFacts(format=files.format, size=size, modified=path.stat().st_mtime)
    shards = discover_shards(files.path)
    fields, context = read_fields(shards)
    return OllamaFacts(
        format="gguf",
        family=fields.get("architecture"),
        parameter_size=fields.get("parameters"),
        quantization=fields.get("quantization"),
        size=sum(s.stat().st_size for s in shards),
        modified=files.path.stat().st_mtime,
        metadata=dict(fields.get("gguf") or {}),
        context_size=context,
    )


def _store_facts(store: Store, model: str) -> OllamaFacts:
    found = store.inspect(model)
    config = found["config"].get("config") or {}
    created = (found["config"].get("descriptor") or {}).get("created")
    return OllamaFacts(
        format=config.get("format") or found.get("format"),
        family=config.get("architecture"),
        parameter_size=config.get("parameters"),
        quantization=config.get("quantization"),
        size=int(found.get("size") or 0),
        digest=found.get("digest"),
        modified=_unix(created),
        metadata=dict(config.get("gguf") or {}),
        context_size=config.get("context_size"),
    )


def _unix(created: Any) -> float:
    if isinstance(created, str):
        try:
            return datetime.fromisoformat(created.replace("Z", "+00:00")).timestamp()
        except ValueError:
            pass
    return time.time()


class FactsCache:
    """Facts per (reference, digest, file): a changed artifact is read again."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._facts: dict[tuple[str | None, str | None, str | None], OllamaFacts] = {}

    def get(self, status: ModelStatus) -> OllamaFacts:
        key = (status.reference, status.digest, status.file)
        facts = self._facts.get(key)
        if facts is None:
            facts = OllamaFacts.read(status, self.store)
            if len(self._facts) >= _MAX_CACHED:
                self._facts.clear()
            self._facts[key] = facts
        return facts


# -- shaping (pure) -------------------------------------------------------------------
def details(facts: OllamaFacts) -> dict[str, Any]:
    return {
        "parent_model": "",
        "format": facts.format or "",
        "family": facts.family or "",
        "families": [facts.family] if facts.family else [],
        "parameter_size": facts.parameter_size or "",
        "quantization_level": facts.quantization or "",
    }


def tags_entry(name: str, facts: OllamaFacts) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "name": name,
        "model": name,
        "modified_at": timestamp(facts.modified),
        "size": facts.size,
        "digest": (facts.digest or "").removeprefix("sha256:"),
        "details": details(facts),
    }
    return entry


def ps_entry(
    model: ServedModel,
    facts: OllamaFacts,
    keep_alive: float | None,
    now_unix: float,
    now_mono: float,
) -> dict[str, Any]:
    """A loaded model; ``expires_at`` is when keep_alive unloads it if no request comes
    (far in the future for a model kept loaded)."""
    entry = tags_entry(model.name, facts)
    del entry["modified_at"]
    endpoint = model.endpoint
    if keep_alive is not None and keep_alive <= KEEP_ALIVE_FOREVER and endpoint is not None:
        idle = 0.0 if endpoint.in_flight else now_mono - endpoint.last_used
        entry["expires_at"] = timestamp(now_unix + max(0.0, keep_alive - idle))
    else:
        entry["expires_at"] = "2318-08-08T00:00:00Z"  # Ollama's way to say "never"
    entry["size_vram"] = 0
    return entry


def show_answer(model: ServedModel, facts: OllamaFacts, verbose: bool) -> dict[str, Any]:
    """``/api/show``: details, the chat template, model_info from the GGUF header."""
    metadata = facts.metadata
    template = str(metadata.get("tokenizer.chat_template", ""))
    info = {k: v for k, v in metadata.items() if k != "tokenizer.chat_template"}
    if not verbose:
        info = {k: v for k, v in info.items() if not k.startswith("tokenizer.ggml.")}
    capabilities = ["embedding"] if model.embeddings else list(_CHAT_CAPABILITIES)
    lines = [f"# served by modelrunner as {model.name} ({model.engine})"]
    if template:
        lines.append(f'TEMPLATE """{template}"""')
    return {
        "modelfile": "\n".join(lines) + "\n",
        "parameters": "",
        "template": template,
        "details": details(facts),
        "model_info": info,
        "capabilities": capabilities,
        "modified_at": timestamp(facts.modified),
    }
