"""The CLI as a client of ``affidavit serve``: login keeps the session 0600 (never through a
link), whoami shows the server's view, the remote-capable commands print exactly what they
print locally (``--json``, tables, errors and exit codes), the others are refused in client
mode, and logout ends the session on the server."""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from server_harness import PASSWORD, Served, World, make_world, serving

from affidavit.constants import EngineName
from affidavit.models.uri import ConnectionUri
from affidavit.scratch.redis_server import RedisScratch
from affidavit.services.backends import engine_for_uri

pytestmark = pytest.mark.e2e


@pytest.fixture
def remote(
    cli: Any, home: Path, tmp_path: Path, fresh_redis: RedisScratch, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[Served, World, Path]]:
    """A home with a source, a vault and two backups, its accounts, its server, and a config
    folder of the test's own."""
    uri = ConnectionUri.parse(EngineName.REDIS, fresh_redis.uri)
    with engine_for_uri(EngineName.REDIS, uri, password=None, timeout=5) as engine:
        engine.seed_sample(seed=4, scale=2)
    assert cli("source", "add", "cache", "--engine", "redis", "--uri", fresh_redis.uri,
               "--classification", "internal").code == 0  # fmt: skip
    assert cli("vault", "add", "v1", "--url", f"file://{tmp_path / 'vault'}").code == 0
    for _ in range(2):
        assert cli("backup", "run", "cache").code == 0
    config = tmp_path / "config"
    monkeypatch.setenv("XDG_CONFIG_HOME", str(config))
    world = make_world(home)
    with serving(home) as served:
        yield served, world, config / "affidavit" / "session.json"


def login(cli: Any, served: Served, world: World, tmp_path: Path, name: str) -> Any:
    password = tmp_path / "pw"
    password.write_text(PASSWORD + "\n")
    password.chmod(0o600)
    return cli("login", served.url, "--name", name, "--password-file", str(password),
               "--code", world.code(name), "--json")  # fmt: skip


def test_client_mode_prints_what_local_mode_prints(
    cli: Any, remote: tuple[Served, World, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    served, world, session_file = remote
    result = login(cli, served, world, tmp_path, "viewer")
    assert result.code == 0, result.err
    assert json.loads(result.out)["principal"]["roles"] == ["viewer"]
    assert "afs_" not in result.out  # the secret is kept, not printed
    assert stat.S_IMODE(session_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(session_file.parent.stat().st_mode) == 0o700

    who = cli("whoami", "--json")
    assert who.code == 0, who.err
    me = json.loads(who.out)
    assert (me["server"], me["name"], me["method"]) == (served.url, "viewer", "session")
    assert me["roles"] == ["viewer"]
    assert me["mfa_age_seconds"] is not None
    assert cli("whoami").code == 0

    server = ("--server", served.url)
    backup_id = json.loads(cli("backup", "list", "--json").out)["backups"][0]["backup_id"]
    for args in (
        ("backup", "list", "--json"),
        ("backup", "list", "cache", "--json"),
        ("backup", "list"),
        ("backup", "show", backup_id, "--json"),
        ("backup", "show", backup_id),
        ("source", "list", "--json"),
        ("source", "list"),
    ):
        local, through = cli(*args), cli(*server, *args)
        assert (through.code, through.out) == (local.code, local.out), (args, through.err)
        assert local.code == 0
    assert len(json.loads(cli(*server, "backup", "list", "--json").out)["backups"]) == 2
    # errors: the same line, hint and exit code
    for args in (("backup", "show", "no-such-backup"), ("backup", "list", "no-such-source")):
        local, through = cli(*args), cli(*server, *args)
        assert (through.code, through.err) == (local.code, local.err), args
        assert through.code == 2
        assert through.err.startswith("error: ")
    # the environment variable works like --server
    monkeypatch.setenv("AFFIDAVIT_SERVER", served.url)
    assert cli("backup", "list", "--json").out == cli(*server, "backup", "list", "--json").out
    # a command that cannot run through the server yet is refused, never run locally
    before = cli(*server, "backup", "list", "--json").out
    refused = cli("ledger", "recover")
    assert refused.code == 2
    assert "`ledger recover` runs on the server's host only" in refused.err
    assert "run it on the server's host" in refused.err
    monkeypatch.delenv("AFFIDAVIT_SERVER")
    assert cli(*server, "backup", "list", "--json").out == before
    # the session goes only to the server that issued it
    other = cli("--server", "http://127.0.0.1:9", "backup", "list")
    assert other.code == 3
    assert "the saved session is for" in other.err

    secret = json.loads(session_file.read_text())["secret"]
    out = cli("logout")
    assert out.code == 0, out.err
    assert not session_file.exists()
    with httpx.Client(base_url=served.url + "/api/v1") as http:
        answer = http.get("/whoami", headers={"Authorization": f"Bearer {secret}"})
        assert answer.status_code == 401
    gone = cli(*server, "backup", "list")
    assert gone.code == 3
    assert "not logged in" in gone.err
    local = cli("whoami", "--json")
    assert json.loads(local.out)["method"] == "local-os-user"
    assert json.loads(local.out)["authenticated"] is False


def test_the_session_file_is_guarded(
    cli: Any, remote: tuple[Served, World, Path], tmp_path: Path
) -> None:
    served, world, session_file = remote
    # never written through a symbolic link
    elsewhere = tmp_path / "elsewhere.json"
    session_file.parent.mkdir(parents=True, mode=0o700)
    os.symlink(elsewhere, session_file)
    result = login(cli, served, world, tmp_path, "operator")
    assert result.code == 2
    assert "symbolic link" in result.err
    assert not elsewhere.exists()
    session_file.unlink()
    # a wrong password: the server's one message, exit 3, nothing kept
    wrong = tmp_path / "wrong"
    wrong.write_text("not the password 123\n")
    wrong.chmod(0o600)
    result = cli("login", served.url, "--name", "operator", "--password-file", str(wrong),
                 "--code", "000000")  # fmt: skip
    assert result.code == 3
    assert "login refused" in result.err
    assert not session_file.exists()
    # a session file others may read is refused
    assert login(cli, served, world, tmp_path, "operator").code == 0
    session_file.chmod(0o644)
    result = cli("whoami")
    assert result.code == 2
    assert "may be read by others" in result.err
    session_file.chmod(0o600)
    assert cli("whoami").code == 0
    # plain http is refused for anything but loopback
    result = cli("login", "http://example.com:8443", "--name", "x", "--code", "1")
    assert result.code == 2
    assert "plain http" in result.err
