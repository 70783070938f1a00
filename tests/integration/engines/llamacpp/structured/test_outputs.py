"""Structured outputs, tool calls and logprobs with the official openai client through a
real `mr serve` and the real llama.cpp engine on SmolLM2 (whose template has no tools:
the preamble and the grammar make its calls)."""

from __future__ import annotations

import datetime
import enum
import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import httpx
import jsonschema
import openai
import pydantic
import pytest
from openai import OpenAI

from tests.fixtures.serve import Server, manifest, serving

pytestmark = pytest.mark.engine
MODEL = "smol"

PET_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 20},
        "species": {"enum": ["cat", "dog", "bird"]},
        "age": {"type": "integer", "minimum": 0, "maximum": 30},
        "weight_kg": {"type": "number", "minimum": 0, "maximum": 100},
        "toys": {
            "type": "array",
            "items": {"type": "string", "maxLength": 15},
            "minItems": 1,
            "maxItems": 3,
        },
    },
    "required": ["name", "species", "age", "weight_kg", "toys"],
    "additionalProperties": False,
}
WEATHER_PARAMETERS: dict[str, Any] = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "maxLength": 30},
        "unit": {"enum": ["celsius", "fahrenheit"]},
    },
    "required": ["city", "unit"],
    "additionalProperties": False,
}
TOOLS: list[Any] = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "The current weather in a city.",
            "parameters": WEATHER_PARAMETERS,
        },
    },
    {
        "type": "function",
        "function": {
            "name": "get_time",
            "description": "The current time in a time zone.",
            "parameters": {
                "type": "object",
                "properties": {"zone": {"type": "string", "maxLength": 30}},
                "required": ["zone"],
            },
        },
    },
]
ASK_WEATHER: list[Any] = [{"role": "user", "content": "What is the weather in Paris?"}]
NAMED: Any = {"type": "function", "function": {"name": "get_weather"}}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, smollm2_gguf: Path) -> Iterator[Server]:
    with serving(tmp_path_factory.mktemp("structured")) as start:
        server = start()
        server.write(
            "smol.yaml",
            manifest(
                smollm2_gguf,
                MODEL,
                context_size=2048,
                **{"llama.cpp": {"threads": 1, "parallel": 2}},
            ),
        )
        server.wait_for("the model to be ready", lambda: server.ready(MODEL), 120)
        yield server


@pytest.fixture(scope="module")
def client(server: Server) -> OpenAI:
    return server.client(max_retries=0, timeout=120)


def test_json_object_answers_all_parse(client: OpenAI) -> None:
    # The grammar makes every finished answer JSON; it cannot make a 135M model stop. At
    # temperature 0.5 one answer in 20 looped to max_tokens (truncated, so not JSON), at 0.3
    # none did: the answers still differ from seed to seed.
    answers = set()
    for seed in range(20):
        answer = client.chat.completions.create(
            model=MODEL,
            messages=[
                {
                    "role": "user",
                    "content": 'Name a cat and its colour as JSON: {"name": ..., "colour": ...}',
                }
            ],
            response_format={"type": "json_object"},
            seed=seed,
            temperature=0.3,
            max_tokens=200,
        )
        choice = answer.choices[0]
        assert choice.finish_reason == "stop", choice.message.content
        assert isinstance(json.loads(choice.message.content or ""), dict)
        answers.add(choice.message.content)
    assert len(answers) > 5


def test_json_schema_answers_validate(client: OpenAI) -> None:
    for seed in range(6):
        answer = client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "Invent a pet and describe it."}],
            response_format={
                "type": "json_schema",
                "json_schema": {"name": "pet", "schema": PET_SCHEMA, "strict": True},
            },
            seed=seed,
            max_tokens=300,
        )
        choice = answer.choices[0]
        assert choice.finish_reason == "stop", choice.message.content
        jsonschema.validate(json.loads(choice.message.content or ""), PET_SCHEMA)


def test_json_schema_streams_the_same_valid_answer(client: OpenAI) -> None:
    request: Any = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "Invent a pet."}],
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": "pet", "schema": PET_SCHEMA},
        },
        "seed": 3,
        "temperature": 0,
        "max_tokens": 300,
    }
    whole = client.chat.completions.create(**request).choices[0].message.content
    streamed = "".join(
        c.choices[0].delta.content or ""
        for c in client.chat.completions.create(**request, stream=True)
        if c.choices
    )
    assert streamed == whole
    jsonschema.validate(json.loads(streamed), PET_SCHEMA)


