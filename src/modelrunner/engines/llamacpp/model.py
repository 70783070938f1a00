"""The weights, their vocabulary, contexts and batches: thin wrappers over llama_cpp's C API.

Only this module, sampling.py and the scheduler call llama_cpp; everything they need from
the C side goes through these few classes, so the rest of the engine is plain Python.
"""

from __future__ import annotations

import ctypes
import functools
import logging
from dataclasses import dataclass
from typing import Any

import llama_cpp as C

from modelrunner.engines.llamacpp.structured.loop_guard import closing_tokens
from modelrunner.engines.llamacpp.structured.mask import (
    GrammarMasks,
    llama_tokenizer,
    vocabulary_pieces,
)

log = logging.getLogger("modelrunner.llamacpp")

MAX_VIEWS = 256  # logits views a context keeps (one per output row used)


def quiet_llama(verbose: bool) -> None:
    """llama-cpp-python prints every llama.cpp log line unless its logger says otherwise."""
    logging.getLogger("llama-cpp-python").setLevel(logging.DEBUG if verbose else logging.ERROR)


def load_mode(use_mmap: bool, use_mlock: bool) -> int:
    """llama.cpp's ``load_mode`` for the ``use_mmap`` and ``use_mlock`` flags.

    llama.cpp replaced its two booleans with this one enum; llama-cpp-python's struct has
    no ``use_mmap`` field any more, so setting one is silently ignored by ctypes."""
    if use_mmap:
        return C.LLAMA_LOAD_MODE_MMAP_MLOCK if use_mlock else C.LLAMA_LOAD_MODE_MMAP
    return C.LLAMA_LOAD_MODE_MLOCK if use_mlock else C.LLAMA_LOAD_MODE_NONE


