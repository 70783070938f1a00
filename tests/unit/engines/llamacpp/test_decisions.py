"""The llama.cpp engine's pure decisions, table-tested: slot choice by longest cached
prefix, batch composition, stop strings across tokens, UTF-8-safe detokenization and
request field checks, and the choices of a request with ``n`` > 1 (no model loaded)."""

from __future__ import annotations

from typing import Any

import pytest

from modelrunner.engines.llamacpp.chat_template import ChatTemplate, check_messages
from modelrunner.engines.llamacpp.choices import NO_SEED, check_fits, choice_seeds, total_usage
from modelrunner.engines.llamacpp.detokenize import Utf8Stream
from modelrunner.engines.llamacpp.jobs import TokenCounts
from modelrunner.engines.llamacpp.params import parse_generation
from modelrunner.engines.llamacpp.slots import (
    Chunk,
    Placement,
    SlotChoice,
    choose_slot,
    choose_slots,
    common_prefix,
    plan_batch,
)
from modelrunner.engines.llamacpp.stops import StopScan, scan_stops
from modelrunner.engines.serving import RequestError


@pytest.mark.parametrize(
    ("a", "b", "shared"),
    [([], [], 0), ([1, 2, 3], [1, 2, 4], 2), ([1, 2], [1, 2, 3], 2), ([5], [6], 0)],
)
def test_common_prefix(a: list[int], b: list[int], shared: int) -> None:
    assert common_prefix(a, b) == shared


@pytest.mark.parametrize(
    ("free", "prompt", "expected"),
    [
        # nothing cached anywhere: the least recently used (first listed) slot
        ([(2, []), (0, []), (1, [])], [1, 2, 3], SlotChoice(2, 0)),
        # the slot holding the conversation so far wins, whatever its place in the list
        ([(0, [9, 9]), (1, [1, 2, 3, 4])], [1, 2, 3, 4, 5, 6], SlotChoice(1, 4)),
        # a longer cache that diverges counts only its shared part
        ([(0, [1, 2, 7, 7, 7, 7]), (1, [1, 2, 3])], [1, 2, 3, 4], SlotChoice(1, 3)),
        # equal prefixes: the earlier (least recently used) slot
        ([(3, [1, 2]), (0, [1, 2])], [1, 2, 5], SlotChoice(3, 2)),
        # the whole prompt cached: its last token is decoded again for the logits
        ([(0, [1, 2, 3])], [1, 2, 3], SlotChoice(0, 2)),
        ([(0, [1, 2, 3, 4])], [1, 2], SlotChoice(0, 1)),
        ([(0, [1])], [1], SlotChoice(0, 0)),
    ],
)
def test_choose_slot(
    free: list[tuple[int, list[int]]], prompt: list[int], expected: SlotChoice
) -> None:
    assert choose_slot(free, prompt) == expected


@pytest.mark.parametrize(
    ("free", "prompt", "n", "expected"),
    [
        # one choice: choose_slot's answer, nothing else taken
        ([(2, []), (0, [1, 2])], [1, 2, 3], 1, Placement(SlotChoice(0, 2), [])),
        # choice 0 where the prompt is cached; the others on the longest-idle of the rest
        (
            [(2, []), (0, [7]), (1, [1, 2]), (3, [])],
            [1, 2, 3],
            3,
            Placement(SlotChoice(1, 2), [2, 0]),
        ),
        # nothing cached: choice 0 on the longest-idle, the others after it
        ([(3, []), (1, []), (0, [])], [5], 3, Placement(SlotChoice(3, 0), [1, 0])),
    ],
)
def test_choose_slots(
    free: list[tuple[int, list[int]]], prompt: list[int], n: int, expected: Placement
) -> None:
    assert choose_slots(free, prompt, n) == expected


def test_choose_slots_needs_a_slot_per_choice() -> None:
    with pytest.raises(ValueError):
        choose_slots([(0, []), (1, [])], [1], 3)


@pytest.mark.parametrize(
    ("request_seed", "server_seed", "n", "seeds"),
    [
        (1234, NO_SEED, 1, (1234,)),  # n=1: the request's seed as before
        (1234, 7, 3, (1234, 1235, 1236)),  # choice i: seed + i (the request's wins)
        (None, 7, 3, (7, 8, 9)),  # no request seed: the server's --seed, + i
        (None, NO_SEED, 3, (NO_SEED,) * 3),  # no seed at all: each choice random
        (NO_SEED, 7, 2, (NO_SEED,) * 2),  # seed -1 (& 0xFFFFFFFF): random, as for n=1
        (0, NO_SEED, 2, (0, 1)),
        # past the top: wraps to 0, never onto NO_SEED (that would make it random)
        (0xFFFFFFFD, NO_SEED, 4, (0xFFFFFFFD, 0xFFFFFFFE, 0, 1)),
    ],
)
def test_choice_seeds(
    request_seed: int | None, server_seed: int, n: int, seeds: tuple[int, ...]
) -> None:
    assert choice_seeds(request_seed, server_seed, n) == seeds


