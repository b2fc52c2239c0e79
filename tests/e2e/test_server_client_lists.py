"""More remote-capable commands print through the server exactly what they print locally:
vault, verification and drill lists (tables and ``--json``), with and without a backup
filter."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from server_harness import PASSWORD, make_world, serving

from affidavit.constants import EngineName
from affidavit.models.uri import ConnectionUri
from affidavit.scratch.redis_server import RedisScratch
from affidavit.services.backends import engine_for_uri

pytestmark = pytest.mark.e2e


def test_lists_print_the_same_through_the_server(
    cli: Any, home: Path, tmp_path: Path, fresh_redis: RedisScratch, monkeypatch: pytest.MonkeyPatch
) -> None:
    uri = ConnectionUri.parse(EngineName.REDIS, fresh_redis.uri)
    with engine_for_uri(EngineName.REDIS, uri, password=None, timeout=5) as engine:
        engine.seed_sample(seed=3, scale=1)
    assert cli("source", "add", "cache", "--engine", "redis", "--uri", fresh_redis.uri,
               "--classification", "internal").code == 0  # fmt: skip
    assert cli("vault", "add", "v1", "--url", f"file://{tmp_path / 'vault'}").code == 0
    assert cli("backup", "run", "cache").code == 0
    backup_id = json.loads(cli("backup", "list", "--json").out)["backups"][0]["backup_id"]
    assert cli("verify", backup_id).code == 0
    assert cli("drill", "run", backup_id).code == 0
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    world = make_world(home)
    password = tmp_path / "pw"
    password.write_text(PASSWORD + "\n")
    password.chmod(0o600)
    with serving(home) as served:
        login = cli("login", served.url, "--name", "auditor", "--password-file", str(password),
                    "--code", world.code("auditor"))  # fmt: skip
        assert login.code == 0, login.err
        server = ("--server", served.url)
        for args in (
            ("vault", "list"),
            ("vault", "list", "--json"),
            ("verify", "list"),
            ("verify", "list", "--json"),
            ("verify", "list", backup_id, "--json"),
            ("drill", "list"),
            ("drill", "list", "--json"),
            ("drill", "list", backup_id),
        ):
            local, through = cli(*args), cli(*server, *args)
            assert local.code == 0, (args, local.err)
            assert (through.code, through.out) == (local.code, local.out), (args, through.err)
        assert json.loads(cli(*server, "verify", "list", "--json").out)["verifications"]
        assert json.loads(cli(*server, "drill", "list", "--json").out)["drills"]
