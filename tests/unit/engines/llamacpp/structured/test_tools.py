"""Reading tools / functions / tool_choice / parallel_tool_calls, and the 400s for bad ones."""

from __future__ import annotations

from typing import Any

import pytest

from modelrunner.engines.llamacpp.structured.errors import InvalidRequest
from modelrunner.engines.llamacpp.structured.tools import read_tools

WEATHER = {
    "type": "function",
    "function": {"name": "get_weather", "parameters": {"type": "object"}},
}
TIME = {"type": "function", "function": {"name": "get_time", "description": "Now."}}


@pytest.mark.parametrize(
    ("body", "mode", "named", "callable_", "parallel"),
    [
        ({}, "none", None, [], False),
        ({"tools": [WEATHER, TIME]}, "auto", None, ["get_weather", "get_time"], True),
        ({"tools": [WEATHER], "tool_choice": "none"}, "none", None, [], True),
        (
            {"tools": [WEATHER, TIME], "tool_choice": "required"},
            "required",
            None,
            ["get_weather", "get_time"],
            True,
        ),
        (
            {
                "tools": [WEATHER, TIME],
                "tool_choice": {"type": "function", "function": {"name": "get_time"}},
                "parallel_tool_calls": False,
            },
            "named",
            "get_time",
            ["get_time"],
            False,
        ),
        (
            {"functions": [WEATHER["function"]], "function_call": {"name": "get_weather"}},
            "named",
            "get_weather",
            ["get_weather"],
            False,
        ),
        (
            {"functions": [WEATHER["function"]], "function_call": "auto"},
            "auto",
            None,
            ["get_weather"],
            False,
        ),
    ],
)
def test_read(
    body: dict[str, Any], mode: str, named: str | None, callable_: list[str], parallel: bool
) -> None:
    tools = read_tools(body)
    assert (tools.mode, tools.named, tools.parallel) == (mode, named, parallel)
    assert [f.name for f in tools.callable] == callable_
    assert tools.legacy == ("functions" in body)


def test_a_function_without_parameters_takes_an_empty_object() -> None:
    (time,) = read_tools({"tools": [TIME]}).functions
    assert time.parameters == {"type": "object", "properties": {}, "additionalProperties": False}
    assert time.as_tool() == {
        "type": "function",
        "function": {"name": "get_time", "parameters": time.parameters, "description": "Now."},
    }


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"tools": {"a": 1}}, "tools"),
        ({"tools": [{"type": "code_interpreter"}]}, "tools[0]"),
        (
            {"tools": [{"type": "function", "function": {"name": "has space"}}]},
            "tools[0].function.name",
        ),
        (
            {"tools": [{"type": "function", "function": {"name": "f", "parameters": "x"}}]},
            "tools[0].function.parameters",
        ),
        ({"tools": [WEATHER, WEATHER]}, "tools[1].function.parameters"),
        ({"tools": [WEATHER], "tool_choice": "always"}, "tool_choice"),
        (
            {"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "nope"}}},
            "tool_choice",
        ),
        ({"tool_choice": "required"}, "tool_choice"),
        ({"tools": [], "tool_choice": "required"}, "tool_choice"),
        ({"tools": [WEATHER], "parallel_tool_calls": "yes"}, "parallel_tool_calls"),
        ({"tools": [WEATHER], "functions": [WEATHER["function"]]}, "functions"),
        ({"functions": [WEATHER["function"]], "function_call": {"name": "other"}}, "function_call"),
    ],
)
def test_bad_fields_name_the_param(body: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        read_tools(body)
    assert caught.value.param == param
