"""The pure decisions of /tokenize and /detokenize: the body an engine is sent, the field a
bad body is refused for, and which engines have a tokenizer."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from modelrunner.http.tokenizer.shapes import BadBody, TokenizeRequest, no_tokenizer, tokenize_body


def request(**fields: Any) -> TokenizeRequest:
    return msgspec.convert({"model": "m", **fields}, TokenizeRequest)


@pytest.mark.parametrize(
    ("fields", "sent"),
    [
        ({"prompt": "hi"}, {"prompt": "hi"}),
        (
            {"prompt": "hi", "add_special_tokens": False},
            {"prompt": "hi", "add_special_tokens": False},
        ),
        (
            {"messages": [{"role": "user", "content": "hi"}], "add_generation_prompt": False},
            {"messages": [{"role": "user", "content": "hi"}], "add_generation_prompt": False},
        ),
        (
            {"messages": [], "continue_final_message": True, "add_generation_prompt": False},
            {"messages": [], "continue_final_message": True, "add_generation_prompt": False},
        ),
    ],
)
def test_the_fields_given_are_sent_without_the_model(
    fields: dict[str, Any], sent: dict[str, Any]
) -> None:
    assert tokenize_body(request(**fields)) == sent


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({}, "prompt"),
        ({"prompt": "a", "messages": []}, "messages"),
        ({"prompt": "a", "add_generation_prompt": True}, "add_generation_prompt"),
        ({"prompt": "a", "tools": []}, "tools"),
        ({"messages": [], "continue_final_message": True}, "continue_final_message"),
    ],
)
def test_a_bad_body_names_the_field(fields: dict[str, Any], param: str) -> None:
    with pytest.raises(BadBody) as refused:
        tokenize_body(request(**fields))
    assert refused.value.param == param


@pytest.mark.parametrize(
    ("engine", "refused"), [("llama.cpp", False), ("vllm", False), ("diffusers", True)]
)
def test_which_engines_tokenize(engine: str, refused: bool) -> None:
    reason = no_tokenizer(engine)
    assert (reason is not None) == refused
    if reason is not None:
        assert "diffusers engine has no text tokenizer" in reason
