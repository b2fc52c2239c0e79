"""Settings: defaults < affidavit.toml < AFFIDAVIT_* < flags, parsed once, bad input named."""

from __future__ import annotations

from pathlib import Path

import pytest

from affidavit.config import load_settings
from affidavit.errors import ConfigError


def write(home: Path, text: str) -> None:
    home.mkdir(parents=True, exist_ok=True)
    (home / "affidavit.toml").write_text(text)


def test_defaults(tmp_path: Path) -> None:
    s = load_settings(home=tmp_path, environ={})
    assert s.connect_timeout == 5.0
    assert s.retention_days == 35
    assert s.effective_catalog_url == f"sqlite:///{tmp_path / 'catalog.sqlite'}"


def test_home_from_environment(tmp_path: Path) -> None:
    s = load_settings(environ={"AFFIDAVIT_HOME": str(tmp_path / "h")})
    assert s.home == tmp_path / "h"


def test_precedence_file_then_env_then_flags(tmp_path: Path) -> None:
    write(tmp_path, "[affidavit]\nconnect_timeout = 7\nretention_days = 40\nactor = 'file'\n")
    s = load_settings(home=tmp_path, environ={})
    assert (s.connect_timeout, s.retention_days, s.actor) == (7.0, 40, "file")
    env = {"AFFIDAVIT_CONNECT_TIMEOUT": "9", "AFFIDAVIT_ACTOR": "env"}
    s = load_settings(home=tmp_path, environ=env)
    assert (s.connect_timeout, s.retention_days, s.actor) == (9.0, 40, "env")
    s = load_settings(
        home=tmp_path, environ=env, overrides={"actor": "flag", "connect_timeout": None}
    )
    assert (s.connect_timeout, s.actor) == (9.0, "flag")


def test_settings_are_frozen(tmp_path: Path) -> None:
    s = load_settings(home=tmp_path, environ={})
    with pytest.raises(ValueError, match="frozen"):
        s.retention_days = 1  # type: ignore[misc]


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("[affidavit\nx=1", "not valid TOML"),
        ("[affidavit]\nconnect_timeout = 'soon'\n", "connect_timeout"),
        ("[affidavit]\nconnect_timeout = -1\n", "connect_timeout"),
        ("[affidavit]\nretention_days = 0\n", "retention_days"),
        ("[affidavit]\nno_such_setting = 1\n", "no_such_setting"),
        ("home = '/elsewhere'\n", "must not set 'home'"),
        ("affidavit = 3\n", "must be a table"),
        ("\x00\x01binary garbage", "not valid TOML"),
    ],
)
def test_corrupted_config_file_is_a_clear_error(tmp_path: Path, text: str, fragment: str) -> None:
    write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_settings(home=tmp_path, environ={})
    assert fragment in caught.value.message
    assert int(caught.value.exit_code) == 2


def test_bad_environment_value_names_the_variable(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="AFFIDAVIT_CONNECT_TIMEOUT"):
        load_settings(home=tmp_path, environ={"AFFIDAVIT_CONNECT_TIMEOUT": "fast"})