def bias_to_ones(server: Server) -> dict[str, int]:
    """A logit_bias that makes SmolLM2 write 1s wherever the grammar lets it, for ever."""
    found = httpx.post(
        server.url + "/tokenize",
        json={"model": MODEL, "prompt": "1", "add_special_tokens": False},
    ).json()
    return {str(found["tokens"][0]): 100}


def test_a_looping_json_answer_is_closed_not_cut(server: Server, client: OpenAI) -> None:
    # A bias on "1" makes the model write 1s inside the string for ever, as SmolLM2 does
    # unbiased on many real-world schemas: the loop guard closes the string after 64.
    schema = {
        "type": "object",
        "properties": {"id": {"type": "string"}, "n": {"type": "integer"}},
        "required": ["id", "n"],
    }
    for stream in (False, True):
        text, _, finish = ask(
            client,
            stream,
            messages=[{"role": "user", "content": "Give a record with an id."}],
            response_format={"type": "json_schema", "json_schema": {"name": "r", "schema": schema}},
            logit_bias=bias_to_ones(server),
            temperature=0,
            max_tokens=300,
        )
        assert finish == "stop", text
        value = json.loads(text)
        jsonschema.validate(value, schema)
        assert set(value["id"]) == {"1"} and 64 <= len(value["id"]) < 80, value


@pytest.mark.parametrize(
    ("schema", "param"),
    [
        (
            {"type": "array", "items": {"type": "string"}, "uniqueItems": True},
            "response_format.json_schema.schema.uniqueItems",
        ),
        (
            {"type": "object", "properties": {"n": {"type": "integer", "not": {"const": 3}}}},
            "response_format.json_schema.schema.properties.n.not",
        ),
    ],
)
def test_strict_refuses_a_keyword_no_grammar_enforces(
    client: OpenAI, schema: dict[str, Any], param: str
) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "Hi"}],
            response_format={
                "type": "json_schema",
                "json_schema": {"name": "x", "schema": schema, "strict": True},
            },
        )
    error = caught.value.body
    assert isinstance(error, dict)
    assert param.rsplit(".", 1)[1] in error["message"] and error["param"] == param


# The grammar can only write ["a","a"]: uniqueItems, which it cannot enforce, then fails.
DUPLICATES = {
    "type": "array",
    "items": {"enum": ["a"]},
    "minItems": 2,
    "maxItems": 2,
    "uniqueItems": True,
}


@pytest.mark.parametrize("stream", [False, True])
def test_an_answer_failing_its_schema_is_reported_not_passed_as_valid(
    client: OpenAI, stream: bool
) -> None:
    request: Any = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "Two letters."}],
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": "letters", "schema": DUPLICATES},
        },
        "max_tokens": 80,
        "temperature": 0,
    }
    if stream:
        chunks = list(client.chat.completions.create(**request, stream=True))
        last = [c for c in chunks if c.choices][-1].choices[0]
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    else:
        last = client.chat.completions.create(**request).choices[0]
        text = last.message.content or ""
    assert json.loads(text) == ["a", "a"]
    assert last.finish_reason == "schema_invalid"
    assert "non-unique" in (last.model_extra or {})["schema_error"]


ENFORCED: list[tuple[str, dict[str, Any]]] = [
    ("A number over 10 that 7 divides.",
     {"type": "object", "properties": {"n": {"type": "integer", "multipleOf": 7, "minimum": 10}},
      "required": ["n"], "additionalProperties": False}),
    ("The email address of Ann at example.org.",
     {"type": "object",
      "properties": {"mail": {"type": "string", "format": "email", "maxLength": 40}},
      "required": ["mail"], "id": "vendor", "x-kubernetes-preserve-unknown-fields": True}),
    ("Name a cat or count dogs.",
     {"oneOf": [{"type": "object", "properties": {"cat": {"type": "string", "maxLength": 20}},
                 "required": ["cat"], "additionalProperties": False},
                {"type": "object", "properties": {"dog": {"type": "integer"}},
                 "required": ["dog"], "additionalProperties": False}]}),
    ("When and for how much did you buy bread?",
     {"type": "object", "properties": {"at": {"type": "string", "format": "date-time"},
                                       "price": {"type": "number", "exclusiveMinimum": 0.5,
                                                 "maximum": 9.75}},
      "required": ["at", "price"], "additionalProperties": False}),
]  # fmt: skip


