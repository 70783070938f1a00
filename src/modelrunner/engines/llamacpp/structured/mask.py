"""The token mask: llguidance matchers over the model's vocabulary, compiled once per grammar.

A grammar is compiled in the request's own thread (``prepare``, which llguidance runs
without the GIL), so a slow schema never stalls the scheduler thread and the other slots;
the scheduler only copies the compiled matcher. Compiled matchers are kept by the grammar's
hash, so a schema sent again costs a copy.
"""

from __future__ import annotations

import collections
import ctypes
import threading
from collections.abc import Callable
from typing import Any, Final

import llama_cpp as C
import llguidance

from modelrunner.engines.llamacpp.structured.errors import InvalidRequest
from modelrunner.engines.llamacpp.structured.json_schema import LIMITS, grammar_key

CACHED_GRAMMARS: Final = 128
PIECE_BYTES: Final = 16 * 1024  # longer pieces than any vocabulary holds


class GrammarMasks:
    """One vocabulary as llguidance sees it, and the grammars compiled for it."""

    def __init__(self, tokenizer: Callable[[], Any]) -> None:
        """``tokenizer``: makes the llguidance tokenizer, on first use (``llama_tokenizer``)."""
        self._make_tokenizer = tokenizer
        self._tokenizer: Any = None
        self._compiled: collections.OrderedDict[str, Any] = collections.OrderedDict()
        self._lock = threading.Lock()

    def prepare(self, grammar: str, param: str) -> None:
        """Compile ``grammar`` for this vocabulary (or find it compiled); a 400 if it fails."""
        self._prototype(grammar, param)

    def matcher(self, grammar: str) -> Any:
        """A fresh matcher at the grammar's start (compiled now only if ``prepare`` was not
        called, as for a grammar the engine made itself)."""
        return self._prototype(grammar, "grammar").deep_copy()

    def cached(self) -> int:
        """How many grammars are compiled and kept."""
        with self._lock:
            return len(self._compiled)

    def _prototype(self, grammar: str, param: str) -> Any:
        key = grammar_key(grammar)
        with self._lock:
            found = self._compiled.get(key)
            if found is not None:
                self._compiled.move_to_end(key)
                return found
        matcher = llguidance.LLMatcher(
            self.tokenizer(), grammar, log_level=0, limits=llguidance.LLParserLimits(**LIMITS)
        )
        # A grammar with no way to start (a $ref loop without a base case) fails only when a
        # mask is asked for: ask once here, on a copy, so that is a 400 too.
        probe = matcher.deep_copy()
        probe.compute_bitmask()
        if matcher.is_error() or probe.is_error():
            message = (matcher.get_error() or probe.get_error()).splitlines()[0][:300]
            raise InvalidRequest(f"the grammar cannot be compiled: {message}", param)
        with self._lock:
            self._compiled[key] = matcher
            while len(self._compiled) > CACHED_GRAMMARS:
                self._compiled.popitem(last=False)
        return matcher

    def tokenizer(self) -> Any:
        with self._lock:
            if self._tokenizer is None:
                self._tokenizer = self._make_tokenizer()
            return self._tokenizer


def llama_tokenizer(vocab: Any) -> Any:
    """llama.cpp's vocabulary for llguidance, every end-of-generation token an end: about a
    second for a 49k vocabulary, so built once per engine, on the first grammar.

    As ``llguidance.llamacpp.lltokenizer_from_vocab``, which calls a deprecated function
    (a warning per token): control tokens, and user-defined ones written like ``<x>``, are
    marked special (a leading 0xFF), so grammar text never matches them."""
    n = C.llama_vocab_n_tokens(vocab)
    ends = [t for t in range(n) if C.llama_vocab_is_eog(vocab, t)]
    tokenize = ctypes.cast(C.llama_cpp._lib.llama_tokenize, ctypes.c_void_p).value
    return llguidance.LLTokenizer.from_llamacpp(  # type: ignore[attr-defined]
        tokens=vocabulary_pieces(vocab),
        vocab_ptr=vocab,
        tokenize_fptr=tokenize,
        eos_token=ends or C.llama_vocab_eos(vocab),
        slices=None,
    )


def vocabulary_pieces(vocab: Any) -> list[bytes]:
    """Every token's bytes, control tokens (and user-defined ones written like ``<x>``)
    behind a leading 0xFF, which no text starts with."""
    buffer = ctypes.create_string_buffer(PIECE_BYTES)
    pieces: list[bytes] = []
    for token in range(C.llama_vocab_n_tokens(vocab)):
        size = C.llama_token_to_piece(vocab, token, buffer, PIECE_BYTES, 0, True)
        piece = buffer.raw[: max(size, 0)]
        attributes = C.llama_vocab_get_attr(vocab, token)
        if attributes & C.LLAMA_TOKEN_ATTR_CONTROL or (
            attributes & C.LLAMA_TOKEN_ATTR_USER_DEFINED
            and piece.startswith(b"<")
            and piece.endswith(b">")
        ):
            piece = b"\xff" + piece
        pieces.append(piece)
    return pieces
