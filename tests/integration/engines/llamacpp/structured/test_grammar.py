"""The grammars this project builds, compiled by llguidance over the real SmolLM2
vocabulary: what they accept and refuse, token by token, as a model would write it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from modelrunner.engines.llamacpp.structured.call_grammar import call_grammar
from modelrunner.engines.llamacpp.structured.json_schema import compile_schema
from modelrunner.engines.llamacpp.structured.mask import GrammarMasks, llama_tokenizer
from modelrunner.engines.llamacpp.structured.tools import read_tools


def schema_grammar(schema: Any, param: str) -> str:
    return compile_schema(schema, param).grammar


class Vocabulary:
    def __init__(self, gguf: Path) -> None:
        import llama_cpp as C

        self.C = C
        params = C.llama_model_default_params()
        params.vocab_only = True
        self.model = C.llama_model_load_from_file(str(gguf).encode(), params)
        assert self.model
        self.vocab = C.llama_model_get_vocab(self.model)
        self.masks = GrammarMasks(lambda: llama_tokenizer(self.vocab))

    def tokens(self, text: str) -> list[int]:
        data = text.encode()
        buf = (self.C.llama_token * (len(data) + 8))()
        n = self.C.llama_tokenize(self.vocab, data, len(data), buf, len(buf), False, True)
        return list(buf[:n])

    def accepts(self, grammar: str, text: str) -> bool:
        """Whether the grammar lets ``text`` be written, as SmolLM2 tokenizes it, and end."""
        matcher = self.masks.matcher(grammar)
        return bool(matcher.consume_tokens(self.tokens(text)) and matcher.is_accepting())


@pytest.fixture(scope="module")
def vocabulary(smollm2_gguf: Path) -> Iterator[Vocabulary]:
    vocabulary = Vocabulary(smollm2_gguf)
    yield vocabulary
    vocabulary.C.llama_model_free(vocabulary.model)


PET: dict[str, Any] = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 12},
        "kind": {"enum": ["cat", "dog"]},
        "age": {"type": "integer", "minimum": 0, "maximum": 30},
        "kg": {"type": "number", "minimum": 1, "maximum": 80},
        "tags": {"type": "array", "items": {"type": "string"}, "minItems": 1, "maxItems": 2},
    },
    "required": ["name", "kind", "age", "kg", "tags"],
}


@pytest.mark.parametrize(
    ("text", "accepted"),
    [
        ('{"name":"Tom","kind":"cat","age":3,"kg":4.5,"tags":["grey"]}', True),
        ('{"name":"Tom","kind":"cat","age":30,"kg":80,"tags":["a","b"]}', True),
        ('{"name":"Tom","kind":"cow","age":3,"kg":4.5,"tags":["grey"]}', False),
        ('{"name":"Tom","kind":"cat","age":31,"kg":4.5,"tags":["grey"]}', False),
        ('{"name":"Tom","kind":"cat","age":3,"kg":80.5,"tags":["grey"]}', False),
        ('{"name":"Tom","kind":"cat","age":3,"kg":0.5,"tags":["grey"]}', False),
        ('{"name":"Tom","kind":"cat","age":3,"kg":4,"tags":[]}', False),
        ('{"name":"Tom","kind":"cat","age":3,"kg":4,"tags":["a","b","c"]}', False),
        ('{"name":"Thomas O\'Malley","kind":"cat","age":3,"kg":4,"tags":["a"]}', False),
        ('{"name":"T\nom","kind":"cat","age":3,"kg":4,"tags":["a"]}', False),
        ('{"name":"T\\nom","kind":"cat","age":3,"kg":4,"tags":["a"]}', True),
        ('{"kind":"cat","name":"Tom","age":3,"kg":4,"tags":["a"]}', False),
        ('{"name":"Tom","kind":"cat","age":3,"kg":4,"tags":["a"]} and more', False),
    ],
)
def test_schema_grammar(vocabulary: Vocabulary, text: str, accepted: bool) -> None:
    assert vocabulary.accepts(schema_grammar(PET, "schema"), text) == accepted


@pytest.mark.parametrize(
    ("text", "accepted"),
    [
        ('{"a":[1,{"b":null}],"c":"d"}', True),
        ("{}", True),
        ("[1, 2]", False),
        ('{"a":1', False),
        ("Sure! {}", False),
    ],
)
def test_json_object_grammar(vocabulary: Vocabulary, text: str, accepted: bool) -> None:
    assert (
        vocabulary.accepts(schema_grammar({"type": "object"}, "response_format"), text) == accepted
    )


WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
            "additionalProperties": False,
        },
    },
}
NOW = {"type": "function", "function": {"name": "now"}}
NOW_CALL = '<tool_call>\n{"name":"now","arguments":{}}\n</tool_call>'
TWO_CALLS = f"{NOW_CALL}\n{NOW_CALL}"


@pytest.mark.parametrize(
    ("fmt", "many", "text", "accepted"),
    [
        (
            "hermes",
            False,
            '<tool_call>\n{"name":"get_weather","arguments":{"city":"Oslo"}}\n</tool_call>',
            True,
        ),
        ("hermes", False, '<tool_call>\n{"name":"now","arguments":{}}\n</tool_call>', True),
        (
            "hermes",
            False,
            '<tool_call>\n{"name":"get_weather","arguments":{}}\n</tool_call>',
            False,
        ),
        (
            "hermes",
            False,
            '<tool_call>\n{"name":"now","arguments":{"x":1}}\n</tool_call>',
            False,
        ),
        ("hermes", False, '<tool_call>\n{"name":"other","arguments":{}}\n</tool_call>', False),
        ("hermes", False, "The weather is nice.", False),
        (
            "hermes",
            False,
            TWO_CALLS,
            False,
        ),
        (
            "hermes",
            True,
            TWO_CALLS,
            True,
        ),
        ("llama3", False, '{"name":"get_weather","parameters":{"city":"Oslo"}}', True),
        (
            "mistral",
            True,
            '[TOOL_CALLS][{"name":"now","arguments":{}}, {"name":"now","arguments":{}}]',
            True,
        ),
    ],
)
def test_forced_call_grammar(
    vocabulary: Vocabulary, fmt: Any, many: bool, text: str, accepted: bool
) -> None:
    functions = read_tools({"tools": [WEATHER, NOW]}).functions
    assert vocabulary.accepts(call_grammar(fmt, functions, many=many), text) == accepted


def test_auto_with_response_format_allows_a_call_or_the_answer(vocabulary: Vocabulary) -> None:
    functions = read_tools({"tools": [WEATHER]}).functions
    grammar = call_grammar(
        "hermes", functions, many=False, answer=({"type": "object"}, "response_format")
    )
    assert vocabulary.accepts(grammar, '{"answer":42}')
    assert vocabulary.accepts(
        grammar, '<tool_call>\n{"name":"get_weather","arguments":{"city":"Oslo"}}\n</tool_call>'
    )
    assert not vocabulary.accepts(grammar, "42")


def test_checking_the_pick_first_chooses_as_masking_first(vocabulary: Vocabulary) -> None:
    """Greedy over random logits, along a JSON answer: the pick-then-check path of the
    engine gives the token the full mask would, whether the favourite is allowed or not."""
    import numpy as np

    from modelrunner.engines.llamacpp.structured.grammar_sampling import (
        allowed_tokens,
        sample_with_grammar,
    )

    C = vocabulary.C
    grammar = schema_grammar(PET, "schema")
    text = '{"name":"Tom","kind":"cat","age":3,"kg":4.5,"tags":["grey"]}'
    n = C.llama_vocab_n_tokens(vocabulary.vocab)
    rng = np.random.default_rng(0)
    refused = 0
    tokens = vocabulary.tokens(text)
    for position, token in enumerate(tokens):
        fast, full = vocabulary.masks.matcher(grammar), vocabulary.masks.matcher(grammar)
        assert fast.consume_tokens(tokens[:position]) and full.consume_tokens(tokens[:position])
        logits = rng.normal(0, 3, n).astype(np.float32)
        if rng.random() < 0.5:
            logits[token] += 30  # the favourite is the allowed next token
        greedy = C.llama_sampler_init_greedy()
        picked = sample_with_grammar(greedy, fast, logits, end=-1)
        C.llama_sampler_free(greedy)
        masked = np.where(allowed_tokens(full, n), logits, -np.inf)
        assert picked == int(np.argmax(masked))
        refused += int(np.argmax(logits)) != picked
    assert refused > 3  # the refused-favourite path ran too


def test_a_tools_parameters_keep_their_definitions(vocabulary: Vocabulary) -> None:
    """The parameters sit inside the call object, but their "#/$defs/..." refs still
    resolve, and listed properties close the arguments for generation."""
    unit = {"enum": ["C", "F"]}
    tool = {"type": "function", "function": {"name": "temp", "parameters": {
        "type": "object", "$defs": {"unit": unit},
        "properties": {"unit": {"$ref": "#/$defs/unit"}}, "required": ["unit"]}}}  # fmt: skip
    grammar = call_grammar("hermes", read_tools({"tools": [tool]}).functions, many=False)
    call = '<tool_call>\n{"name":"temp","arguments":{"unit":"%s"}}\n</tool_call>'
    assert vocabulary.accepts(grammar, call % "C")
    assert not vocabulary.accepts(grammar, call % "K")
    assert not vocabulary.accepts(grammar, (call % "C").replace('"C"}', '"C","x":1}'))
