"""API keys: the loopback rule, key files, constant-time checks."""

from __future__ import annotations

from pathlib import Path

import pytest

from modelrunner.errors import UsageError
from modelrunner.http.keys import KeyCheck, check_settings, is_loopback, parse_key_lines
from modelrunner.settings import Settings


@pytest.mark.parametrize(
    ("host", "loopback"),
    [("127.0.0.1", True), ("127.1.2.3", True), ("::1", True), ("[::1]", True),
     ("localhost", True), ("0.0.0.0", False), ("::", False), ("192.168.1.5", False),
     ("example.org", False)],
)  # fmt: skip
def test_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_non_loopback_without_keys_is_refused_with_a_clear_message() -> None:
    with pytest.raises(
        UsageError, match=r"refusing to listen on 0\.0\.0\.0:12434 without API keys"
    ):
        check_settings(Settings(host="0.0.0.0"))


def test_non_loopback_with_keys_and_hosts_is_allowed() -> None:
    settings = Settings(host="0.0.0.0", api_keys=("k1",), allowed_hosts=("models.example",))
    assert check_settings(settings) == ("k1",)


def test_non_loopback_without_allowed_hosts_is_refused() -> None:
    with pytest.raises(UsageError, match=r"without MR_ALLOWED_HOSTS"):
        check_settings(Settings(host="0.0.0.0", api_keys=("k1",)))


@pytest.mark.parametrize("key", ["clé-secrète", "ключ", "tab\there", "k\u00a0x"])
def test_non_ascii_or_control_keys_are_refused_at_start(key: str) -> None:
    with pytest.raises(UsageError, match=r"API key #2 contains a non-ASCII or control character"):
        check_settings(Settings(api_keys=("fine", key)))


def test_non_ascii_key_in_a_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    path.write_text("ok-key\nmot-de-passe-é\n", encoding="utf-8")
    with pytest.raises(UsageError, match=r"API key #2"):
        check_settings(Settings(api_keys_file=path))


def test_loopback_needs_no_keys() -> None:
    assert check_settings(Settings()) == ()


def test_key_file_lines(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    path.write_text("# ops\nalpha\n\n  beta  \n")
    settings = Settings(api_keys=("env",), api_keys_file=path)
    assert check_settings(settings) == (
        "env", "alpha", "beta",
    )  # fmt: skip


def test_missing_key_file_names_the_path(tmp_path: Path) -> None:
    path = tmp_path / "absent"
    with pytest.raises(UsageError, match=f"cannot read the API key file {path}"):
        check_settings(Settings(api_keys_file=path))


def test_empty_key_file_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    path.write_text("# nothing yet\n")
    with pytest.raises(UsageError, match="contains no keys"):
        check_settings(Settings(api_keys_file=path))


def test_parse_key_lines() -> None:
    assert parse_key_lines("a\r\n#b\n c \n") == ("a", "c")


@pytest.mark.parametrize(
    ("header", "accepted"),
    [("Bearer k1", True), ("bearer k2", True), ("Bearer  k1 ", True), ("Bearer k3", False),
     ("Basic k1", False), ("k1", False), ("", False), (None, False), ("Bearer k", False)],
)  # fmt: skip
def test_key_check(header: str | None, accepted: bool) -> None:
    assert KeyCheck(("k1", "k2")).accepts(header) is accepted


def test_no_keys_accepts_everything() -> None:
    check = KeyCheck(())
    assert not check.enabled
    assert check.accepts(None)


@pytest.mark.parametrize(
    ("authorization", "x_api_key", "accepted"),
    [
        (None, "k1", True),
        (None, " k2 ", True),
        (None, "nope", False),
        ("Bearer k1", "nope", True),
        ("Bearer nope", "k1", True),
        ("Bearer nope", None, False),
        (None, "", False),
    ],
)
def test_x_api_key_is_accepted_like_bearer(
    authorization: str | None, x_api_key: str | None, accepted: bool
) -> None:
    assert KeyCheck(["k1", "k2"]).accepts(authorization, x_api_key) is accepted
