"""More remote-capable commands print through the server exactly what they print locally:
vault, verification and drill lists (tables and ``--json``), with and without a backup
filter, the scheduled checks, a source, a vault, holds, the keys' status and the ledger's
key, checkpoint and consistency proofs; and a drill run through
the server by an operator (a security officer may not; a URI target stays local), the
inventory, and a dataset classified by an administrator; an auditor, who reads through its
audit engagements only, is refused those lists."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from server_harness import make_world, password_file, serving

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
    assert cli("hold", "add", backup_id, "--case", "C-1", "--reason", "audit").code == 0
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    world = make_world(home)
    password = password_file(tmp_path)
    with serving(home) as served:
        server = ("--server", served.url)
        # an auditor reads through its engagements only: no list of the whole catalog
        login = cli("login", served.url, "--name", "auditor", "--password-file", str(password),
                    "--code", world.code("auditor"))  # fmt: skip
        assert login.code == 0, login.err
        for args, permission in ((("verify", "list"), "backup.read"),
                                 (("ledger", "key"), "ledger.read"),
                                 (("keys", "status"), "keys.status")):  # fmt: skip
            refused = cli(*server, *args)
            assert refused.code == 2 and f"may not {permission}" in refused.err, refused.err
        login = cli("login", served.url, "--name", "security_officer", "--password-file",
                    str(password), "--code", world.code("security_officer"))  # fmt: skip
        assert login.code == 0, login.err
        for args in (
            ("vault", "list"),
            ("vault", "list", "--json"),
            ("verify", "list"),
            ("verify", "list", "--json"),
            ("verify", "list", backup_id, "--json"),
            ("drill", "list"),
            ("drill", "list", "--json"),
            ("drill", "list", backup_id),
            ("due", "--all"),
            ("due", "--all", "--json"),
            ("source", "show", "cache"),
            ("source", "show", "cache", "--json"),
            ("ledger", "checkpoint"),
            ("ledger", "checkpoint", "--json"),
            ("vault", "show", "v1"),
            ("vault", "show", "v1", "--json"),
            ("hold", "list"),
            ("hold", "list", backup_id, "--active", "--json"),
            ("keys", "status"),
            ("keys", "status", "--json"),
            ("ledger", "key"),
            ("ledger", "consistency", "--old-size", "2"),
            ("ledger", "consistency", "--old-size", "2", "--json"),
        ):
            local, through = cli(*args), cli(*server, *args)
            assert local.code == 0, (args, local.err)
            assert (through.code, through.out) == (local.code, local.out), (args, through.err)
        assert json.loads(cli(*server, "verify", "list", "--json").out)["verifications"]
        assert json.loads(cli(*server, "drill", "list", "--json").out)["drills"]
        assert json.loads(cli(*server, "due", "--all", "--json").out)["items"]
        # a drill through the server: a security officer may not, an operator may (scratch
        # only)
        refused = cli(*server, "drill", "run", backup_id)
        assert refused.code == 2 and "may not drill.run" in refused.err, refused.err
        refused = cli(*server, "inventory")
        assert refused.code == 2 and "may not inventory.run" in refused.err, refused.err
        refused = cli(*server, "dataset", "classify", "cache/db0", "public", "--reason", "x")
        assert refused.code == 2 and "may not dataset.classify" in refused.err, refused.err
        assert cli(*server, "ledger", "checkpoint", "--out", "cp.txt").code == 2
        login = cli("login", served.url, "--name", "operator", "--password-file",
                    str(password), "--code", world.code("operator"))  # fmt: skip
        assert login.code == 0, login.err
        refused = cli(*server, "keys", "status")
        assert refused.code == 2 and "may not keys.status" in refused.err, refused.err
        local_only = cli(*server, "drill", "run", backup_id, "--target", fresh_redis.uri)
        assert local_only.code == 2 and "only locally" in local_only.err, local_only.err
        drilled = cli(*server, "drill", "run", backup_id, "--rto", "600")
        assert drilled.code == 0, drilled.err
        assert drilled.out.startswith("Drill ") and "passed" in drilled.out, drilled.out
        as_json = json.loads(cli(*server, "drill", "run", backup_id, "--json").out)
        assert (as_json["ok"], as_json["backup_id"]) == (True, backup_id)
        with sqlite3.connect(home / "catalog.sqlite") as db:
            actors = [json.loads(e)["actor"] for (e,) in db.execute(
                "select entry from ledger_entries where action = 'drill.completed'")]  # fmt: skip
        assert actors[-2:] == ["operator", "operator"]
        # the inventory, probed from the server's host, prints as locally; an unreachable
        # source is exit 3 both ways
        for args in (("inventory",), ("inventory", "--source", "cache")):
            local, through = cli(*args), cli(*server, *args)
            assert (local.code, through.code) == (0, 0), through.err
            assert through.out == local.out
        missing = cli(*server, "inventory", "--source", "nowhere")
        assert missing.code == 2 and "no source named 'nowhere'" in missing.err
        assert cli("source", "add", "dead", "--engine", "redis", "--uri",
                   "redis://127.0.0.1:9", "--classification", "internal").code == 0  # fmt: skip
        local, through = cli("inventory", "--json"), cli(*server, "inventory", "--json")
        assert (local.code, through.code) == (3, 3), through.err
        dead = [s for s in json.loads(through.out)["sources"] if s["name"] == "dead"]
        assert [s["reachable"] for s in dead] == [False]
        # an administrator classifies a dataset through the server
        dataset = json.loads(cli("source", "show", "cache", "--json").out)["datasets"][0]["name"]
        login = cli("login", served.url, "--name", "admin", "--password-file", str(password),
                    "--code", world.code("admin"))  # fmt: skip
        assert login.code == 0, login.err
        for args, text in (
            (("cache", "public"), "SOURCE/DATASET"),
            ((f"cache/{dataset}", "secret"), "secret"),
        ):
            bad = cli(*server, "dataset", "classify", *args, "--reason", "x")
            assert bad.code == 2 and text in bad.err, bad.err
        done = cli(*server, "dataset", "classify", f"cache/{dataset}", "confidential",
                   "--reason", "holds customer data", "--json")  # fmt: skip
        assert done.code == 0, done.err
        assert json.loads(done.out)["classification"] == "confidential"
        with sqlite3.connect(home / "catalog.sqlite") as db:
            (entry,) = db.execute(
                "select entry from ledger_entries where action = 'dataset.classified'"
            ).fetchone()
        assert json.loads(entry)["actor"] == "admin"
