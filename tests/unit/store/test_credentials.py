"""Registry credentials from the Docker config: ``auths``, then a credential helper
(``credHelpers`` for one registry, else ``credsStore``), then MR_REGISTRY_USER. The helpers
are real executables on PATH."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from modelrunner.store.credentials import lookup
from tests.fixtures.credhelper import helper_config, install_helper

REG = "registry.example.test:5000"


def test_cred_helpers_answer_for_their_registry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    asked = install_helper(tmp_path / "bin", "team", {REG: ("alice", "s3")}, monkeypatch)
    env = helper_config(tmp_path / "docker", credHelpers={REG: "team"})
    assert lookup(REG, env) == ("alice", "s3")
    assert asked.read_text().splitlines() == [REG]
    assert lookup("other.example.test", env) is None  # credHelpers name only their registry


def test_creds_store_answers_for_every_registry_cred_helpers_win(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    install_helper(tmp_path / "bin", "store", {REG: ("bob", "p1"), "b.test": ("bob", "p2")},
                   monkeypatch)  # fmt: skip
    install_helper(tmp_path / "bin", "team", {REG: ("alice", "s3")}, monkeypatch)
    env = helper_config(tmp_path / "docker", credsStore="store", credHelpers={REG: "team"})
    assert lookup(REG, env) == ("alice", "s3")
    assert lookup("b.test", env) == ("bob", "p2")


def test_a_helper_is_asked_under_each_name_docker_may_have_stored(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    asked = install_helper(tmp_path / "bin", "store", {f"https://{REG}": ("c", "d")},
                           monkeypatch)  # fmt: skip
    env = helper_config(tmp_path / "docker", credsStore="store")
    assert lookup(REG, env) == ("c", "d")
    assert asked.read_text().splitlines() == [REG, f"https://{REG}"]


def test_auths_win_over_helpers_and_helpers_over_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    install_helper(tmp_path / "bin", "store", {REG: ("helper", "h")}, monkeypatch)
    auth = base64.b64encode(b"config:c").decode()
    env = helper_config(tmp_path / "a", credsStore="store", auths={REG: {"auth": auth}})
    assert lookup(REG, env) == ("config", "c")
    env = helper_config(tmp_path / "b", credsStore="store")
    assert lookup(REG, {**env, "MR_REGISTRY_USER": "env", "MR_REGISTRY_PASSWORD": "e"}) == (
        "helper",
        "h",
    )
    env = helper_config(tmp_path / "c", credsStore="missing-helper")  # not on PATH
    assert lookup(REG, {**env, "MR_REGISTRY_USER": "env"}) == ("env", "")
