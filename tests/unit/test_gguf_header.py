"""The fast GGUF header reader gives what gguf.GGUFReader gives (store/gguf_meta.py), on a
GGUF written here with scalars, short arrays and a vocabulary-sized string array."""

from __future__ import annotations

from pathlib import Path

import pytest

from modelrunner.errors import StoreError
from modelrunner.gguf_header import read_header
from modelrunner.store.gguf_meta import read_fields


def test_same_fields_as_the_gguf_reader(tmp_path: Path) -> None:
    import gguf
    import numpy as np

    path = tmp_path / "tiny.gguf"
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_block_count(2)
    writer.add_head_count(4)
    writer.add_head_count_kv([2, 1])  # per layer
    writer.add_embedding_length(64)
    writer.add_context_length(256)
    writer.add_float32("llama.rope.freq_base", 10000.0)
    writer.add_bool("tokenizer.ggml.add_bos_token", True)
    writer.add_token_list([f"token{i}" for i in range(5000)])  # skipped: too long
    writer.add_array("llama.long_numbers", list(range(500)))  # skipped too
    writer.add_tensor("w", np.zeros((4, 4), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()

    header = read_header(path)
    assert header == read_fields([path])[0]["gguf"]
    assert header["llama.attention.head_count_kv"] == "2, 1"
    assert "tokenizer.ggml.tokens" not in header


def test_not_a_gguf(tmp_path: Path) -> None:
    path = tmp_path / "x.gguf"
    path.write_bytes(b"GGUF\x03\x00\x00\x00" + b"\x00" * 4)
    with pytest.raises(StoreError, match="not a readable GGUF header"):
        read_header(path)
