"""Responses <-> chat completions translation (pure) and the bounded response store."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from modelrunner.http.responses.answers import Output, ResponsesStream, response_object
from modelrunner.http.responses.shapes import BadInput, ResponsesRequest
from modelrunner.http.responses.store import ResponseStore, page
from modelrunner.http.responses.translate import chat_body, input_items


def request(**fields: Any) -> ResponsesRequest:
    return msgspec.convert({"model": "m", "input": "Hi", **fields}, ResponsesRequest)


def without_ids(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in item.items() if k != "id"} for item in items]


@pytest.mark.parametrize(
    ("given", "messages"),
    [
        ("Hello", [{"role": "user", "content": "Hello"}]),
        (
            [{"role": "developer", "content": "Be brief"}, {"role": "user", "content": "Hi"}],
            [{"role": "system", "content": "Be brief"}, {"role": "user", "content": "Hi"}],
        ),
        (
            [
                {
                    "type": "message",
                    "role": "user",
                    "content": [
                        {"type": "input_text", "text": "a"},
                        {"type": "input_text", "text": "b"},
                    ],
                }
            ],
            [{"role": "user", "content": "ab"}],
        ),
        (
            [
                {
                    "role": "user",
                    "content": [
                        {"type": "input_text", "text": "what?"},
                        {"type": "input_image", "image_url": "data:image/png;base64,AA"},
                    ],
                }
            ],
            [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "what?"},
                        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AA"}},
                    ],
                }
            ],
        ),
        (
            [
                {"role": "user", "content": "weather?"},
                {"type": "function_call", "call_id": "c1", "name": "w", "arguments": "{}"},
                {"type": "function_call", "call_id": "c2", "name": "w", "arguments": '{"x":1}'},
                {"type": "function_call_output", "call_id": "c1", "output": "sunny"},
                {"type": "function_call_output", "call_id": "c2", "output": {"t": 20}},
            ],
            [
                {"role": "user", "content": "weather?"},
                {
                    "role": "assistant",
                    "content": "",
                    "tool_calls": [
                        {
                            "id": "c1",
                            "type": "function",
                            "function": {"name": "w", "arguments": "{}"},
                        },
                        {
                            "id": "c2",
                            "type": "function",
                            "function": {"name": "w", "arguments": '{"x":1}'},
                        },
                    ],
                },
                {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
                {"role": "tool", "tool_call_id": "c2", "content": '{"t":20}'},
            ],
        ),
    ],
)
def test_input_becomes_chat_messages(given: Any, messages: list[dict[str, Any]]) -> None:
    req = request(input=given)
    assert chat_body(req, [], input_items(req.input))["messages"] == messages


def test_instructions_history_and_options() -> None:
    req = request(
        instructions="You are terse.",
        max_output_tokens=16,
        temperature=0.5,
        top_p=0.9,
        tools=[
            {
                "type": "function",
                "name": "get_weather",
                "description": "d",
                "parameters": {"type": "object", "properties": {}},
                "strict": True,
            }
        ],
        tool_choice={"type": "function", "name": "get_weather"},
        text={
            "format": {
                "type": "json_schema",
                "name": "answer",
                "schema": {"type": "object"},
                "strict": True,
            }
        },
    )
    history = [
        {
            "id": "msg_1",
            "type": "message",
            "role": "user",
            "content": [{"type": "input_text", "text": "Earlier"}],
        },
        {
            "id": "msg_2",
            "type": "message",
            "role": "assistant",
            "status": "completed",
            "content": [{"type": "output_text", "text": "Reply", "annotations": []}],
        },
    ]
    body = chat_body(req, history, input_items(req.input))
    assert body == {
        "model": "m",
        "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": "Earlier"},
            {"role": "assistant", "content": "Reply"},
            {"role": "user", "content": "Hi"},
        ],
        "tools": [
            {
                "type": "function",
                "function": {
                    "name": "get_weather",
                    "description": "d",
                    "parameters": {"type": "object", "properties": {}},
                    "strict": True,
                },
            }
        ],
        "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
        "temperature": 0.5,
        "top_p": 0.9,
        "max_tokens": 16,
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": "answer", "schema": {"type": "object"}, "strict": True},
        },
    }


@pytest.mark.parametrize(
    ("fields", "param", "says"),
    [
        ({"input": []}, "input", "input is empty"),
        ({"input": [{"role": "robot", "content": "x"}]}, "input", "input[0].role"),
        ({"input": [{"type": "item_reference", "id": "x"}]}, "input", "'item_reference'"),
        ({"input": [{"role": "user", "content": [{"type": "input_file"}]}]}, "input", "content[0]"),
        ({"input": [{"role": "user", "content": 3}]}, "input", "string or a list"),
        ({"input": [{"type": "function_call", "name": "f"}]}, "input", "call_id"),
        ({"tools": [{"type": "web_search"}]}, "tools", "'web_search'"),
        ({"tool_choice": {"type": "file_search"}}, "tool_choice", "tool_choice"),
        ({"text": {"format": {"type": "json_schema"}}}, "text", "a name and a schema"),
    ],
)
def test_bad_input_names_the_field(fields: dict[str, Any], param: str, says: str) -> None:
    req = request(**fields)
    with pytest.raises(BadInput) as raised:
        chat_body(req, [], input_items(req.input))
    assert raised.value.param == param and says in str(raised.value)


def test_a_completion_becomes_a_response() -> None:
    output = Output()
    output.add_completion(
        {
            "choices": [
                {
                    "message": {
                        "role": "assistant",
                        "content": "Paris",
                        "tool_calls": [
                            {
                                "id": "call_9",
                                "type": "function",
                                "function": {"name": "f", "arguments": "{}"},
                            }
                        ],
                    },
                    "finish_reason": "length",
                }
            ],
            "usage": {"prompt_tokens": 7, "completion_tokens": 3},
        }
    )
    response = response_object(
        "resp_1", 5, "smollm2", request(max_output_tokens=3), output, "completed"
    )
    assert response["status"] == "incomplete"
    assert response["incomplete_details"] == {"reason": "max_output_tokens"}
    assert without_ids(response["output"]) == [
        {
            "type": "message",
            "status": "completed",
            "role": "assistant",
            "content": [{"type": "output_text", "text": "Paris", "annotations": []}],
        },
        {
            "type": "function_call",
            "call_id": "call_9",
            "name": "f",
            "arguments": "{}",
            "status": "completed",
        },
    ]
    assert response["usage"]["total_tokens"] == 10
    assert response["max_output_tokens"] == 3 and response["model"] == "smollm2"


def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {
        "object": "chat.completion.chunk",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }


def test_stream_events_in_order_with_consecutive_sequence_numbers() -> None:
    translator = ResponsesStream("resp_1", "smollm2", request())
    events = translator.start()
    for c in [
        chunk({"role": "assistant", "content": ""}),
        chunk({"content": "Hel"}),
        chunk({"content": "lo"}),
        chunk({}, "stop"),
        {"choices": [], "usage": {"prompt_tokens": 4, "completion_tokens": 2}},
    ]:
        events += translator.chunk(c)
    events += translator.finish()
    assert [e["type"] for e in events] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert "".join(e["delta"] for e in events if e["type"].endswith("text.delta")) == "Hello"
    final = events[-1]["response"]
    assert final["status"] == "completed" and final["usage"]["output_tokens"] == 2
    assert final["output"][0]["content"][0]["text"] == "Hello"
    assert events[0]["response"]["status"] == "in_progress"


def test_stream_of_a_tool_call_and_a_failure() -> None:
    translator = ResponsesStream("resp_1", "m", request())
    events = translator.start()
    events += translator.chunk(
        chunk(
            {
                "tool_calls": [
                    {"index": 0, "id": "call_1", "function": {"name": "f", "arguments": ""}}
                ]
            }
        )
    )
    events += translator.chunk(
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"a":'}}]})
    )
    events += translator.chunk(
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": "1}"}}]}, "tool_calls")
    )
    events += translator.finish()
    kinds = [e["type"] for e in events]
    assert kinds[2:] == [
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert events[-1]["response"]["output"][0]["arguments"] == '{"a":1}'
    failing = ResponsesStream("resp_2", "m", request())
    failed = (
        failing.start()
        + failing.chunk(chunk({"content": "x"}))
        + failing.fail("upstream_failed", "gone")
    )
    assert [e["type"] for e in failed][-2:] == ["error", "response.failed"]
    assert failed[-1]["response"]["status"] == "failed"
    assert failed[-1]["response"]["error"] == {"code": "upstream_failed", "message": "gone"}


def test_an_empty_answer_is_one_empty_message() -> None:
    translator = ResponsesStream("resp_1", "m", request())
    events = translator.start() + translator.chunk(chunk({}, "stop")) + translator.finish()
    assert events[-1]["response"]["output"][0]["content"][0]["text"] == ""
    assert [e["sequence_number"] for e in events] == list(range(len(events)))


def _response(n: int, text: str = "x") -> dict[str, Any]:
    return {"id": f"resp_{n}", "output": [{"id": f"msg_o{n}", "type": "message", "text": text}]}


def test_store_chains_history_and_drops_the_oldest() -> None:
    store = ResponseStore(max_responses=3)
    store.save(_response(1), [{"id": "in1"}], [])
    first = store.get("resp_1")
    assert first is not None
    store.save(_response(2), [{"id": "in2"}], first.history)
    second = store.get("resp_2")
    assert second is not None
    assert [i["id"] for i in second.history] == ["in1", "msg_o1", "in2", "msg_o2"]
    for n in range(3, 6):
        store.save(_response(n), [{"id": f"in{n}"}], [])
    assert len(store) == 3 and store.get("resp_2") is None and store.get("resp_5") is not None
    assert store.delete("resp_5") and not store.delete("resp_5")


def test_store_is_bounded_in_bytes() -> None:
    store = ResponseStore(max_bytes=10_000)
    for n in range(20):
        store.save(_response(n, "y" * 2_000), [], [])
    assert 1 <= len(store) <= 5 and store.get("resp_19") is not None


@pytest.mark.parametrize(
    ("order", "limit", "after", "ids", "more"),
    [
        ("desc", 20, None, ["c", "b", "a"], False),
        ("asc", 2, None, ["a", "b"], True),
        ("asc", 2, "a", ["b", "c"], False),
        ("desc", 1, "c", ["b"], True),
        ("asc", 5, "zzz", [], False),
    ],
)
def test_input_items_pages(
    order: str, limit: int, after: str | None, ids: list[str], more: bool
) -> None:
    listed = page([{"id": "a"}, {"id": "b"}, {"id": "c"}], order, limit, after)
    assert [i["id"] for i in listed["data"]] == ids and listed["has_more"] is more
    assert listed["first_id"] == (ids[0] if ids else None)
