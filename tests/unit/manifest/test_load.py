"""The loader on awkward input: every case ends in a located problem, never a traceback."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from modelrunner.manifest.files import list_manifests
from modelrunner.manifest.load import MAX_FILE_BYTES, load_file, load_folder, load_text

GOOD = "apiVersion: modelrunner/v1\nmodel: ai/smollm2:135M-Q4_1\n"


def only_problem(text: str) -> str:
    result = load_text(text, "m.yaml", "m")
    assert len(result.problems) == 1, result.problems
    return str(result.problems[0])


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", "m.yaml:1:1: $: file holds no manifest (it is empty)"),
        ("# only a comment\n---\n", "m.yaml:1:1: $: file holds no manifest (it is empty)"),
        ("42\n", "m.yaml:1:1: $: a manifest must be a mapping, got int 42"),
        (
            GOOD + "\tcontext_size: 1\n",
            "m.yaml:3:1: $: YAML syntax error: found character '\\t' that cannot start any token",
        ),
        (
            GOOD + "description: !!python/object:os.system {}\n",
            "m.yaml:3:14: $.description: unsupported YAML tag "
            "'tag:yaml.org,2002:python/object:os.system'",
        ),
        (
            GOOD + "description: !!binary aGk=\n",
            "m.yaml:3:14: $.description: expected a string, got b'hi'",
        ),
        (GOOD + "? [a, b]\n: 1\n", "m.yaml:3:3: $: keys must be strings, got '?'"),
        (
            GOOD + "context_size: \x07\n",
            "m.yaml:3:15: $: control character U+0007 is not allowed in YAML",
        ),
        ("a: " + "[" * 300 + "]" * 300 + "\n", "YAML nesting is"),
        ("a: &a [*a]\n", "m.yaml:1:4: $: YAML nesting is deeper than 64 levels"),
    ],
)
def test_bad_yaml_gets_a_located_message(text: str, expected: str) -> None:
    problem = only_problem(text)
    assert problem.startswith(expected) or (
        not expected.startswith("m.yaml") and expected in problem
    )


def test_name_defaults_to_file_stem_for_a_lone_document() -> None:
    result = load_text(GOOD, "smol.yaml", "smol")
    assert [m.spec.name for m in result.manifests] == ["smol"]


def test_stem_that_is_not_a_model_name_is_reported() -> None:
    result = load_text(GOOD, "my model.yaml", "my model")
    assert [str(p) for p in result.problems] == [
        "my model.yaml:1:1: $.name: 'my model' is not a model id: letters, digits and "
        ". _ : / @ + -, starting with a letter or digit"
    ]


def test_merge_keys_and_anchors_work() -> None:
    text = (
        "base: &base\n  threads: 2\n"  # an unknown key, to prove positions survive merges
        "apiVersion: modelrunner/v1\nmodel: ai/smollm2:135M-Q4_1\n"
        "llama.cpp:\n  <<: *base\n  parallel: 2\n"
    )
    result = load_text(text, "m.yaml", "m")
    assert [str(p) for p in result.problems] == [
        "m.yaml:1:1: $.base: unknown key 'base' (allowed here: aliases, apiVersion, context_size, "
        "description, diffusers, engine, env, keep_alive, limits, llama.cpp, model, name, "
        "placement, preload, pull_policy, runtime_flags, vllm)"
    ]
    text = text.replace("base: &base\n  threads: 2\n", "").replace("*base", "{threads: 2}")
    (manifest,) = load_text(text, "m.yaml", "m").manifests
    assert manifest.spec.llama_cpp is not None
    assert (manifest.spec.llama_cpp.threads, manifest.spec.llama_cpp.parallel) == (2, 2)


def test_bom_and_crlf_are_fine() -> None:
    result = load_text("\ufeff" + GOOD.replace("\n", "\r\n"), "m.yaml", "m")
    assert result.problems == []
    assert len(result.manifests) == 1


def test_huge_file_is_refused_without_reading_it_all(tmp_path: Path) -> None:
    path = tmp_path / "big.yaml"
    path.write_bytes(GOOD.encode() + b"#" * (MAX_FILE_BYTES * 3))
    (problem,) = load_file(path).problems
    assert str(problem) == (
        f"{path}:1:1: $: file is 3.0 MiB; a manifest file may hold at most 1 MiB"
    )


def test_folder_listing_skips_hidden_and_editor_files_and_follows_configmap_links(
    tmp_path: Path,
) -> None:
    # A Kubernetes ConfigMap volume: files are symlinks into ..data, itself a symlink.
    data = tmp_path / "..2026_11_21_00_00_00.000"
    data.mkdir()
    (data / "a.yaml").write_text(GOOD)
    os.symlink(data.name, tmp_path / "..data")
    os.symlink("..data/a.yaml", tmp_path / "a.yaml")
    for junk in (".a.yaml.swp", "a.yaml~", "#a.yaml#", ".hidden.yaml", "notes.txt"):
        (tmp_path / junk).write_text("junk: [")
    (tmp_path / "sub.yaml").mkdir()
    assert [p.name for p in list_manifests(tmp_path)] == ["a.yaml"]
    result = load_folder(tmp_path)
    assert result.problems == []
    assert [m.spec.name for m in result.manifests] == ["a"]


def test_content_hash_changes_with_content_only() -> None:
    (a,) = load_text(GOOD, "a.yaml", "m").manifests
    (b,) = load_text("# comment\n" + GOOD, "b.yaml", "m").manifests
    (c,) = load_text(GOOD + "context_size: 8\n", "a.yaml", "m").manifests
    assert a.content_hash == b.content_hash != c.content_hash
