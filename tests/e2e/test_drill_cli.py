"""The drill story through the CLI (issue 6): drill run/list with --json, exit codes for a
lossy restore, an exceeded RTO, failing probes, a malformed probe file and refused targets;
the ledger verifies afterwards."""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pymongo import MongoClient

from affidavit.constants import EngineName
from affidavit.models.uri import ConnectionUri
from affidavit.scratch.redis_server import RedisScratch
from affidavit.scratch.secantus_server import SecantusScratch
from affidavit.services import drill as drill_service
from affidavit.services.backends import engine_for_uri

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def servers(mongo_scratch_class: type[SecantusScratch]) -> Iterator[dict[str, str]]:
    with mongo_scratch_class() as mongo, RedisScratch(replica_sync_delay=0) as red:
        for engine, uri in ((EngineName.MONGODB, mongo.uri), (EngineName.REDIS, red.uri)):
            parsed = ConnectionUri.parse(engine, uri)
            with engine_for_uri(engine, parsed, password=None, timeout=5) as e:
                e.seed_sample(seed=31, scale=8)
        yield {"mongo": mongo.uri, "redis": red.uri}


def setup_backups(cli: Any, servers: dict[str, str], tmp_path: Path) -> dict[str, str]:
    for name, engine, uri in (
        ("orders", "mongodb", servers["mongo"]),
        ("cache", "redis", servers["redis"]),
    ):
        add = ("source", "add", name, "--engine", engine, "--uri", uri)
        assert cli(*add, "--classification", "internal").code == 0
    assert cli("vault", "add", "v1", "--url", f"file://{tmp_path / 'vault'}").code == 0
    out = {}
    for name in ("orders", "cache"):
        r = cli("backup", "run", name, "--json")
        assert r.code == 0, r.err
        out[name] = json.loads(r.out)["backup_id"]
    return out


def drill_json(cli: Any, *args: str, code: int = 0) -> dict[str, Any]:
    r = cli("drill", "run", *args, "--json")
    assert r.code == code, r.err + r.out
    result: dict[str, Any] = json.loads(r.out)
    return result


def scratch_pids(home: Path) -> list[int]:
    with sqlite3.connect(home / "catalog.sqlite") as db:
        rows = db.execute(
            "select entry from ledger_entries where action = 'drill.completed' order by seq"
        )
        return [json.loads(e)["details"]["scratch"]["pid"] for (e,) in rows]


def test_drill_cli_story(cli: Any, home: Path, servers: dict[str, str], tmp_path: Path) -> None:
    ids = setup_backups(cli, servers, tmp_path)
    for name in ("orders", "cache"):
        out = drill_json(cli, ids[name])
        assert {"ok", "restore_seconds", "rto_seconds", "fingerprint_match", "phases"} <= set(out)
        assert out["ok"] is True and out["fingerprint_match"] is True
        assert set(out["phases"]) == {"fetch", "decrypt", "load", "verify", "probes"}
        assert out["rto_seconds"] == 3600
        assert out["target"].startswith("scratch:")
        again = drill_json(cli, ids[name], "--rto", "120")
        assert again["ok"] and again["rto_seconds"] == 120
    for pid in scratch_pids(home):
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    listed = json.loads(cli("drill", "list", "--json").out)["drills"]
    assert len(listed) == 4 and all(d["ok"] for d in listed)
    one = json.loads(cli("drill", "list", ids["cache"], "--json").out)["drills"]
    assert {d["backup_id"] for d in one} == {ids["cache"]} and len(one) == 2
    table = cli("drill", "list")
    assert table.code == 0 and ids["orders"] in table.out and "passed" in table.out
    assert cli("drill", "list", "bk-nope").code == 2
    assert cli("drill", "run", "bk-nope").code == 2
    r = cli("ledger", "verify")
    assert r.code == 0, r.err + r.out


def test_drill_cli_failures_and_exit_codes(
    cli: Any,
    servers: dict[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    fresh_mongo: SecantusScratch,
) -> None:
    ids = setup_backups(cli, servers, tmp_path)
    # RTO exceeded: exit 1, finding rto-exceeded
    out = drill_json(cli, ids["cache"], "--rto", "0.001", code=1)
    assert not out["ok"] and out["fingerprint_match"]
    assert [f["code"] for f in out["findings"]] == ["rto-exceeded"]
    # probes: a passing and a failing file
    good = tmp_path / "good.toml"
    good.write_text(
        '[[probe]]\nname = "orders"\ndataset = "shop.orders"\nkind = "count"\nexpect = 24\n'
    )
    assert drill_json(cli, ids["orders"], "--probe", str(good))["probes"][0]["ok"] is True
    failing = tmp_path / "failing.toml"
    failing.write_text(
        '[[probe]]\nname = "orders"\ndataset = "shop.orders"\nkind = "count"\nexpect = 1\n'
    )
    out = drill_json(cli, ids["orders"], "--probe", str(failing), code=1)
    assert [f["code"] for f in out["findings"]] == ["probe-failed"]
    # a malformed probe file: exit 2, nothing recorded
    before = len(json.loads(cli("drill", "list", "--json").out)["drills"])
    broken = tmp_path / "broken.toml"
    broken.write_text('[[probe]]\nname = "x"\nkind = "count"\n')
    r = cli("drill", "run", ids["orders"], "--probe", str(broken))
    assert r.code == 2 and "probe 1" in r.err and "'dataset'" in r.err
    assert len(json.loads(cli("drill", "list", "--json").out)["drills"]) == before

    # a lossy restore: a record changed between load and verify -> fingerprint-mismatch
    def tamper(uri: str) -> None:
        client: MongoClient[Any] = MongoClient(uri)
        client.shop.orders.update_one({"_id": 3}, {"$set": {"status": "lost"}})
        client.close()

    monkeypatch.setattr(drill_service, "_before_verify", tamper)
    out = drill_json(cli, ids["orders"], code=1)
    assert out["fingerprint_match"] is False
    codes = [f["code"] for f in out["findings"]]
    assert codes == ["fingerprint-mismatch"]
    assert out["findings"][0]["subject"] == "shop.orders"
    assert out["findings"][0]["details"]["counts"] == {"changed": 1}
    monkeypatch.undo()
    # target safety: the registered source's URI is refused (exit 2), forced it is non-empty
    r = cli("drill", "run", ids["orders"], "--target", servers["mongo"])
    assert r.code == 2 and "registered source" in r.err
    r = cli("drill", "run", ids["orders"], "--target", servers["mongo"], "--force")
    assert r.code == 2 and "not empty" in r.err
    # an empty, unregistered target works
    out = drill_json(cli, ids["orders"], "--target", fresh_mongo.uri)
    assert out["ok"] and out["target"] == fresh_mongo.uri
    # and is no longer empty
    assert cli("drill", "run", ids["orders"], "--target", fresh_mongo.uri).code == 2
    r = cli("ledger", "verify")
    assert r.code == 0, r.err + r.out
