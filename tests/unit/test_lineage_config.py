"""The ``openlineage_url`` setting: http(s) only, from affidavit.toml or the environment."""

from __future__ import annotations

from pathlib import Path

import pytest

from affidavit.config import load_settings
from affidavit.errors import ConfigError


def test_openlineage_url_is_an_http_url(tmp_path: Path) -> None:
    home = tmp_path / "home"
    assert load_settings(home=home, environ={}).openlineage_url == ""
    url = "http://127.0.0.1:5000/api/v1/lineage"
    env = {"AFFIDAVIT_OPENLINEAGE_URL": url}
    assert load_settings(home=home, environ=env).openlineage_url == url
    for bad in ("ftp://host/x", "file:///etc/passwd", "http://", "http://host/a b"):
        with pytest.raises(ConfigError, match="openlineage_url"):
            load_settings(home=home, environ={"AFFIDAVIT_OPENLINEAGE_URL": bad})
    home.mkdir()
    (home / "affidavit.toml").write_text(f'[affidavit]\nopenlineage_url = "{url}"\n')
    assert load_settings(home=home, environ={}).openlineage_url == url