@pytest.mark.parametrize(("prompt", "schema"), ENFORCED)
def test_real_world_keywords_are_enforced(
    client: OpenAI, prompt: str, schema: dict[str, Any]
) -> None:
    """Each answer that ends is valid; a 135M model may still write one string or number
    until max_tokens, so most (not all) must end."""
    ended = 0
    for seed in range(3):
        choice = client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": prompt}],
            response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": schema}},
            seed=seed,
            temperature=0.3,
            max_tokens=120,
        ).choices[0]
        assert choice.finish_reason in ("stop", "length"), choice.message.content
        if choice.finish_reason == "stop":
            ended += 1
            jsonschema.validate(
                json.loads(choice.message.content or ""),
                schema,
                format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER,
            )
    assert ended >= 2


def deep(n: int) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "integer"}
    for _ in range(n):
        schema = {"type": "array", "items": schema}
    return schema


@pytest.mark.parametrize(
    "schema",
    [
        deep(500),
        {"$ref": "#/$defs/a", "$defs": {"a": {"$ref": "#/$defs/a"}}},
        {"enum": [f"value-{i}-{'x' * 40}" for i in range(30_000)]},
        {"type": "string", "pattern": "(a|aa|aaa){1,200}(b|bb){1,200}[a-z]{1,999}x{300}"},
        {"type": "integr"},
        {"$ref": "#/$defs/missing"},
        "not a schema",
    ],
    ids=["deep", "ref-loop", "huge-enum", "exploding-pattern", "bad-type", "dangling", "text"],
)
def test_hostile_schemas_get_a_clear_answer_never_a_5xx(
    server: Server, schema: dict[str, Any]
) -> None:
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "x"}],
        "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}},
        "max_tokens": 8,
    }
    answer = httpx.post(f"{server.url}/v1/chat/completions", json=body, timeout=120)
    assert answer.status_code in (200, 400), answer.text
    if answer.status_code == 400:
        error = answer.json()["error"]
        assert error["param"].startswith("response_format.json_schema"), error
        assert error["message"]


class Colour(enum.Enum):
    GREY = "grey"
    BLACK = "black"


class Owner(pydantic.BaseModel):
    name: str = pydantic.Field(max_length=20)
    site: pydantic.HttpUrl | None


class Pet(pydantic.BaseModel):
    kind: Literal["cat", "dog"]
    colour: Colour
    age: int = pydantic.Field(ge=0, le=30)
    weight_kg: float = pydantic.Field(gt=0.5, lt=80)
    born: datetime.datetime
    nickname: str | None
    owner: Owner


def test_the_openai_clients_pydantic_parse(client: OpenAI) -> None:
    """Optional, Literal, Enum, nested models, datetime, HttpUrl and constrained numbers,
    as the client sends them (strict: true), parsed back into the model. A 135M model can
    still write a URL until max_tokens (cut, so the client raises): most answers must
    parse, and every one that ends must."""
    parsed = 0
    for seed in range(5):
        try:
            completion = client.beta.chat.completions.parse(
                model=MODEL,
                messages=[
                    {
                        "role": "user",
                        "content": "Invent a pet and its owner; the owner's site is an https URL.",
                    }
                ],
                response_format=Pet,
                seed=seed,
                temperature=0.3,
                max_tokens=250,
            )
        except openai.LengthFinishReasonError:
            continue
        choice = completion.choices[0]
        assert choice.finish_reason == "stop", choice.message.content
        pet = choice.message.parsed
        assert isinstance(pet, Pet) and isinstance(pet.colour, Colour)
        assert 0 <= pet.age <= 30 and 0.5 < pet.weight_kg < 80
        parsed += 1
    assert parsed >= 3


def check_call(name: str, arguments: str) -> dict[str, Any]:
    tool = next(t for t in TOOLS if t["function"]["name"] == name)
    parsed = json.loads(arguments)
    jsonschema.validate(parsed, tool["function"]["parameters"])
    return parsed


def test_named_tool_choice_returns_a_valid_call(client: OpenAI) -> None:
    answer = client.chat.completions.create(
        model=MODEL, messages=ASK_WEATHER, tools=TOOLS, tool_choice=NAMED, seed=1, max_tokens=200
    )
    choice = answer.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.tool_calls is not None
    (call,) = choice.message.tool_calls
    assert call.type == "function" and call.id.startswith("call_")
    assert call.function.name == "get_weather"
    check_call(call.function.name, call.function.arguments)


