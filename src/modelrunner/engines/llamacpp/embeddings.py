"""/v1/embeddings: every input of a request decoded in one batch (as far as the context
holds them), one pooled vector per input. Chat models have no pooling of their own, so they
are mean-pooled; embedding models keep theirs."""

from __future__ import annotations

import base64
import threading
from collections.abc import Mapping, Sequence
from typing import Any, Final

import llama_cpp as C

from modelrunner.engines.llamacpp.model import Batch, Context, ContextSettings, Model
from modelrunner.engines.serving import RequestError

MAX_INPUTS: Final = 2048  # OpenAI's limit per request
SEQUENCES_PER_BATCH: Final = 64


def parse_inputs(value: object) -> list[str | list[int]]:
    """OpenAI's ``input``: a string, a list of strings, a token list or a list of those."""
    if isinstance(value, str):
        items: list[Any] = [value]
    elif isinstance(value, list) and value and all(isinstance(t, int) for t in value):
        items = [value]
    elif isinstance(value, list) and value:
        items = value
    else:
        raise RequestError(400, "input must be a non-empty string or list", "input")
    if len(items) > MAX_INPUTS:
        raise RequestError(400, f"input takes at most {MAX_INPUTS} items", "input")
    for i, item in enumerate(items):
        ok = (isinstance(item, str) and item) or (
            isinstance(item, list)
            and item
            and all(isinstance(t, int) and not isinstance(t, bool) for t in item)
        )
        if not ok:
            raise RequestError(
                400, f"input[{i}] must be a non-empty string or list of token ids", f"input[{i}]"
            )
    return items


def encode(vector: Sequence[float], encoding_format: str) -> list[float] | str:
    if encoding_format == "float":
        return list(vector)
    import numpy as np

    return base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode("ascii")


class Embedder:
    def __init__(self, model: Model, n_ctx: int, n_threads: int) -> None:
        arch = model.meta("general.architecture") or ""
        pooling = (
            C.LLAMA_POOLING_TYPE_UNSPECIFIED
            if model.meta(f"{arch}.pooling_type") is not None
            else C.LLAMA_POOLING_TYPE_MEAN
        )
        self.model = model
        self.context = Context(
            model,
            ContextSettings(
                n_ctx=n_ctx,
                n_seq_max=SEQUENCES_PER_BATCH,
                n_batch=n_ctx,
                n_ubatch=n_ctx,
                n_threads=n_threads,
                n_threads_batch=n_threads,
                embeddings=True,
                pooling_type=pooling,
                kv_unified=True,
            ),
        )
        self._batch = Batch(self.context.n_ctx)
        self._lock = threading.Lock()

    def answer(self, body: Mapping[str, Any], name: str) -> dict[str, Any]:
        encoding_format = body.get("encoding_format") or "float"
        if encoding_format not in ("float", "base64"):
            raise RequestError(
                400,
                f"encoding_format must be float or base64, got {encoding_format!r}",
                "encoding_format",
            )
        dimensions = body.get("dimensions")
        if dimensions is not None and dimensions != self.model.n_embd:
            raise RequestError(
                400,
                f"dimensions must be {self.model.n_embd} for this model (or left out)",
                "dimensions",
            )
        inputs = parse_inputs(body.get("input"))
        token_lists = [
            item if isinstance(item, list) else self.model.tokenize(item) for item in inputs
        ]
        for i, tokens in enumerate(token_lists):
            if not tokens:  # a text of control characters only: nothing to decode
                raise RequestError(400, f"input[{i}] gives no tokens", f"input[{i}]")
            if len(tokens) > self.context.n_ctx:
                raise RequestError(
                    400,
                    f"input[{i}] has {len(tokens)} tokens, over the context window of "
                    f"{self.context.n_ctx}",
                    f"input[{i}]",
                )
            if any(not 0 <= t < self.model.n_vocab for t in tokens):
                raise RequestError(
                    400, f"input[{i}] holds a token id outside the vocabulary", f"input[{i}]"
                )
        vectors = self.embed(token_lists)
        total = sum(len(t) for t in token_lists)
        return {
            "object": "list",
            "data": [
                {"object": "embedding", "index": i, "embedding": encode(v, encoding_format)}
                for i, v in enumerate(vectors)
            ],
            "model": name,
            "usage": {"prompt_tokens": total, "total_tokens": total},
        }

    def embed(self, token_lists: Sequence[Sequence[int]]) -> list[list[float]]:
        vectors: list[list[float]] = []
        with self._lock:
            start = 0
            while start < len(token_lists):
                group: list[Sequence[int]] = []
                size = 0
                for tokens in token_lists[start:]:
                    if group and (
                        size + len(tokens) > self.context.n_ctx or len(group) == SEQUENCES_PER_BATCH
                    ):
                        break
                    group.append(tokens)
                    size += len(tokens)
                vectors += self._decode(group)
                start += len(group)
        return vectors

    def _decode(self, group: Sequence[Sequence[int]]) -> list[list[float]]:
        self.context.clear()
        batch = self._batch
        batch.clear()
        for seq, tokens in enumerate(group):
            for pos, token in enumerate(tokens):
                batch.add(token, pos, seq, True)
        status = batch.decode(self.context)
        if status != 0:
            raise RuntimeError(f"llama_decode failed ({status}) on an embeddings batch")
        return [self.context.sequence_embedding(seq) for seq in range(len(group))]