@pytest.mark.parametrize(("n", "slots", "fits"), [(1, 1, True), (4, 4, True), (2, 1, False),
                                                  (5, 4, False)])  # fmt: skip
def test_check_fits(n: int, slots: int, fits: bool) -> None:
    if fits:
        check_fits(n, slots)
        return
    with pytest.raises(RequestError) as info:
        check_fits(n, slots)
    assert (info.value.status, info.value.param) == (400, "n")
    assert f"n must be at most {slots}" in str(info.value)


@pytest.mark.parametrize(
    ("usages", "total"),
    [
        ([TokenCounts(20, 5, 3)], TokenCounts(20, 5, 3)),
        # the prompt once (choice 0 decoded it), the completions summed
        (
            [TokenCounts(20, 5, 3), TokenCounts(20, 7, 3), TokenCounts(20, 1, 3)],
            TokenCounts(20, 13, 3),
        ),
    ],
)
def test_total_usage(usages: list[TokenCounts], total: TokenCounts) -> None:
    assert total_usage(usages) == total


def test_choose_slot_needs_a_free_slot() -> None:
    with pytest.raises(ValueError):
        choose_slot([], [1])


@pytest.mark.parametrize(
    ("decoding", "prefilling", "n_batch", "expected"),
    [
        ([], [], 512, []),
        ([0, 1], [], 512, [Chunk(0, 1), Chunk(1, 1)]),
        # a long prompt gets what the decoding slots leave, and no more
        ([0, 1, 2], [(3, 1500)], 512, [Chunk(0, 1), Chunk(1, 1), Chunk(2, 1), Chunk(3, 509)]),
        # prompts in arrival order share the budget
        ([], [(1, 300), (0, 300)], 512, [Chunk(1, 300), Chunk(0, 212)]),
        ([0], [(1, 10), (2, 10)], 512, [Chunk(0, 1), Chunk(1, 10), Chunk(2, 10)]),
        # no budget left for prompts
        ([0, 1], [(2, 5)], 2, [Chunk(0, 1), Chunk(1, 1)]),
    ],
)
def test_plan_batch(
    decoding: list[int], prefilling: list[tuple[int, int]], n_batch: int, expected: list[Chunk]
) -> None:
    assert plan_batch(decoding, prefilling, n_batch) == expected


@pytest.mark.parametrize(
    ("held", "new", "stops", "expected"),
    [
        ("", "hello", [], StopScan("hello", "", False)),
        ("", "hello", ["###"], StopScan("hello", "", False)),
        ("", "hello #", ["###"], StopScan("hello ", "#", False)),  # may start a stop
        ("#", "#", ["###"], StopScan("", "##", False)),
        ("##", "# tail", ["###"], StopScan("", "", True, "###")),  # split over three tokens
        ("##", "x", ["###"], StopScan("##x", "", False)),  # was not a stop after all
        ("", "a\n\nb", ["\n\n"], StopScan("a", "", True, "\n\n")),
        ("", "one END two STOP", ["STOP", "END"], StopScan("one ", "", True, "END")),  # earliest
        ("", "abcab", ["abcabd"], StopScan("", "abcab", False)),
        ("", "xab", ["abc", "b"], StopScan("xa", "", True, "b")),
    ],
)
def test_scan_stops(held: str, new: str, stops: list[str], expected: StopScan) -> None:
    assert scan_stops(held, new, stops) == expected


def test_utf8_stream_never_splits_a_character() -> None:
    stream = Utf8Stream()
    emoji = "😀".encode()  # four bytes, as a byte-level tokenizer may split them
    cjk = "漢".encode()
    pieces = [b"Hi ", emoji[:1], emoji[1:3], emoji[3:] + cjk[:2], cjk[2:], b"!"]
    out = [stream.push(p) for p in pieces]
    assert out == ["Hi ", "", "", "😀", "漢", "!"]
    assert stream.flush() == ""


def test_utf8_stream_flushes_a_broken_tail_as_replacement() -> None:
    stream = Utf8Stream()
    assert stream.push("é".encode()[:1]) == ""
    assert stream.flush() == "\ufffd"


def _bad(body: dict[str, Any]) -> RequestError:
    with pytest.raises(RequestError) as info:
        parse_generation(body, n_vocab=100)
    return info.value