def test_a_looping_forced_call_is_closed_not_cut(server: Server, client: OpenAI) -> None:
    # As for a JSON answer: a call forced by tool_choice ends its looping argument.
    lookup: Any = {
        "type": "function",
        "function": {
            "name": "lookup",
            "parameters": {
                "type": "object",
                "properties": {"id": {"type": "string"}},
                "required": ["id"],
            },
        },
    }
    answer = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Look up the record."}],
        tools=[lookup],
        tool_choice={"type": "function", "function": {"name": "lookup"}},
        logit_bias=bias_to_ones(server),
        temperature=0,
        max_tokens=300,
    )
    choice = answer.choices[0]
    assert choice.finish_reason == "tool_calls", choice.message
    calls = choice.message.tool_calls or []
    arguments = json.loads(calls[0].function.arguments)  # type: ignore[union-attr]
    assert arguments["id"].endswith("1" * 64) and len(arguments["id"]) < 80, arguments


def test_named_tool_choice_streams_a_valid_call(client: OpenAI) -> None:
    stream = client.chat.completions.create(
        model=MODEL,
        messages=ASK_WEATHER,
        tools=TOOLS,
        tool_choice=NAMED,
        seed=2,
        max_tokens=200,
        stream=True,
    )
    calls: dict[int, dict[str, str]] = {}
    fragments = 0
    finish = None
    for chunk in stream:
        if not chunk.choices:
            continue
        choice = chunk.choices[0]
        finish = choice.finish_reason or finish
        for delta in choice.delta.tool_calls or []:
            slot = calls.setdefault(delta.index, {"id": "", "name": "", "arguments": ""})
            slot["id"] += delta.id or ""
            if delta.function is not None:
                slot["name"] += delta.function.name or ""
                slot["arguments"] += delta.function.arguments or ""
                fragments += bool(delta.function.arguments)
    assert finish == "tool_calls"
    assert list(calls) == [0] and calls[0]["id"] and calls[0]["name"] == "get_weather"
    check_call("get_weather", calls[0]["arguments"])
    assert fragments > 3  # the arguments streamed as the model wrote them


def test_required_tool_choice_calls_one_of_the_tools(client: OpenAI) -> None:
    answer = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "What time is it in Tokyo?"}],
        tools=TOOLS,
        tool_choice="required",
        parallel_tool_calls=False,
        seed=4,
        max_tokens=200,
    )
    choice = answer.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.tool_calls
    (call,) = choice.message.tool_calls
    check_call(call.function.name, call.function.arguments)


def test_tool_result_round_trip_gets_a_final_answer(client: OpenAI) -> None:
    first = client.chat.completions.create(
        model=MODEL, messages=ASK_WEATHER, tools=TOOLS, tool_choice=NAMED, seed=5, max_tokens=200
    )
    call = (first.choices[0].message.tool_calls or [])[0]
    history: list[Any] = [
        *ASK_WEATHER,
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": call.id,
                    "type": "function",
                    "function": {"name": call.function.name, "arguments": call.function.arguments},
                }
            ],
        },
        {
            "role": "tool",
            "tool_call_id": call.id,
            "content": json.dumps({"temperature": 21, "sky": "sunny"}),
        },
    ]
    final = client.chat.completions.create(
        model=MODEL, messages=history, tools=TOOLS, tool_choice="none", seed=5, max_tokens=60
    )
    choice = final.choices[0]
    assert choice.finish_reason in ("stop", "length")
    assert choice.message.tool_calls is None
    assert (choice.message.content or "").strip()
    # The tool's result was in the prompt: the history costs more tokens than the question.
    alone = client.chat.completions.create(model=MODEL, messages=ASK_WEATHER, max_tokens=1)
    assert final.usage is not None and alone.usage is not None
    assert final.usage.prompt_tokens > alone.usage.prompt_tokens + 20


def test_logprobs_are_sorted_and_sensible(client: OpenAI) -> None:
    answer = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Name three colours."}],
        logprobs=True,
        top_logprobs=5,
        temperature=0,
        max_tokens=16,
    )
    choice = answer.choices[0]
    assert choice.logprobs is not None and choice.logprobs.content
    entries = choice.logprobs.content
    assert "".join(e.token for e in entries) == choice.message.content
    for entry in entries:
        alternatives = [t.logprob for t in entry.top_logprobs]
        assert len(alternatives) == 5 and alternatives == sorted(alternatives, reverse=True)
        assert all(lp <= 0 for lp in alternatives)
        assert sum(math.exp(lp) for lp in alternatives) <= 1.0 + 1e-6
        # Greedy: the sampled token is the likeliest one.
        assert entry.token == entry.top_logprobs[0].token
        assert entry.logprob == pytest.approx(alternatives[0])
        assert bytes(entry.bytes or []).decode("utf-8", errors="replace") == entry.token


