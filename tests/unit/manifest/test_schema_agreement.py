"""The published JSON Schema and the msgspec Structs accept exactly the same documents:
on every shipped example, and on thousands of generated near-misses."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from modelrunner.manifest import schema
from modelrunner.manifest.load import prepare
from modelrunner.manifest.spec import ModelManifest
from modelrunner.manifest.yamldoc import YamlSyntaxError, parse_documents
from tests.fixtures.common import ROOT

FIELDS = [
    "apiVersion", "name", "aliases", "description", "model", "engine", "context_size",
    "pull_policy", "preload", "keep_alive", "limits", "runtime_flags", "env",
    "llama.cpp", "vllm", "diffusers", "threads", "parallel", "n_gpu_layers", "embeddings",
    "hf_overrides", "gpu_memory_utilization", "tensor_parallel_size", "max_num_seqs",
    "dtype", "size", "steps", "max_concurrent_requests", "request_timeout",
    "placement", "hosts", "match_labels", "pipeline_parallel_size",
    "distributed_executor_backend", "ray_address",
]  # fmt: skip


def schema_accepts(document: Any) -> bool:
    return not schema.check(document)


def struct_accepts(document: Any) -> bool:
    try:
        msgspec.convert(document, ModelManifest)
    except msgspec.ValidationError:
        return False
    return True


def example_documents() -> list[tuple[str, Any]]:
    documents = []
    globs = ("examples/*.yaml", "examples/invalid/*.yaml", "models.d/*.yaml")
    for path in sorted(p for g in globs for p in ROOT.glob(g)):
        try:
            text = path.read_text(encoding="utf-8")
            parsed = parse_documents(text)
        except (UnicodeDecodeError, YamlSyntaxError):
            continue
        for doc in parsed:
            if isinstance(doc.data, dict) and not doc.issues:
                documents.append((f"{path.name}#{doc.index}", prepare(doc.data, path.stem)))
    return documents


EXAMPLES = example_documents()


def test_the_schema_is_valid_2020_12() -> None:
    Draft202012Validator.check_schema(schema.schema())


@pytest.mark.parametrize(("where", "document"), EXAMPLES, ids=[w for w, _ in EXAMPLES])
def test_schema_and_structs_agree_on_examples(where: str, document: Any) -> None:
    assert schema_accepts(document) == struct_accepts(document)


def test_examples_cover_both_verdicts() -> None:
    verdicts = {schema_accepts(document) for _, document in EXAMPLES}
    assert verdicts == {True, False}


# No nulls: the Structs read None as "not set", while the schema, which the loader runs
# first, refuses an explicit null (test_explicit_null_is_refused_by_the_loader).
scalars = (
    st.booleans()
    | st.integers(min_value=-(2**40), max_value=2**40)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.sampled_from([2.0, 1.0, 0.5, 1e300, 10**20])
    | st.sampled_from(["", "vllm", "llama.cpp", "512x512", "5m", "-1", "0", "--seed", "1", "a_b"])
    | st.sampled_from(["gpu-1", "h100", "ray", "mp", "auto", "10.0.0.5:6379", "a.b/c", "-x"])
    | st.text(max_size=12)
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=6,
)


@st.composite
def mutated(draw: st.DrawFn) -> Any:
    _, document = draw(st.sampled_from([e for e in EXAMPLES if schema_accepts(e[1])]))
    document = msgspec.json.decode(msgspec.json.encode(document))  # a deep copy
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        target = document
        # Walk down a few levels, then replace, delete or add one key.
        while isinstance(target, dict) and target and draw(st.booleans()):
            key = draw(st.sampled_from(sorted(target)))
            if not isinstance(target[key], dict):
                break
            target = target[key]
        if not isinstance(target, dict):
            continue
        action = draw(st.sampled_from(["set", "delete", "add"]))
        if action == "delete" and target:
            del target[draw(st.sampled_from(sorted(target)))]
        else:
            key = draw(
                st.sampled_from(sorted(target))
                if action == "set" and target
                else st.sampled_from(FIELDS)
            )
            target[key] = draw(values)
    # As the loader does: a missing name comes from the file name.
    return prepare(document, "from-file-name") if isinstance(document, dict) else document


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated())
def test_schema_and_structs_agree_on_generated_documents(document: Any) -> None:
    assert schema_accepts(document) == struct_accepts(document)


def test_explicit_null_is_refused_by_the_loader() -> None:
    from modelrunner.manifest.load import load_text

    text = "apiVersion: modelrunner/v1\nmodel: ai/smollm2:135M-Q4_1\ncontext_size:\n"
    assert [str(p) for p in load_text(text, "m.yaml", "m").problems] == [
        "m.yaml:3:14: $.context_size: expected an integer, got null"
    ]


@pytest.mark.parametrize(
    "change",
    [
        {"context_size": 2.0},
        {"context_size": True},
        {"context_size": "4096"},
        {"vllm": {"gpu_memory_utilization": 1}},
        {"vllm": {"max_num_seqs": 1.5}},
        {"aliases": ["a", "a"]},
        {"engine": "vllm", "llama.cpp": {}},
        {"llama.cpp": {}, "vllm": {}},
        {"vllm": {"hf_overrides": {"a": [{"b-c": 1}]}}},
        {"keep_alive": "1h30m"},
        {"keep_alive": -2},
        {"env": {"A": "1", "2B": "x"}},
        {"placement": {}},
        {"placement": {"hosts": []}},
        {"placement": {"hosts": ["a", "a"]}},
        {"placement": {"hosts": ["gpu-1"], "match_labels": {"example.com/gpu": "h100"}}},
        {"placement": {"match_labels": {"gpu": ""}}},
        {"placement": {"match_labels": {"gpu": "-x"}}},
        {"placement": {"match_labels": {"Example.com/gpu": "x"}}},
        {"vllm": {"ray_address": "10.0.0.5:6379"}},
        {"vllm": {"ray_address": "auto", "distributed_executor_backend": "mp"}},
        {"vllm": {"ray_address": "head:6379", "distributed_executor_backend": "ray"}},
        {"vllm": {"ray_address": "ray://head:10001", "distributed_executor_backend": "ray"}},
        {"vllm": {"pipeline_parallel_size": 0}},
        # a final newline: Python's `$` would let it through, JSON Schema's does not
        {"placement": {"hosts": ["a\n"]}},
        {"placement": {"match_labels": {"gpu\n": "x"}}},
        {"placement": {"match_labels": {"gpu": "x\n"}}},
        {"vllm": {"distributed_executor_backend": "ray", "ray_address": "h:1\n"}},
    ],
    ids=str,
)
def test_schema_and_structs_agree_on_edge_cases(change: dict[str, Any]) -> None:
    document = {"apiVersion": "modelrunner/v1", "name": "m", "model": "ai/m:1", **change}
    assert schema_accepts(document) == struct_accepts(document)