@pytest.mark.parametrize(
    ("body", "param", "message"),
    [
        ({"max_tokens": 0}, "max_tokens", "max_tokens must be at least 1, got 0"),
        ({"max_completion_tokens": -3}, "max_completion_tokens", "at least 1"),
        ({"max_tokens": "many"}, "max_tokens", "max_tokens must be an integer, got 'many'"),
        ({"temperature": "hot"}, "temperature", "temperature must be a number, got 'hot'"),
        ({"top_p": 2}, "top_p", "between 0 and 1"),
        ({"seed": True}, "seed", "seed must be an integer, got True"),
        ({"n": 0}, "n", "n must be between 1 and 8, got 0"),
        ({"n": -1}, "n", "n must be between 1 and 8, got -1"),
        ({"n": 9}, "n", "n must be between 1 and 8, got 9"),
        ({"n": 1000}, "n", "n must be between 1 and 8, got 1000"),
        ({"n": "2"}, "n", "n must be an integer, got '2'"),
        ({"n": 2.5}, "n", "n must be an integer, got 2.5"),
        ({"n": True}, "n", "n must be an integer, got True"),
        ({"stop": 5}, "stop", "stop must be a string or a list of strings"),
        ({"stop": ["a"] * 17}, "stop", "at most 16"),
        ({"logit_bias": {"x": 1}}, "logit_bias", "token ids"),
        ({"logit_bias": {"100": 1}}, "logit_bias", "outside the vocabulary"),
        ({"logit_bias": {"5": 101}}, "logit_bias", "-100 to 100"),
        ({"stream": "yes"}, "stream", "stream must be true or false"),
        ({"stream_options": {"include_usage": True}}, "stream_options", "stream: true"),
        ({"stream": True, "stream_options": []}, "stream_options", "must be an object"),
        ({"response_format": {"type": "yaml"}}, "response_format", "text or json_object"),
        ({"response_format": "json"}, "response_format", "text or json_object"),
    ],
)
def test_bad_generation_fields_name_the_field(
    body: dict[str, Any], param: str, message: str
) -> None:
    error = _bad(body)
    assert error.status == 400
    assert error.param == param
    assert message in str(error)


def test_generation_fields() -> None:
    g = parse_generation(
        {
            "max_tokens": 5,
            "max_completion_tokens": 7,  # OpenAI's current name wins
            "stop": "\n",
            "seed": -1,
            "temperature": 0,
            "logit_bias": {"3": -100},
            "stream": True,
            "stream_options": {"include_usage": True},
            "n": 1,
        },
        n_vocab=10,
    )
    assert g.n == 1
    assert parse_generation({"n": 8}, 10).n == 8 and parse_generation({}, 10).n == 1
    assert g.max_tokens == 7
    assert g.stop == ("\n",)
    assert g.sampling.seed == 0xFFFFFFFF
    assert g.sampling.temperature == 0.0
    assert g.sampling.logit_bias == ((3, -100.0),)
    assert g.stream and g.include_usage
    assert parse_generation({}, 10, default_max_tokens=16).max_tokens == 16
    json_object = parse_generation({"response_format": {"type": "json_object"}}, 10)
    assert json_object.sampling.grammar is not None and "object" in json_object.sampling.grammar
    assert parse_generation({"response_format": {"type": "text"}}, 10).sampling.grammar is None
    assert parse_generation({}, 10).max_tokens is None


@pytest.mark.parametrize(
    ("messages", "param"),
    [
        ([], "messages"),
        ("hi", "messages"),
        ([{"role": "robot", "content": "x"}], "messages[0].role"),
        ([{"role": "user", "content": "a"}, "b"], "messages[1]"),
        ([{"role": "user", "content": 3}], "messages[0].content"),
        ([{"role": "user"}], "messages[0].content"),
        ([{"role": "user", "content": [{"type": "image_url"}]}], "messages[0].content[0]"),
    ],
)
def test_bad_messages_name_the_field(messages: Any, param: str) -> None:
    with pytest.raises(RequestError) as info:
        check_messages(messages)
    assert (info.value.status, info.value.param) == (400, param)


def test_messages_content_parts_become_text() -> None:
    checked = check_messages(
        [
            {
                "role": "user",
                "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}],
            }
        ]
    )
    assert checked == [{"role": "user", "content": "ab"}]


def test_chat_template_sees_tools_and_tool_calls() -> None:
    template = ChatTemplate(
        "{{ bos_token }}{% for t in tools %}[{{ t.function.name }}]{% endfor %}"
        "{% for m in messages %}<{{ m.role }}>{{ m.content or '' }}"
        "{% for c in m.tool_calls or [] %}{{ c.function.arguments | tojson }}{% endfor %}"
        "{% endfor %}{% if add_generation_prompt %}<assistant>{% endif %}",
        bos_token="<s>",
    )
    tools = [{"type": "function", "function": {"name": "weather", "parameters": {}}}]
    call = {"id": "1", "type": "function", "function": {"name": "weather", "arguments": "é"}}
    messages = check_messages(
        [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": "1", "content": "sunny"},
        ]
    )
    assert template.render(messages, tools=tools) == (
        '<s>[weather]<user>hi<assistant>"é"<tool>sunny<assistant>'
    )


def test_chat_template_refusal_is_a_400() -> None:
    template = ChatTemplate("{{ raise_exception('only user messages') }}")
    with pytest.raises(RequestError) as info:
        template.render([{"role": "user", "content": "x"}])
    assert info.value.status == 400
    assert "only user messages" in str(info.value)
