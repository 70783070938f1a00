"""The one error of this package: a request field it cannot honour (the engine answers 400)."""

from __future__ import annotations


class InvalidRequest(ValueError):
    """A chat request's structured-output, tool or logprobs field is wrong or unsupported.

    ``param`` is the request field at fault, as OpenAI's error body names it
    (``response_format.json_schema.schema.properties.age.multipleOf``)."""

    def __init__(self, message: str, param: str) -> None:
        super().__init__(message)
        self.param = param