def test_streamed_logprobs_match_the_plain_answer(client: OpenAI) -> None:
    request: Any = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "Say something nice."}],
        "logprobs": True,
        "top_logprobs": 2,
        "temperature": 0,
        "max_tokens": 12,
    }
    plain = client.chat.completions.create(**request).choices[0].logprobs
    assert plain is not None and plain.content is not None
    streamed = [
        entry
        for chunk in client.chat.completions.create(**request, stream=True)
        if chunk.choices and chunk.choices[0].logprobs is not None
        for entry in chunk.choices[0].logprobs.content or []
    ]
    assert [(e.token, round(e.logprob, 4)) for e in streamed] == [
        (e.token, round(e.logprob, 4)) for e in plain.content
    ]


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"logprobs": True, "top_logprobs": 21}, "top_logprobs"),
        ({"tool_choice": "required"}, "tool_choice"),
        (
            {"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "nope"}}},
            "tool_choice",
        ),
        ({"response_format": {"type": "xml"}}, "response_format.type"),
    ],
)
def test_bad_fields_are_400s(client: OpenAI, fields: dict[str, Any], param: str) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=MODEL, messages=ASK_WEATHER, **fields)
    assert isinstance(caught.value.body, dict) and caught.value.body["param"] == param


def test_tool_call_and_logprobs_answers_follow_openais_schemas(server: Server) -> None:
    """Raw HTTP, so nothing is hidden by the client's parsing: a forced call with logprobs,
    plain and streamed, against the schemas extracted from OpenAI's OpenAPI document."""
    from tests.integration.http.openai.test_answer_shapes import check

    body: dict[str, Any] = {
        "model": MODEL,
        "messages": ASK_WEATHER,
        "tools": TOOLS,
        "tool_choice": NAMED,
        "logprobs": True,
        "top_logprobs": 3,
        "seed": 6,
        "max_tokens": 200,
    }
    url = f"{server.url}/v1/chat/completions"
    answer = httpx.post(url, json=body, timeout=120).json()
    check(answer, "CreateChatCompletionResponse")
    assert answer["choices"][0]["finish_reason"] == "tool_calls"
    assert answer["choices"][0]["logprobs"]["content"]
    chunks = []
    with httpx.stream("POST", url, json={**body, "stream": True}, timeout=120) as response:
        for line in response.iter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                chunks.append(json.loads(line[6:]))
    for chunk in chunks:
        check(chunk, "CreateChatCompletionStreamResponse")
    assert any(c["choices"][0]["delta"].get("tool_calls") for c in chunks)
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"


# -- every tool_choice, never the model's markup (issue 21) -----------------------------
MARKUP = ("<tool_call>", "</tool_call>", "tool_call>", "[TOOL_CALLS]", "<|python_tag|>")


def ask(client: OpenAI, stream: bool, **fields: Any) -> tuple[str, list[dict[str, str]], str]:
    """The answer's content, calls (name, arguments, id) and finish_reason, plain or
    streamed; for a stream, also checks each call's deltas are in OpenAI's order."""
    if not stream:
        choice = client.chat.completions.create(model=MODEL, **fields).choices[0]
        calls = [
            {"id": c.id, "name": c.function.name, "arguments": c.function.arguments}
            for c in choice.message.tool_calls or []
        ]
        return choice.message.content or "", calls, choice.finish_reason
    content, finish = "", ""
    slots: dict[int, dict[str, str]] = {}
    for chunk in client.chat.completions.create(model=MODEL, stream=True, **fields):
        if not chunk.choices:
            continue
        choice = chunk.choices[0]
        finish = choice.finish_reason or finish
        content += choice.delta.content or ""
        for delta in choice.delta.tool_calls or []:
            assert delta.function is not None
            if delta.index not in slots:
                # The first delta of a call: index, id, type, name, and arguments "".
                assert delta.id and delta.type == "function" and delta.function.name
                assert delta.function.arguments == ""
                assert delta.index == len(slots)
                slots[delta.index] = {"id": delta.id, "name": delta.function.name, "arguments": ""}
            else:
                assert delta.id is None and delta.function.name is None
            slots[delta.index]["arguments"] += delta.function.arguments or ""
    return content, [slots[i] for i in sorted(slots)], finish


