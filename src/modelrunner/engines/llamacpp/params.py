"""Request fields -> typed generation settings, with a 400 naming the field (pure).

Defaults follow llama.cpp's own server (temperature 0.8, top_k 40, top_p 0.95, min_p 0.05),
since the same model should answer alike through either.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Final

from modelrunner.engines.serving import RequestError

MAX_STOPS: Final = 16
MAX_TOP_LOGPROBS: Final = 20
MAX_CHOICES: Final = 8  # n: each choice takes a slot of its own (choices.check_fits)


@dataclass(frozen=True, slots=True)
class Sampling:
    temperature: float = 0.8
    top_k: int = 40
    top_p: float = 0.95
    min_p: float = 0.05
    typical_p: float = 1.0
    repeat_penalty: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    penalty_last_n: int = 64
    logit_bias: tuple[tuple[int, float], ...] = ()
    seed: int | None = None  # None: the server's --seed, else a random one
    grammar: str | None = None  # llguidance's; constrains this request's tokens only


@dataclass(frozen=True, slots=True)
class Generation:
    sampling: Sampling = field(default_factory=Sampling)
    max_tokens: int | None = None  # None: until the slot's context is full
    stop: tuple[str, ...] = ()
    stream: bool = False
    include_usage: bool = False  # stream_options.include_usage
    top_logprobs: int | None = None  # None: no logprobs; k: the sampled token's and k others'
    n: int = 1  # choices: one prompt, n answers sampled from it


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def number(body: Mapping[str, Any], name: str, default: float, lo: float, hi: float) -> float:
    value = body.get(name)
    if value is None:
        return default
    if not _is_number(value):
        raise RequestError(400, f"{name} must be a number, got {value!r}", name)
    if not lo <= value <= hi:
        raise RequestError(400, f"{name} must be between {lo:g} and {hi:g}, got {value!r}", name)
    return float(value)


def integer(
    body: Mapping[str, Any], name: str, default: int | None, lo: int, hi: int
) -> int | None:
    value = body.get(name)
    if value is None:
        return default
    if not isinstance(value, int) or isinstance(value, bool):
        raise RequestError(400, f"{name} must be an integer, got {value!r}", name)
    if not lo <= value <= hi:
        bounds = f"at least {lo}" if hi >= 1 << 30 else f"between {lo} and {hi}"
        raise RequestError(400, f"{name} must be {bounds}, got {value!r}", name)
    return value


def boolean(body: Mapping[str, Any], name: str, default: bool) -> bool:
    value = body.get(name)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise RequestError(400, f"{name} must be true or false, got {value!r}", name)
    return value


def parse_stop(value: object) -> tuple[str, ...]:
    if value is None:
        return ()
    stops = [value] if isinstance(value, str) else value
    if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
        raise RequestError(400, "stop must be a string or a list of strings", "stop")
    if len(stops) > MAX_STOPS:
        raise RequestError(400, f"stop takes at most {MAX_STOPS} strings", "stop")
    return tuple(s for s in stops if s)


def parse_logit_bias(value: object, n_vocab: int) -> tuple[tuple[int, float], ...]:
    if value is None:
        return ()
    if not isinstance(value, dict):
        raise RequestError(400, "logit_bias must map token ids to numbers", "logit_bias")
    bias: list[tuple[int, float]] = []
    for key, amount in value.items():
        try:
            token = int(key)
        except (TypeError, ValueError):
            raise RequestError(
                400, f"logit_bias keys must be token ids, got {key!r}", "logit_bias"
            ) from None
        if not 0 <= token < n_vocab:
            raise RequestError(
                400,
                f"logit_bias token {token} is outside the vocabulary (0..{n_vocab - 1})",
                "logit_bias",
            )
        if not _is_number(amount) or not -100 <= amount <= 100:
            raise RequestError(
                400,
                f"logit_bias values must be numbers from -100 to 100, got {amount!r}",
                "logit_bias",
            )
        bias.append((token, float(amount)))
    return tuple(bias)


def parse_response_format(value: object) -> str | None:
    """The grammar for ``response_format``: none for text, any JSON object for json_object."""
    if value is None:
        return None
    kind = value.get("type") if isinstance(value, dict) else None
    if kind == "text":
        return None
    if kind == "json_object":
        from modelrunner.engines.llamacpp.structured.json_schema import compile_schema

        return compile_schema({"type": "object"}, "response_format").grammar
    raise RequestError(
        400,
        f"response_format.type must be text or json_object, got {kind!r}",
        "response_format",
    )


def parse_generation(
    body: Mapping[str, Any],
    n_vocab: int,
    default_max_tokens: int | None = None,
    *,
    response_format: bool = True,
) -> Generation:
    """The generation settings of a chat or completions request. ``response_format``: read
    it here (completions); chat requests have it read by ``structured.plan`` instead, which
    also knows ``json_schema`` and tools.

    ``max_completion_tokens`` is OpenAI's current name for ``max_tokens``; it wins when both
    are given.
    """
    n = integer(body, "n", 1, 1, MAX_CHOICES) or 1
    seed = integer(body, "seed", None, -(2**63), 2**64 - 1)
    sampling = Sampling(
        temperature=number(body, "temperature", 0.8, 0.0, 100.0),
        top_k=integer(body, "top_k", 40, 0, 1 << 30) or 0,
        top_p=number(body, "top_p", 0.95, 0.0, 1.0),
        min_p=number(body, "min_p", 0.05, 0.0, 1.0),
        typical_p=number(body, "typical_p", 1.0, 0.0, 1.0),
        repeat_penalty=number(body, "repeat_penalty", 1.0, 0.0, 10.0),
        presence_penalty=number(body, "presence_penalty", 0.0, -2.0, 2.0),
        frequency_penalty=number(body, "frequency_penalty", 0.0, -2.0, 2.0),
        logit_bias=parse_logit_bias(body.get("logit_bias"), n_vocab),
        seed=None if seed is None else seed & 0xFFFFFFFF,
    )
    max_tokens = integer(body, "max_tokens", default_max_tokens, 1, 1 << 30)
    max_tokens = integer(body, "max_completion_tokens", max_tokens, 1, 1 << 30)
    stream = boolean(body, "stream", False)
    options = body.get("stream_options")
    include_usage = False
    if options is not None:
        if not isinstance(options, dict):
            raise RequestError(400, "stream_options must be an object", "stream_options")
        if not stream:
            raise RequestError(
                400, "stream_options is only allowed with stream: true", "stream_options"
            )
        include_usage = boolean(options, "include_usage", False)
    grammar = parse_response_format(body.get("response_format")) if response_format else None
    if grammar is not None:
        sampling = replace(sampling, grammar=grammar)
    return Generation(
        sampling=sampling,
        max_tokens=max_tokens,
        stop=parse_stop(body.get("stop")),
        stream=stream,
        include_usage=include_usage,
        n=n,
    )
