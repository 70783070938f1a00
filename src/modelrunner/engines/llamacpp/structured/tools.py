"""The request's ``tools`` / ``functions``, ``tool_choice`` / ``function_call`` and
``parallel_tool_calls``, checked and read into one ToolRequest (or a 400 naming the field)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Final, Literal

from modelrunner.engines.llamacpp.structured.errors import InvalidRequest

NAME: Final = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
Mode = Literal["none", "auto", "required", "named"]
# Without a schema of its own, a function takes no arguments: an empty object.
NO_PARAMETERS: Final = {"type": "object", "properties": {}, "additionalProperties": False}


@dataclass(frozen=True)
class Function:
    name: str
    description: str | None
    parameters: dict[str, Any]
    param: str  # where it was in the request, for error messages

    def as_tool(self) -> dict[str, Any]:
        """The OpenAI tool object templates expect (and the preamble lists)."""
        function: dict[str, Any] = {"name": self.name}
        if self.description:
            function["description"] = self.description
        return {"type": "function", "function": {**function, "parameters": self.parameters}}


@dataclass(frozen=True)
class ToolRequest:
    functions: tuple[Function, ...]
    mode: Mode
    named: str | None  # the function tool_choice names (mode "named")
    parallel: bool
    legacy: bool  # sent as `functions`: answered with `function_call`

    @property
    def offered(self) -> tuple[Function, ...]:
        """The functions the model is told about: none with tool_choice "none"."""
        return () if self.mode == "none" else self.functions

    @property
    def callable(self) -> tuple[Function, ...]:
        """The functions a forced call may name."""
        if self.mode == "named":
            return tuple(f for f in self.functions if f.name == self.named)
        return self.offered

    @property
    def forced(self) -> bool:
        return self.mode in ("required", "named")


NO_TOOLS: Final = ToolRequest((), "none", None, False, False)


def read_tools(body: dict[str, Any]) -> ToolRequest:
    tools, functions = body.get("tools"), body.get("functions")
    if tools is not None and functions is not None:
        raise InvalidRequest("send either tools or the legacy functions, not both", "functions")
    if functions is not None:
        return _legacy(functions, body.get("function_call"))
    if tools is None:
        if body.get("tool_choice") not in (None, "none"):
            raise InvalidRequest("tool_choice needs tools", "tool_choice")
        return NO_TOOLS
    if not isinstance(tools, list):
        raise InvalidRequest("tools must be a list", "tools")
    read = tuple(_tool(tool, f"tools[{i}]") for i, tool in enumerate(tools))
    _unique(read)
    mode, named = _choice(body.get("tool_choice"), read, "tool_choice")
    parallel = body.get("parallel_tool_calls", True)
    if not isinstance(parallel, bool):
        raise InvalidRequest("parallel_tool_calls must be true or false", "parallel_tool_calls")
    return ToolRequest(read, mode, named, parallel, legacy=False)


def _legacy(functions: Any, choice: Any) -> ToolRequest:
    if not isinstance(functions, list):
        raise InvalidRequest("functions must be a list", "functions")
    read = tuple(_function(f, f"functions[{i}]") for i, f in enumerate(functions))
    _unique(read)
    if isinstance(choice, dict):  # the legacy spelling of a named choice: {"name": ...}
        choice = {"type": "function", "function": choice}
    mode, named = _choice(choice, read, "function_call")
    return ToolRequest(read, mode, named, parallel=False, legacy=True)


def _tool(tool: Any, param: str) -> Function:
    if not isinstance(tool, dict) or tool.get("type") != "function":
        raise InvalidRequest(f"{param} must be {{'type': 'function', 'function': ...}}", param)
    return _function(tool.get("function"), f"{param}.function")


def _function(function: Any, param: str) -> Function:
    if not isinstance(function, dict):
        raise InvalidRequest(f"{param} must be an object", param)
    name = function.get("name")
    if not isinstance(name, str) or not NAME.match(name):
        raise InvalidRequest(
            f"{param}.name must be 1-64 letters, digits, _ or -, got {name!r}", f"{param}.name"
        )
    description = function.get("description")
    if description is not None and not isinstance(description, str):
        raise InvalidRequest(f"{param}.description must be a string", f"{param}.description")
    parameters = function.get("parameters", NO_PARAMETERS)
    if not isinstance(parameters, dict):
        raise InvalidRequest(
            f"{param}.parameters must be a JSON Schema object", f"{param}.parameters"
        )
    return Function(name, description, parameters, f"{param}.parameters")


def _unique(functions: tuple[Function, ...]) -> None:
    seen: set[str] = set()
    for function in functions:
        if function.name in seen:
            raise InvalidRequest(f"two functions are named {function.name!r}", function.param)
        seen.add(function.name)


def _choice(choice: Any, functions: tuple[Function, ...], param: str) -> tuple[Mode, str | None]:
    if choice is None:
        return ("auto" if functions else "none"), None
    if choice in ("none", "auto", "required"):
        if choice != "none" and not functions:
            raise InvalidRequest(f"{param} {choice!r} needs at least one function", param)
        return choice, None
    if isinstance(choice, dict) and choice.get("type") == "function":
        name = (choice.get("function") or {}).get("name")
        if any(f.name == name for f in functions):
            return "named", name
        raise InvalidRequest(f"{param} names {name!r}, which is not among the functions", param)
    raise InvalidRequest(
        f"{param} must be 'none', 'auto', 'required' or "
        "{'type': 'function', 'function': {'name': ...}}",
        param,
    )
