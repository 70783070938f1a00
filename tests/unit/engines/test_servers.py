"""The project's own engine servers: their request checks and that they accept every
runtime flag the allow-list lets through (no engine loaded)."""

from __future__ import annotations

from typing import Any

import pytest

from modelrunner.engines.diffusers import main as diffusers_server
from modelrunner.engines.llamacpp import main as llamacpp_server
from modelrunner.engines.llamacpp.launch import physical_cores
from modelrunner.engines.serving import (
    MAX_BODY,
    RequestError,
    body_length,
    error_body,
    parse_bool,
)
from modelrunner.manifest.runtime_flags import ALLOWED_FLAGS, engine_flags


def sample_flags(engine: str) -> list[str]:
    """Every allowed flag with a valid value, as the engine is started with them."""
    argv: list[str] = []
    for name, value in ALLOWED_FLAGS[engine].items():
        argv.append(name)
        if value.kind != "switch":
            argv.append(value.example)
    return list(engine_flags(engine, argv))


def test_llamacpp_server_accepts_every_allowed_flag() -> None:
    flags = sample_flags("llama.cpp")
    args = llamacpp_server.parse_args(["--model", "m.gguf", "--port", "1", *flags])
    assert args.n_batch == 2
    assert args.flash_attn is True
    assert args.max_queue == 1
    assert args.type_k == 0  # "f32", as its ggml type id


def test_diffusers_server_accepts_every_allowed_flag() -> None:
    args = diffusers_server.parse_args(
        ["--model", "m.dduf", "--port", "1", *sample_flags("diffusers")]
    )
    assert args.seed == 1
    assert args.attention_slicing is True
    assert args.guidance_scale == 0.5


@pytest.mark.parametrize(
    ("size", "multiple", "expected"),
    [("64x64", 8, (64, 64)), ("512x256", 8, (512, 256)), ("30x10", 1, (30, 10))],
)
def test_parse_size(size: str, multiple: int, expected: tuple[int, int]) -> None:
    assert diffusers_server.parse_size(size, multiple) == expected


@pytest.mark.parametrize(
    ("size", "message"),
    [
        ("64", "must look like"),
        ("64X64", "must look like"),
        (64, "must look like"),
        ("0x64", "must look like"),
        ("60x64", "multiples of 8"),
        ("8192x8", "over 4096"),
    ],
)
def test_parse_size_refuses(size: Any, message: str) -> None:
    with pytest.raises(RequestError, match=message) as info:
        diffusers_server.parse_size(size, 8)
    assert info.value.status == 400
    assert info.value.param == "size"


@pytest.mark.parametrize(
    ("value", "ok"), [(None, 1), (1, 1), (10, 10), (0, None), (11, None), (True, None), ("2", None)]
)
def test_parse_count(value: Any, ok: int | None) -> None:
    if ok is None:
        with pytest.raises(RequestError, match="n must be"):
            diffusers_server.parse_count(value)
    else:
        assert diffusers_server.parse_count(value) == ok


@pytest.mark.parametrize(("text", "value"), [("true", True), ("1", True), ("Off", False)])
def test_parse_bool(text: str, value: bool) -> None:
    assert parse_bool(text) is value


def test_parse_bool_refuses() -> None:
    with pytest.raises(ValueError, match="maybe"):
        parse_bool("maybe")


def test_error_body_is_openai_shaped() -> None:
    assert error_body(400, "bad", "n") == {
        "error": {"message": "bad", "type": "invalid_request_error", "param": "n", "code": None}
    }
    assert error_body(500, "boom")["error"]["type"] == "server_error"


@pytest.mark.parametrize(
    ("siblings", "cores"),
    [
        ([], 1),  # nothing known: one thread
        (["0"], 1),
        (["0", "1"], 2),  # two cores without hyperthreads (a 2-vCPU VM)
        (["0,4", "1,5", "2,6", "3,7", "0,4", "1,5", "2,6", "3,7"], 4),  # 4 cores, 8 threads
        (["0-1", "0-1"], 1),  # one core, its two threads
        (["0,2", "1,3"], 2),  # affinity to one thread of each of two cores
    ],
)
def test_default_threads_are_the_physical_cores(siblings: list[str], cores: int) -> None:
    assert physical_cores(siblings) == cores


@pytest.mark.parametrize(
    ("lengths", "length"),
    [([], 0), (["12"], 12), (["12", " 12"], 12), ([str(MAX_BODY)], MAX_BODY)],
)
def test_body_length(lengths: list[str], length: int) -> None:
    assert body_length(None, lengths) == length


@pytest.mark.parametrize(
    ("chunked", "lengths", "status", "message"),
    [
        ("chunked", ["12"], 411, "not chunked"),
        ("gzip, Chunked", [], 411, "not chunked"),
        (None, ["abc"], 400, "not a number"),
        (None, ["-5"], 400, "not a number"),
        (None, ["+5"], 400, "not a number"),
        (None, ["1e3"], 400, "not a number"),
        (None, ["\u0661"], 400, "not a number"),  # an Arabic-Indic digit: isdigit, not ASCII
        (None, ["12, 12"], 400, "not a number"),
        (None, ["12", "13"], 400, "twice"),
        (None, [str(MAX_BODY + 1)], 413, "over"),
    ],
)
def test_body_length_refuses(
    chunked: str | None, lengths: list[str], status: int, message: str
) -> None:
    with pytest.raises(RequestError, match=message) as caught:
        body_length(chunked, lengths)
    assert caught.value.status == status
