"""Manifests, configs and bundle naming: the pure rules of the artifact format."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from modelrunner.errors import StoreError
from modelrunner.store import mediatypes as mt
from modelrunner.store.artifact import (
    Descriptor,
    build_config,
    build_manifest,
    parse_config,
    parse_manifest,
    plan_bundle,
)
from modelrunner.store.credentials import from_auths
from modelrunner.store.folder_meta import classify
from modelrunner.store.gguf_meta import human
from modelrunner.store.remote import api_host, parse_challenge


def d(n: int) -> str:
    return f"sha256:{n:064x}"


def layer(media: str, n: int, path: str | None = None, title: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"mediaType": media, "digest": d(n), "size": n}
    notes = {}
    if path:
        notes[mt.ANNOTATION_FILEPATH] = path
    if title:
        notes[mt.ANNOTATION_TITLE] = title
    if notes:
        out["annotations"] = notes
    return out


def manifest(*layers: dict[str, Any], config_type: str = mt.CONFIG_V01) -> bytes:
    return json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": mt.OCI_MANIFEST,
            "config": {"mediaType": config_type, "digest": d(999), "size": 10},
            "layers": list(layers),
        }
    ).encode()


def plan(raw: bytes, fmt: str | None = None, **extra: Any) -> Any:
    m = parse_manifest(raw, "ref")
    config = json.dumps({"config": {"format": fmt, **extra} if fmt else extra}).encode()
    return plan_bundle(m, parse_config(config, m, "ref"), "ref")


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"not json", "manifest is not valid JSON"),
        (b"[]", "not a JSON object"),
        (json.dumps({"schemaVersion": 2, "manifests": []}).encode(), "image index"),
        (
            manifest(layer(mt.GGUF, 1), config_type="application/vnd.oci.image.config.v1+json"),
            "unsupported config media type 'application/vnd.oci.image.config.v1\\+json'",
        ),
        (manifest(), "no layers"),
        (
            manifest({"mediaType": mt.GGUF, "digest": "sha256:../../etc", "size": 1}),
            "invalid digest",
        ),
        (manifest({"mediaType": mt.GGUF, "digest": d(1), "size": -1}), "invalid size"),
        (json.dumps({"schemaVersion": 1}).encode(), "schemaVersion must be 2"),
    ],
)
def test_bad_manifests_are_refused_with_the_reason(raw: bytes, message: str) -> None:
    with pytest.raises(StoreError, match=message):
        parse_manifest(raw, "registry.example/m:v1")


def test_single_gguf_without_annotations_is_model_gguf() -> None:
    p = plan(
        manifest(
            layer(mt.GGUF, 1), layer(mt.LICENSE, 2), layer(mt.CHAT_TEMPLATE, 3), layer(mt.MMPROJ, 4)
        ),
        "gguf",
    )
    assert p.model == "model.gguf"
    assert [e.path for e in p.entries] == [
        "model.gguf",
        "LICENSE",
        "template.jinja",
        "model.mmproj",
    ]
    assert (p.chat_template, p.mmproj) == ("template.jinja", "model.mmproj")


def test_shards_without_names_get_llama_cpp_split_names() -> None:
    p = plan(manifest(layer(mt.GGUF, 1), layer(mt.GGUF, 2), layer(mt.GGUF, 3)), "gguf")
    assert [e.path for e in p.entries] == [
        "model-00001-of-00003.gguf",
        "model-00002-of-00003.gguf",
        "model-00003-of-00003.gguf",
    ]
    assert p.model == "model-00001-of-00003.gguf"


def test_annotated_shards_keep_their_names_and_the_first_is_loaded() -> None:
    p = plan(
        manifest(
            layer(mt.GGUF, 2, "m-00002-of-00002.gguf"), layer(mt.GGUF, 1, "m-00001-of-00002.gguf")
        ),
        "gguf",
    )
    assert p.model == "m-00001-of-00002.gguf"


def test_title_annotation_names_a_file_when_no_filepath() -> None:
    assert plan(manifest(layer(mt.GGUF, 1, title="dir/x.gguf")), "gguf").model == "x.gguf"


def test_safetensors_folder_is_laid_out_by_filepath() -> None:
    p = plan(
        manifest(
            layer(mt.SAFETENSORS, 1, "model.safetensors"),
            layer(mt.MODEL_FILE, 2, "config.json"),
            layer(mt.SAFETENSORS, 3, "text_encoder/model.safetensors"),
            layer(mt.VLLM_CONFIG_TAR, 4),
            layer("application/x-unknown", 5),
            config_type=mt.CONFIG_V02,
        ),
        "safetensors",
    )
    assert p.model == "."
    assert [(e.path, e.untar) for e in p.entries] == [
        ("model.safetensors", False),
        ("text_encoder/model.safetensors", False),
        ("config.json", False),
        (".", True),
    ]


@pytest.mark.parametrize("path", ["/etc/passwd", "../x", "a/../../x", "a\\b", "a//b", "./"])
def test_paths_that_leave_the_bundle_are_refused(path: str) -> None:
    raw = manifest(layer(mt.SAFETENSORS, 1, "m.safetensors"), layer(mt.MODEL_FILE, 2, path))
    with pytest.raises(StoreError, match="unsafe file path"):
        plan(raw, "safetensors")


def test_two_layers_at_one_path_are_refused() -> None:
    with pytest.raises(StoreError, match=r"same file path 'a\.gguf'"):
        plan(manifest(layer(mt.GGUF, 1, "a.gguf"), layer(mt.LICENSE, 2, "a.gguf")), "gguf")


@pytest.mark.parametrize(
    ("fmt", "layers", "expected"),
    [
        (None, [layer(mt.GGUF, 1)], "gguf"),  # no format field: the layers tell
        ("diffusers", [layer(mt.DDUF, 1)], "dduf"),  # DMR's older name for DDUF
        ("dduf", [layer(mt.DDUF, 1)], "dduf"),
    ],
)
def test_format_from_config_or_layers(
    fmt: str | None, layers: list[dict[str, Any]], expected: str
) -> None:
    assert plan(manifest(*layers), fmt).format == expected


def test_format_without_its_weights_is_refused() -> None:
    with pytest.raises(StoreError, match="format safetensors but no"):
        plan(manifest(layer(mt.GGUF, 1)), "safetensors")


def test_bad_context_size_is_refused() -> None:
    with pytest.raises(StoreError, match="context_size must be a positive integer"):
        plan(manifest(layer(mt.GGUF, 1)), "gguf", context_size="big")


def test_built_config_and_manifest_parse_back() -> None:
    layers = [Descriptor(mt.GGUF, d(1), 1, {mt.ANNOTATION_FILEPATH: "m.gguf"})]
    created = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
    raw_config = build_config("gguf", [d(1)], created, {"quantization": "Q4_1", "gguf": {}}, 4096)
    config = json.loads(raw_config)
    assert config == {
        "config": {"format": "gguf", "quantization": "Q4_1", "context_size": 4096},
        "descriptor": {"created": "2025-01-02T03:04:05Z"},
        "rootfs": {"type": "rootfs", "diff_ids": [d(1)]},
    }
    m = parse_manifest(
        build_manifest(Descriptor(mt.CONFIG_V01, d(9), len(raw_config)), layers), "x"
    )
    assert m.layers == tuple(layers)
    assert parse_config(raw_config, m, "x").context_size == 4096


@pytest.mark.parametrize(
    ("name", "media"),
    [
        ("model.safetensors", mt.SAFETENSORS),
        ("config.json", mt.MODEL_FILE),
        ("tokenizer.model", mt.MODEL_FILE),
        ("chat_template.json", mt.CHAT_TEMPLATE),
        ("template.jinja", mt.CHAT_TEMPLATE),
        ("LICENSE.md", mt.LICENSE),
        ("x.dduf", mt.DDUF),
    ],
)
def test_folder_files_are_classified_like_dmr(name: str, media: str) -> None:
    assert classify(name) == media


def test_human_units() -> None:
    assert human(134515008, ("", "K", "M", "B"), 1000) == "134.52M"
    assert human(98364127, ("B", "KiB", "MiB"), 1024) == "93.81MiB"


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (
            'Bearer realm="https://auth.example/token",service="reg",scope="repository:a/b:pull"',
            (
                "bearer",
                {
                    "realm": "https://auth.example/token",
                    "service": "reg",
                    "scope": "repository:a/b:pull",
                },
            ),
        ),
        ('Basic realm="mr-test"', ("basic", {"realm": "mr-test"})),
    ],
)
def test_auth_challenges(header: str, expected: tuple[str, dict[str, str]]) -> None:
    assert parse_challenge(header) == expected


def test_docker_config_lookup() -> None:
    config = {
        "auths": {
            "https://index.docker.io/v1/": {"auth": "dXNlcjpwYXNz"},  # user:pass
            "localhost:5000": {"username": "u", "password": "p"},
        }
    }
    assert from_auths(config, "docker.io") == ("user", "pass")
    assert from_auths(config, "127.0.0.1:5000") == ("u", "p")
    assert from_auths(config, "registry.example") is None
    assert api_host("docker.io") == "registry-1.docker.io"