class Model:
    """The weights, loaded once; every context of the process shares them."""

    def __init__(
        self, path: str, n_gpu_layers: int = 0, use_mmap: bool = True, use_mlock: bool = False
    ) -> None:
        C.llama_backend_init()
        params = C.llama_model_default_params()
        params.n_gpu_layers = n_gpu_layers
        params.load_mode = load_mode(use_mmap, use_mlock)
        ptr = C.llama_model_load_from_file(path.encode(), params)
        if not ptr:
            raise OSError(f"llama.cpp could not load {path}")
        self.ptr = ptr
        self.vocab = C.llama_model_get_vocab(ptr)
        self.n_vocab: int = C.llama_vocab_n_tokens(self.vocab)
        self.n_embd: int = C.llama_model_n_embd(ptr)
        self.n_ctx_train: int = C.llama_model_n_ctx_train(ptr)
        self._pieces: dict[int, bytes] = {}
        self._piece_buf = ctypes.create_string_buffer(256)
        self._shown = self._tool_call_markers()
        # The token an answer ends with when a grammar allows nothing more.
        eot = C.llama_vocab_eot(self.vocab)
        self.end_token: int = eot if eot >= 0 else C.llama_vocab_eos(self.vocab)
        vocab = self.vocab
        self.masks = GrammarMasks(lambda: llama_tokenizer(vocab))

    def tokenize(
        self, text: str, add_special: bool = True, parse_special: bool = True
    ) -> list[int]:
        data = text.encode("utf-8")
        size = len(data) + 8
        buf = (C.llama_token * size)()
        n = C.llama_tokenize(self.vocab, data, len(data), buf, size, add_special, parse_special)
        if n < 0:  # more tokens than bytes + 8 (cannot happen with byte-level vocabularies)
            size = -n
            buf = (C.llama_token * size)()
            n = C.llama_tokenize(self.vocab, data, len(data), buf, size, add_special, parse_special)
        return list(buf[:n])

    def detokenize(self, tokens: list[int]) -> str:
        """The text of ``tokens``, special tokens written out (what /detokenize answers).
        Its own buffer: handler threads call it beside the scheduler's ``piece``."""
        ids = (C.llama_token * max(1, len(tokens)))(*tokens)
        size = 8 * len(tokens) + 16
        buf = ctypes.create_string_buffer(size)
        n = C.llama_detokenize(self.vocab, ids, len(tokens), buf, size, False, True)
        if n < 0:  # the buffer was too small: -n bytes are needed
            size = -n
            buf = ctypes.create_string_buffer(size)
            n = C.llama_detokenize(self.vocab, ids, len(tokens), buf, size, False, True)
        return buf.raw[: max(n, 0)].decode("utf-8", errors="replace")

    def piece(self, token: int) -> bytes:
        """The bytes of one token (special tokens render as nothing, but tool-call markers)."""
        cached = self._pieces.get(token)
        if cached is None:
            shown = token in self._shown
            n = C.llama_token_to_piece(self.vocab, token, self._piece_buf, 256, 0, shown)
            cached = self._piece_buf.raw[: max(n, 0)]
            self._pieces[token] = cached
        return cached

    @functools.cached_property
    def closers(self) -> dict[int, Any]:
        """The loop guard's closing tokens (``structured.loop_guard.closing_tokens``), built
        on the first grammar, in that request's thread."""
        return closing_tokens(vocabulary_pieces(self.vocab))

    def _tool_call_markers(self) -> frozenset[int]:
        """Special tokens that mark tool calls ([TOOL_CALLS], <|python_tag|>...): rendered
        in the output, or the tool-call parsers could not find the calls."""
        from modelrunner.engines.llamacpp.structured.formats import MARKERS

        found = (self.tokenize(m, add_special=False, parse_special=True) for m in MARKERS)
        return frozenset(tokens[0] for tokens in found if len(tokens) == 1)

    def token_text(self, token: int) -> str:
        """A token as written in templates (BOS, EOS...), special tokens included."""
        buf = ctypes.create_string_buffer(256)
        n = C.llama_token_to_piece(self.vocab, token, buf, 256, 0, True)
        return buf.raw[: max(n, 0)].decode("utf-8", errors="replace")

    def is_eog(self, token: int) -> bool:
        return bool(C.llama_vocab_is_eog(self.vocab, token))

    @property
    def bos_text(self) -> str:
        token = C.llama_vocab_bos(self.vocab)
        return self.token_text(token) if token >= 0 else ""

    @property
    def eos_text(self) -> str:
        token = C.llama_vocab_eos(self.vocab)
        return self.token_text(token) if token >= 0 else ""

    def meta(self, key: str) -> str | None:
        buf = ctypes.create_string_buffer(1 << 16)
        n = C.llama_model_meta_val_str(self.ptr, key.encode(), buf, len(buf))
        if n < 0:
            return None
        if n >= len(buf):
            buf = ctypes.create_string_buffer(n + 1)
            C.llama_model_meta_val_str(self.ptr, key.encode(), buf, len(buf))
        return buf.value.decode("utf-8", errors="replace")

    def chat_template(self) -> str | None:
        """The GGUF's default chat template (tokenizer.chat_template), if it has one."""
        raw = C.llama_model_chat_template(self.ptr, None)
        return raw.decode("utf-8", errors="replace") if raw else None


@dataclass(frozen=True, slots=True)
class ContextSettings:
    n_ctx: int  # all sequences together
    n_seq_max: int
    n_batch: int
    n_ubatch: int
    n_threads: int
    n_threads_batch: int
    embeddings: bool = False
    pooling_type: int = C.LLAMA_POOLING_TYPE_UNSPECIFIED
    flash_attn: bool | None = None  # None: llama.cpp decides
    rope_freq_base: float = 0.0
    rope_freq_scale: float = 0.0
    type_k: int | None = None
    type_v: int | None = None
    kv_unified: bool = False  # False: each sequence has n_ctx / n_seq_max cells of its own


