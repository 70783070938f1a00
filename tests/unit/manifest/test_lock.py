"""The lock file: written sorted and the same way every time, read back with every problem
located, compared with what the manifests and the registry say (pure, table-tested)."""

from __future__ import annotations

from pathlib import Path

import pytest

from modelrunner.manifest.lock import (
    Lock,
    LockEntry,
    diff,
    folder_problems,
    lock_key,
    parse_lock,
    read_lock,
    render,
)

A = "sha256:" + "a" * 64
B = "sha256:" + "b" * 64


def test_render_is_sorted_and_reads_back() -> None:
    entries = [LockEntry("zeta/m:1", B, "safetensors"), LockEntry("ai/x:latest", A, "gguf")]
    text = render(entries)
    assert text.index("ai/x:latest") < text.index("zeta/m:1")
    assert render(reversed(entries)) == text
    lock, problems = parse_lock(text, "models.lock")
    assert problems == []
    assert lock.entries == {e.reference: e for e in entries}
    assert render([]).endswith("references: []\n")
    assert parse_lock(render([]), "models.lock")[1] == []


@pytest.mark.parametrize(
    ("model", "key"),
    [
        ("ai/smollm2", "ai/smollm2:latest"),
        ("smollm2:135M", "ai/smollm2:135M"),
        ("docker.io/ai/smollm2:latest", "ai/smollm2:latest"),
        ("localhost:5000/team/m:v1", "localhost:5000/team/m:v1"),
        ("./models/x.gguf", None),
        ("Bad Ref", None),
    ],
)
def test_lock_key(model: str, key: str | None) -> None:
    assert lock_key(model) == key


def test_pinned_keeps_the_tag_and_adds_the_digest() -> None:
    lock = Lock({"ai/x:latest": LockEntry("ai/x:latest", A, "gguf")})
    assert lock.pinned("ai/x") == f"docker.io/ai/x:latest@{A}"
    assert lock.pinned("ai/y") is None


ENTRY = (
    "lockVersion: 1\nreferences:\n  - reference: ai/x:latest\n    digest: {d}\n    format: {f}\n"
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("lockVersion: 2\nreferences: []\n", ["1:14: $.lockVersion: lockVersion must be 1, got 2"]),
        ("references: []\n", ["1:1: $.lockVersion: lockVersion must be 1, got None"]),
        (
            "lockVersion: 1\nreferences: []\nextra: 1\n",
            ["3:1: $.extra: unknown key 'extra' (allowed: lockVersion, references)"],
        ),
        (
            "lockVersion: 1\nreferences: {}\n",
            ["2:13: $.references: references must be a list of entries"],
        ),
        (
            ENTRY.format(d="sha256:abc", f="gguf"),
            [
                "4:13: $.references[0].digest: digest must be sha256: and 64 lowercase hex digits, "
                "got 'sha256:abc'"
            ],
        ),
        (
            ENTRY.format(d=A, f="onnx"),
            [
                "5:13: $.references[0].format: format must be one of gguf, safetensors, dduf, "
                "got 'onnx'"
            ],
        ),
        (
            ENTRY.format(d=A, f="gguf").replace("ai/x:latest", "docker.io/ai/x:latest"),
            [
                "3:16: $.references[0].reference: write the reference as 'ai/x:latest' (its "
                "normalised form, as `mr lock` writes it)"
            ],
        ),
        (
            ENTRY.format(d=A, f="gguf")
            + "  - reference: ai/x:latest\n    digest: "
            + B
            + "\n    format: gguf\n",
            ["6:16: $.references[1].reference: ai/x:latest is locked twice (first at line 3)"],
        ),
        (
            "lockVersion: 1\nreferences:\n  - reference: ai/x:latest\n",
            [
                "3:5: $.references[0]: missing `digest` (a string)",
                "3:5: $.references[0]: missing `format` (a string)",
            ],
        ),
        ("lockVersion: 1\nreferences: [\n", None),
        ("a: 1\n---\nb: 2\n", ["3:1: $: a lock file holds one document, not 2 documents"]),
    ],
)
def test_problems_are_located(text: str, expected: list[str] | None) -> None:
    _, problems = parse_lock(text, "models.lock")
    got = [f"{p.line}:{p.column}: {p.path}: {p.message}" for p in problems]
    if expected is None:  # YAML syntax: located by the parser
        assert len(problems) == 1 and problems[0].rule == "yaml"
    else:
        assert got == expected


def test_read_lock_absent_and_present(tmp_path: Path) -> None:
    assert read_lock(tmp_path) == (None, [])
    (tmp_path / "models.lock").write_text(render([LockEntry("ai/x:latest", A, "gguf")]))
    lock, problems = read_lock(tmp_path)
    assert problems == [] and lock is not None and lock.entry("ai/x") is not None


@pytest.mark.parametrize(
    ("entries", "wanted", "missing", "unused", "moved"),
    [
        ({}, {}, (), (), ()),
        ({"ai/x:latest": A}, {"ai/x:latest": A}, (), (), ()),
        ({}, {"ai/x:latest": A}, ("ai/x:latest",), (), ()),
        ({"ai/x:latest": A}, {}, (), ("ai/x:latest",), ()),
        ({"ai/x:latest": A}, {"ai/x:latest": B}, (), (), (("ai/x:latest", A, B),)),
        ({"ai/x:latest": A}, {"ai/x:latest": None}, (), (), ()),  # not asked: no verdict
    ],
)
def test_diff(
    entries: dict[str, str],
    wanted: dict[str, str | None],
    missing: tuple[str, ...],
    unused: tuple[str, ...],
    moved: tuple[tuple[str, str, str], ...],
) -> None:
    lock = Lock({k: LockEntry(k, d, "gguf") for k, d in entries.items()})
    found = diff(lock, wanted)
    assert (found.missing, found.unused, found.moved) == (missing, unused, moved)
    assert bool(found) == bool(missing or unused or moved)


def test_moved_names_both_digests() -> None:
    found = diff(Lock({"ai/x:latest": LockEntry("ai/x:latest", A, "gguf")}), {"ai/x:latest": B})
    assert found.lines("models.lock") == [
        f"ai/x:latest moved: {A[:19]}… -> {B[:19]}…; run `mr lock` to take it"
    ]


def test_folder_problems_locate_missing_and_unused() -> None:
    lock, _ = parse_lock(render([LockEntry("ai/old:latest", A, "gguf")]), "m/models.lock")
    problems = folder_problems(lock, {"ai/new:latest": ("m/new.yaml", 4, 8)})
    assert [str(p) for p in problems] == [
        "m/new.yaml:4:8: $.model: warning: ai/new:latest is not in m/models.lock; run `mr lock`",
        "m/models.lock:5:5: $.references: warning: ai/old:latest is locked but no manifest "
        "uses it; run `mr lock`",
    ]