def no_markup(content: str) -> None:
    assert not any(marker in content for marker in MARKUP), content


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
def test_required_cut_by_max_tokens_never_leaks_markup(client: OpenAI, stream: bool) -> None:
    """The issue's case: "required", max_tokens 60, default sampling, no seed, 8 times. The
    model adds calls until max_tokens cuts one; before, the whole answer came back as
    ``<tool_call>`` text."""
    seen: list[tuple[int, str]] = []
    for _ in range(8):
        content, calls, finish = ask(
            client, stream, messages=ASK_WEATHER, tools=TOOLS, tool_choice="required", max_tokens=60
        )
        no_markup(content)
        assert finish in ("tool_calls", "length")
        # A first call cut short streams as it came (OpenAI does the same); every other
        # call sent is complete.
        partial_first = stream and finish == "length" and len(calls) == 1
        for call in calls if not partial_first else []:
            check_call(call["name"], call["arguments"])
        assert calls or finish == "length"
        seen.append((len(calls), finish))
    assert any(count for count, _ in seen), seen  # calls are parsed out


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
@pytest.mark.parametrize("parallel", [False, True], ids=["single", "parallel"])
def test_parallel_tool_calls(client: OpenAI, parallel: bool, stream: bool) -> None:
    question = [{"role": "user", "content": "What is the weather in Paris, Rome and Oslo?"}]
    counts = []
    for seed in range(3):
        content, calls, finish = ask(
            client, stream, messages=question, tools=TOOLS, tool_choice="required",
            parallel_tool_calls=parallel, seed=seed, max_tokens=300,
        )  # fmt: skip
        no_markup(content)
        assert finish == "tool_calls", (content, calls)
        for call in calls:
            check_call(call["name"], call["arguments"])
        counts.append(len(calls))
    if parallel:
        assert max(counts) > 1, counts  # several calls are allowed, and this model makes them
    else:
        assert counts == [1, 1, 1]


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
@pytest.mark.parametrize("parallel", [False, True], ids=["single", "parallel"])
def test_named_tool_choice_gives_that_function(
    client: OpenAI, parallel: bool, stream: bool
) -> None:
    content, calls, finish = ask(
        client, stream, messages=ASK_WEATHER, tools=TOOLS, tool_choice=NAMED,
        parallel_tool_calls=parallel, seed=7, max_tokens=200,
    )  # fmt: skip
    no_markup(content)
    assert finish == "tool_calls"
    assert [c["name"] for c in calls] == ["get_weather"] * len(calls) and calls
    if not parallel:
        assert len(calls) == 1
    for call in calls:
        check_call(call["name"], call["arguments"])


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
@pytest.mark.parametrize("choice", ["auto", "none"])
def test_auto_and_none_never_leak_markup(client: OpenAI, choice: str, stream: bool) -> None:
    for seed in range(4):
        content, calls, finish = ask(
            client, stream, messages=ASK_WEATHER, tools=TOOLS, tool_choice=choice,
            seed=seed, max_tokens=60,
        )  # fmt: skip
        no_markup(content)
        if choice == "none":
            assert not calls and finish in ("stop", "length")
        else:
            assert finish in ("stop", "length", "tool_calls")
            assert bool(calls) == (finish == "tool_calls") or finish == "length"
            for call in calls:
                check_call(call["name"], call["arguments"])


def test_a_later_call_cut_anywhere_is_dropped_from_the_stream(client: OpenAI) -> None:
    """max_tokens swept across the second call (the first is about 35 tokens): whatever
    call was cut, the stream holds only complete calls beside finish_reason "length"."""
    cut_after_a_call = 0
    for max_tokens in range(40, 80, 4):
        content, calls, finish = ask(
            client, True, messages=ASK_WEATHER, tools=TOOLS, tool_choice="required",
            seed=3, temperature=0, max_tokens=max_tokens,
        )  # fmt: skip
        no_markup(content)
        for call in calls if not (finish == "length" and len(calls) == 1) else []:
            check_call(call["name"], call["arguments"])
        cut_after_a_call += finish == "length" and len(calls) >= 1
    assert cut_after_a_call, "no answer was cut after a complete call"