class Context:
    """A llama.cpp context: KV cache for ``n_seq_max`` sequences over one ``Model``."""

    def __init__(self, model: Model, settings: ContextSettings) -> None:
        params = C.llama_context_default_params()
        params.n_ctx = settings.n_ctx
        params.n_seq_max = settings.n_seq_max
        params.n_batch = settings.n_batch
        params.n_ubatch = settings.n_ubatch
        params.n_threads = settings.n_threads
        params.n_threads_batch = settings.n_threads_batch
        params.embeddings = settings.embeddings
        params.pooling_type = settings.pooling_type
        params.kv_unified = settings.kv_unified
        if settings.flash_attn is not None:
            params.flash_attn_type = (
                C.LLAMA_FLASH_ATTN_TYPE_ENABLED
                if settings.flash_attn
                else C.LLAMA_FLASH_ATTN_TYPE_DISABLED
            )
        params.rope_freq_base = settings.rope_freq_base
        params.rope_freq_scale = settings.rope_freq_scale
        if settings.type_k is not None:
            params.type_k = settings.type_k
        if settings.type_v is not None:
            params.type_v = settings.type_v
        ptr = C.llama_init_from_model(model.ptr, params)
        if not ptr:
            raise OSError("llama.cpp could not create a context (out of memory?)")
        self.ptr = ptr
        self.model = model
        self.memory = C.llama_get_memory(ptr)
        self.n_ctx: int = C.llama_n_ctx(ptr)
        self.n_ctx_seq: int = C.llama_n_ctx_seq(ptr)
        self.n_batch = settings.n_batch
        self._views: dict[int | None, Any] = {}  # logits views by address (``logits``)

    def pooling_type(self) -> int:
        return int(C.llama_pooling_type(self.ptr))

    def forget(self, seq: int, start: int = 0) -> bool:
        """Drop ``seq``'s cached positions from ``start`` on (all of them with start 0)."""
        return bool(C.llama_memory_seq_rm(self.memory, seq, start, -1))

    def clear(self) -> None:
        C.llama_memory_clear(self.memory, True)

    def logits(self, index: int) -> Any:
        """The raw logits of the batch's ``index``-th output, as a numpy view (no copy).

        The views are kept by address: llama.cpp writes every step's logits into the same
        buffer, and building a view (``np.ctypeslib.as_array``) cost 50 us per token right
        after a decode, when the decode has pushed the interpreter out of the caches."""
        pointer = C.llama_get_logits_ith(self.ptr, index)
        address = ctypes.cast(pointer, ctypes.c_void_p).value
        view = self._views.get(address)
        if view is None:
            import numpy as np

            if len(self._views) >= MAX_VIEWS:  # stale addresses of a reallocated buffer
                self._views.clear()
            view = np.ctypeslib.as_array(pointer, shape=(self.model.n_vocab,))
            self._views[address] = view
        return view

    def sequence_embedding(self, seq: int) -> list[float]:
        pointer = C.llama_get_embeddings_seq(self.ptr, seq)
        if not pointer:
            raise RuntimeError("the context pools no embeddings")
        return list(pointer[: self.model.n_embd])

    def close(self) -> None:
        if self.ptr:
            C.llama_free(self.ptr)
            self.ptr = None


class Batch:
    """A reusable llama_batch of up to ``capacity`` tokens, one sequence id per token."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.raw = C.llama_batch_init(capacity, 0, 1)
        self.size = 0
        # The arrays, fetched once: each struct field access builds a new ctypes object.
        self._token = self.raw.token
        self._pos = self.raw.pos
        self._logits = self.raw.logits
        self._seq = [self.raw.seq_id[i] for i in range(capacity)]
        n_seq_id = self.raw.n_seq_id
        for i in range(capacity):
            n_seq_id[i] = 1

    def clear(self) -> None:
        self.size = 0

    def add(self, token: int, pos: int, seq: int, wants_logits: bool) -> int:
        """Append a token; returns its index in the batch."""
        i = self.size
        self._token[i] = token
        self._pos[i] = pos
        self._seq[i][0] = seq
        self._logits[i] = wants_logits
        self.size = i + 1
        return i

    def decode(self, context: Context) -> int:
        """llama_decode: 0 on success (llama.cpp releases the GIL while it computes)."""
        self.raw.n_tokens = self.size
        return int(C.llama_decode(context.ptr, self.raw))

    def close(self) -> None:
        if self.capacity:
            C.llama_batch_free(self.raw)
            self.capacity = 0
