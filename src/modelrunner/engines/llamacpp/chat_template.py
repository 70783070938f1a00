"""Chat messages -> prompt text, with the model's own Jinja chat template.

The template comes from the GGUF (``tokenizer.chat_template``) or from the artifact's
template layer. It runs in Jinja's sandbox with the helpers Hugging Face templates expect
(``raise_exception``, ``strftime_now``, ``tojson`` that keeps non-ASCII text). ``tools``
and assistant ``tool_calls`` / ``tool`` messages are passed through as OpenAI sends them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Final

from modelrunner.engines.serving import RequestError

ROLES: Final = ("system", "developer", "user", "assistant", "tool", "function")
# A template for models that ship none: ChatML, the most common format.
CHATML: Final = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{{ message['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


class TemplateError(Exception):
    pass


def _raise(message: str) -> None:
    raise TemplateError(message)


def _tojson(value: Any, indent: int | None = None, **_: Any) -> str:
    return json.dumps(value, ensure_ascii=False, indent=indent)


class ChatTemplate:
    def __init__(self, source: str, bos_token: str = "", eos_token: str = "") -> None:
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        env = ImmutableSandboxedEnvironment(
            trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"]
        )
        env.filters["tojson"] = _tojson
        env.globals["raise_exception"] = _raise
        env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
        self._template = env.from_string(source)
        self.bos_token = bos_token
        self.eos_token = eos_token

    def render(
        self,
        messages: Sequence[Mapping[str, Any]],
        tools: Sequence[Mapping[str, Any]] | None = None,
        add_generation_prompt: bool = True,
        **extra: Any,
    ) -> str:
        """The prompt; a template that refuses the conversation gives a 400."""
        variables: dict[str, Any] = {
            "messages": [dict(m) for m in messages],
            "add_generation_prompt": add_generation_prompt,
            "bos_token": self.bos_token,
            "eos_token": self.eos_token,
            **extra,
        }
        if tools:
            variables["tools"] = list(tools)
        try:
            return str(self._template.render(**variables))
        except TemplateError as exc:
            raise RequestError(
                400, f"the model's chat template refused the messages: {exc}", "messages"
            ) from None
        except Exception as exc:  # a template bug must not become a 500 with a traceback
            raise RequestError(
                400, f"the model's chat template failed on these messages: {exc}", "messages"
            ) from None


def _content_text(content: Any, where: str) -> str | None:
    """OpenAI content: a string, null, or a list of parts of which only text is served."""
    if content is None or isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for j, part in enumerate(content):
            if not isinstance(part, dict) or part.get("type") != "text":
                kind = part.get("type") if isinstance(part, dict) else type(part).__name__
                raise RequestError(
                    400,
                    f"{where}[{j}] is a {kind!r} part; this model takes text only",
                    f"{where}[{j}]",
                )
            text = part.get("text")
            if not isinstance(text, str):
                raise RequestError(400, f"{where}[{j}].text must be a string", f"{where}[{j}].text")
            texts.append(text)
        return "".join(texts)
    raise RequestError(400, f"{where} must be a string, a list of parts or null", where)


def check_messages(messages: object) -> list[dict[str, Any]]:
    """Validated chat messages, with list-of-parts content flattened to text (pure)."""
    if not isinstance(messages, list) or not messages:
        raise RequestError(400, "messages must be a non-empty list", "messages")
    checked: list[dict[str, Any]] = []
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            raise RequestError(400, f"{where} must be an object", where)
        role = message.get("role")
        if role not in ROLES:
            raise RequestError(
                400,
                f"{where}.role must be one of {', '.join(ROLES)}, got {role!r}",
                f"{where}.role",
            )
        content = _content_text(message.get("content"), f"{where}.content")
        if content is None and not message.get("tool_calls") and role != "assistant":
            raise RequestError(400, f"{where}.content is required", f"{where}.content")
        # An assistant turn of only tool calls keeps content null, as templates expect.
        checked.append({**message, "content": content})
    return checked


def check_tools(tools: object) -> list[dict[str, Any]] | None:
    if tools is None:
        return None
    if not isinstance(tools, list) or not all(isinstance(t, dict) for t in tools):
        raise RequestError(400, "tools must be a list of objects", "tools")
    return tools
