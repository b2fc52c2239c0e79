"""Restore drills against real servers (issue 6): MongoDB into a scratch SecantusDB, Redis into
a scratch redis-server started on the decrypted RDB; re-fingerprinted, deterministic, torn
down; lossy restores, probes, RTO and target safety."""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import bson
import pytest
import redis
from pymongo import MongoClient

from affidavit.constants import EngineName
from affidavit.errors import InputError
from affidavit.models.backup import Backup
from affidavit.models.records import RecordEncoding
from affidavit.models.uri import ConnectionUri
from affidavit.scratch.redis_server import RedisScratch
from affidavit.scratch.secantus_server import SecantusScratch
from affidavit.services import drill as drill_service
from affidavit.services.backends import engine_for_uri
from affidavit.services.backup import run_backup
from affidavit.services.context import App
from affidavit.services.ledger import verify_catalog
from affidavit.services.probes import load_probes

pytestmark = pytest.mark.integration


def seed(engine: EngineName, uri: str, scale: int = 10) -> dict[str, int]:
    with engine_for_uri(engine, ConnectionUri.parse(engine, uri), password=None, timeout=5) as e:
        return dict(e.seed_sample(seed=23, scale=scale))


@pytest.fixture(scope="module")
def seeded(mongo_scratch_class: type[SecantusScratch]) -> Iterator[dict[str, Any]]:
    """One seeded MongoDB and one seeded Redis for the module."""
    with mongo_scratch_class() as mongo, RedisScratch(replica_sync_delay=0) as red:
        yield {
            "mongo": mongo.uri,
            "redis": red.uri,
            "counts": {**seed(EngineName.MONGODB, mongo.uri), **seed(EngineName.REDIS, red.uri)},
        }


def events(home: Path, action: str) -> list[dict[str, Any]]:
    with sqlite3.connect(home / "catalog.sqlite") as db:
        rows = db.execute(
            "select entry from ledger_entries where action = ? order by seq", (action,)
        )
        return [json.loads(e) for (e,) in rows]


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def backup_of(app: App, cli: Any, seeded: dict[str, Any], tmp_path: Path, engine: str) -> Backup:
    name = "orders" if engine == "mongodb" else "cache"
    uri = seeded["mongo"] if engine == "mongodb" else seeded["redis"]
    add_cmd = ("source", "add", name, "--engine", engine, "--uri", uri)
    assert cli(*add_cmd, "--classification", "internal").code == 0
    if cli("vault", "list").out.find("v1") < 0:
        assert cli("vault", "add", "v1", "--url", f"file://{tmp_path / 'vault'}").code == 0
    return run_backup(app, name)


@pytest.mark.parametrize("engine", ["mongodb", "redis"])
def test_drill_restores_matches_and_is_deterministic(
    app: App, cli: Any, home: Path, seeded: dict[str, Any], tmp_path: Path, engine: str
) -> None:
    backup = backup_of(app, cli, seeded, tmp_path, engine)
    first = drill_service.run_drill(app, backup.id)
    second = drill_service.run_drill(app, backup.id)
    for d in (first, second):
        assert d.ok, d.findings
        assert d.fingerprint_match
        assert set(d.phases) == {"fetch", "decrypt", "load", "verify", "probes"}
        assert d.restore_seconds == pytest.approx(
            d.phases["fetch"] + d.phases["decrypt"] + d.phases["load"], abs=1e-5
        )
        assert d.rto_seconds == 3600
        assert d.envelope
    done = events(home, "drill.completed")
    assert len(done) == 2
    # deterministic: the same backup restores to the same fingerprints, equal to the manifest
    restored = [e["details"]["datasets"] for e in done]
    assert restored[0] == restored[1] == {ds.name: ds.fingerprint for ds in backup.datasets}
    # every scratch server is gone, by PID
    for e in done:
        scratch = e["details"]["scratch"]
        assert scratch["kind"] == ("redis" if engine == "redis" else "secantus")
        assert not pid_alive(scratch["pid"])
    assert [d.id for d in drill_service.list_drills(app, backup.id)] == [second.id, first.id]
    assert verify_catalog(app).ok


def test_lossy_restore_is_a_fingerprint_mismatch_naming_the_key(
    app: App, cli: Any, seeded: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    backup = backup_of(app, cli, seeded, tmp_path, "redis")

    def tamper(uri: str) -> None:
        client = redis.Redis.from_url(uri)
        client.set(b"app0:counter:3", b"changed")
        client.close()

    monkeypatch.setattr(drill_service, "_before_verify", tamper)
    result = drill_service.run_drill(app, backup.id)
    assert not result.ok and not result.fingerprint_match
    codes = [f.code for f in result.findings]
    assert codes == ["fingerprint-mismatch"]
    finding = result.findings[0]
    assert finding.subject == "db0"
    assert any("app0:counter:3" in k["key"] for k in finding.details["keys"])
    assert finding.details["counts"] == {"changed": 1}


def test_scratch_redis_is_read_back_as_its_own_rdb_and_a_lost_key_is_named(
    app: App, cli: Any, seeded: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The scratch server's keyspace is read back through its own RDB (SYNC), not key by
    key; a key the restore lost and one it gained are both named."""
    from affidavit.engines.redis import RedisEngine

    backup = backup_of(app, cli, seeded, tmp_path, "redis")

    def no_key_by_key_reads(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the scratch server is read back through its RDB")

    def tamper(uri: str) -> None:
        client = redis.Redis.from_url(uri)
        client.delete(b"app0:counter:3")
        client.set(b"app0:intruder", b"x")
        client.close()

    monkeypatch.setattr(RedisEngine, "iter_records", no_key_by_key_reads)
    monkeypatch.setattr(drill_service, "_before_verify", tamper)
    result = drill_service.run_drill(app, backup.id)
    assert not result.ok and not result.fingerprint_match
    (finding,) = result.findings
    assert finding.code == "fingerprint-mismatch" and finding.subject == "db0"
    named = {k["key"] for k in finding.details["keys"]}
    assert any("app0:counter:3" in k for k in named) and any("app0:intruder" in k for k in named)
    assert finding.details["counts"] == {"missing": 1, "extra": 1}


def test_mongo_probes_pass_and_fail(
    app: App, cli: Any, seeded: dict[str, Any], tmp_path: Path
) -> None:
    backup = backup_of(app, cli, seeded, tmp_path, "mongodb")
    probes = tmp_path / "probes.toml"
    probes.write_text(
        """
[[probe]]
name = "all customers"
dataset = "shop.customers"
kind = "count"
expect = 10

[[probe]]
name = "first orders"
dataset = "shop.orders"
kind = "count"
query = { _id = { "$lte" = 5 } }
expect = 5

[[probe]]
name = "order one"
dataset = "shop.orders"
kind = "get"
key = 1
expect = { _id = 1 }

[[probe]]
name = "a customer"
dataset = "shop.customers"
kind = "find_one"
query = { city = { "$exists" = true } }
expect = {}
"""
    )
    ok = drill_service.run_drill(app, backup.id, probe_file=probes)
    assert ok.ok, ok.findings
    assert [p["ok"] for p in ok.probes] == [True, True, True, True]
    bad = tmp_path / "bad.json"
    bad.write_text(
        json.dumps(
            {
                "probes": [
                    {"name": "too many", "dataset": "shop.orders", "kind": "count", "expect": 999},
                    {
                        "name": "no such order",
                        "dataset": "shop.orders",
                        "kind": "get",
                        "key": 10_000,
                        "expect": {"_id": 10_000},
                    },
                ]
            }
        )
    )
    failed = drill_service.run_drill(app, backup.id, probe_file=bad)
    assert not failed.ok and failed.fingerprint_match
    assert [f.code for f in failed.findings] == ["probe-failed", "probe-failed"]
    assert failed.probes[0]["actual"] == 30


def test_redis_probes_read_the_restored_server(
    app: App, cli: Any, seeded: dict[str, Any], tmp_path: Path
) -> None:
    backup = backup_of(app, cli, seeded, tmp_path, "redis")
    probes = tmp_path / "probes.json"
    probes.write_text(
        json.dumps(
            [
                {"name": "keys", "dataset": "db0", "kind": "count", "expect": 80},
                {
                    "name": "users",
                    "dataset": "db1",
                    "kind": "count",
                    "query": "app1:user:*",
                    "expect": 10,
                },
                {
                    "name": "user0",
                    "dataset": "db0",
                    "kind": "get",
                    "key": "app0:user:0",
                    "expect": {"name": "user0"},
                },
                {"name": "missing", "dataset": "db0", "kind": "get", "key": "nope", "expect": "x"},
            ]
        )
    )
    result = drill_service.run_drill(app, backup.id, probe_file=probes)
    assert [p["ok"] for p in result.probes] == [True, True, True, False]
    assert [f.code for f in result.findings] == ["probe-failed"]


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("[[probe]]\nname='a'\ndataset='shop.orders'\nkind='sum'\nexpect=1\n", "'kind' must be"),
        ("[[probe]]\nname='a'\ndataset='shop.nope'\nkind='count'\nexpect=1\n", "no dataset"),
        ("[[probe]]\nname='a'\ndataset='shop.orders'\nkind='count'\n", "'expect' is missing"),
        ("[[probe]]\nname='a'\ndataset='shop.orders'\nkind='count'\nexpect=-1\n", ">= 0"),
        ("[[probe]]\nname='a'\ndataset='shop.orders'\nkind='find_one'\nexpect={}\n", "'query'"),
        (
            "[[probe]]\nname='a'\ndataset='shop.orders'\nkind='count'\nexpect=1\ncolour=2\n",
            "unknown field",
        ),
        ("probe = 3\n", "holds no probes"),
        ("[[probe]\n", "not valid TOML"),
    ],
)
def test_malformed_probe_files_are_refused_precisely(
    tmp_path: Path, text: str, fragment: str
) -> None:
    path = tmp_path / "p.toml"
    path.write_text(text)
    with pytest.raises(InputError, match="probe") as info:
        load_probes(path, encoding=RecordEncoding.BSON, datasets=["shop.orders", "shop.customers"])
    assert fragment in info.value.message


def test_rto_exceeded_is_a_finding(
    app: App, cli: Any, seeded: dict[str, Any], tmp_path: Path
) -> None:
    backup = backup_of(app, cli, seeded, tmp_path, "redis")
    result = drill_service.run_drill(app, backup.id, rto_seconds=0.001)
    assert not result.ok and result.fingerprint_match
    assert [f.code for f in result.findings] == ["rto-exceeded"]


def test_target_safety_non_empty_and_registered_source(
    app: App, cli: Any, seeded: dict[str, Any], tmp_path: Path, fresh_mongo: SecantusScratch
) -> None:
    backup = backup_of(app, cli, seeded, tmp_path, "mongodb")
    with pytest.raises(InputError, match="registered source 'orders'"):
        drill_service.run_drill(app, backup.id, target=seeded["mongo"])
    with pytest.raises(InputError, match="not empty"):
        drill_service.run_drill(app, backup.id, target=seeded["mongo"], force=True)
    # an empty server registered as a source: refused unless forced
    add_cmd = ("source", "add", "spare", "--engine", "mongodb", "--uri", fresh_mongo.uri)
    assert cli(*add_cmd, "--classification", "internal").code == 0
    with pytest.raises(InputError, match="registered source 'spare'"):
        drill_service.run_drill(app, backup.id, target=fresh_mongo.uri)
    assert not drill_service.list_drills(app)
    forced = drill_service.run_drill(app, backup.id, target=fresh_mongo.uri, force=True)
    assert forced.ok and forced.fingerprint_match
    assert forced.target.startswith("mongodb://127.0.0.1:")
    client: MongoClient[Any] = MongoClient(fresh_mongo.uri)
    try:
        assert client.shop.orders.count_documents({}) == seeded["counts"]["shop.orders"]
        names = {ix["name"] for ix in client.shop.orders.list_indexes()}
        assert "_id_" in names
    finally:
        client.close()
    # now the target holds data: a second drill into it is refused
    with pytest.raises(InputError, match="not empty"):
        drill_service.run_drill(app, backup.id, target=fresh_mongo.uri, force=True)


def test_redis_drill_into_a_named_empty_target(
    app: App, cli: Any, seeded: dict[str, Any], tmp_path: Path, fresh_redis: RedisScratch
) -> None:
    backup = backup_of(app, cli, seeded, tmp_path, "redis")
    result = drill_service.run_drill(app, backup.id, target=fresh_redis.uri)
    assert result.ok, result.findings
    assert result.fingerprint_match
    assert result.target.startswith("redis://127.0.0.1:")
    client = redis.Redis.from_url(fresh_redis.uri)
    try:
        for db in (0, 1):
            client.execute_command("SELECT", db)
            assert client.dbsize() == seeded["counts"][f"db{db}"]
        client.execute_command("SELECT", 0)
        assert client.ttl(b"app0:session:1") > 0  # the absolute expiry came along
        assert client.xrange(b"app0:events:2")[0][0] == b"1750000000002-0"
    finally:
        client.close()
    # the target now holds data: the next drill into it is refused before anything is fetched
    with pytest.raises(InputError, match="not empty"):
        drill_service.run_drill(app, backup.id, target=fresh_redis.uri)
    # and the registered source itself is refused
    with pytest.raises(InputError, match="registered source 'cache'"):
        drill_service.run_drill(app, backup.id, target=seeded["redis"])


def test_redis_named_target_lossy_restore_is_caught(
    app: App,
    cli: Any,
    seeded: dict[str, Any],
    tmp_path: Path,
    fresh_redis: RedisScratch,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    backup = backup_of(app, cli, seeded, tmp_path, "redis")

    def tamper(uri: str) -> None:
        client = redis.Redis.from_url(uri)
        client.delete(b"app0:tags:4")
        client.close()

    monkeypatch.setattr(drill_service, "_before_verify", tamper)
    result = drill_service.run_drill(app, backup.id, target=fresh_redis.uri)
    assert not result.ok
    mismatch = next(f for f in result.findings if f.code == "fingerprint-mismatch")
    assert any("app0:tags:4" in k["key"] for k in mismatch.details["keys"])


@pytest.mark.parametrize("sync", ["allowed", "refused"])
def test_a_large_named_redis_target_is_read_back_as_its_rdb_unless_it_refuses_sync(
    app: App,
    cli: Any,
    seeded: dict[str, Any],
    tmp_path: Path,
    fresh_redis: RedisScratch,
    monkeypatch: pytest.MonkeyPatch,
    sync: str,
) -> None:
    """Threshold forced to 0: the named target is read back through its own RDB; a target
    that refuses SYNC (its user lacks the permission) is read key by key, and a lost key is
    named either way."""
    from affidavit.engines.redis import RedisEngine
    from affidavit.services import fingerprint as fingerprint_service

    backup = backup_of(app, cli, seeded, tmp_path, "redis")
    admin = redis.Redis(port=fresh_redis.port)
    admin.config_set("repl-diskless-sync-delay", 0)
    if sync == "refused":  # named targets are reached as the default user
        admin.acl_setuser("default", enabled=True, nopass=True, keys=["*"],
                          commands=["+@all", "-sync", "-psync"])  # fmt: skip
    admin.close()
    target = fresh_redis.uri
    monkeypatch.setattr(fingerprint_service, "SNAPSHOT_FROM_KEYS", 0)
    key_by_key = RedisEngine.iter_records
    reads: list[str] = []

    def counted(self: Any, dataset: str) -> Any:
        reads.append(dataset)
        return key_by_key(self, dataset)

    def tamper(uri: str) -> None:
        client = redis.Redis.from_url(uri)
        client.delete(b"app0:tags:4")
        client.close()

    monkeypatch.setattr(RedisEngine, "iter_records", counted)
    monkeypatch.setattr(drill_service, "_before_verify", tamper)
    result = drill_service.run_drill(app, backup.id, target=target)
    assert not result.ok
    mismatch = next(f for f in result.findings if f.code == "fingerprint-mismatch")
    assert any("app0:tags:4" in k["key"] for k in mismatch.details["keys"])
    assert (reads == []) is (sync == "allowed")


def test_redis_restore_writes_every_shape_exactly(fresh_redis: RedisScratch) -> None:
    """Binary keys and values, long lists (several RPUSH), infinite scores, streams with
    repeated fields and an empty stream, expiries (a passed one skipped): the server then
    reads back exactly the records written, by fingerprint."""
    from affidavit.models.records import RedisRecord
    from affidavit.services.fingerprint import fingerprint_records

    future = 4_102_444_800_000  # 2100-01-01
    records = [
        RedisRecord(key=b"\x00\xffbin", type="string", value=bytes(range(256))),
        RedisRecord(key=b"s:ttl", type="string", value=b"v", expire_at_ms=future),
        RedisRecord(key=b"s:gone", type="string", value=b"v", expire_at_ms=1_000),
        RedisRecord(key=b"l", type="list", value=tuple(b"%d" % i for i in range(1234))),
        RedisRecord(key=b"set", type="set", value=frozenset({b"a", b"\x00", b"c" * 100})),
        RedisRecord(
            key=b"z",
            type="zset",
            value=((b"lo", float("-inf")), (b"hi", float("inf")), (b"mid", 0.1)),
        ),
        RedisRecord(key=b"h", type="hash", value=tuple((b"f%d" % i, b"v") for i in range(700))),
        RedisRecord(
            key=b"x",
            type="stream",
            value=((b"5-1", ((b"a", b"1"), (b"a", b"2"))), (b"7-0", ((b"b", b""),))),
        ),
        RedisRecord(key=b"x:empty", type="stream", value=()),
    ]
    uri = ConnectionUri.parse(EngineName.REDIS, fresh_redis.uri)
    with engine_for_uri(EngineName.REDIS, uri, password=None, timeout=5) as engine:
        assert engine.restore("db3", records) == len(records) - 1
        read = list(engine.iter_records("db3"))
        with pytest.raises(InputError, match="already holds keys"):
            engine.restore("db3", records[:1])
    live = {}
    for r in read:
        assert isinstance(r, RedisRecord)
        live[r.key] = r
    assert set(live) == {r.key for r in records} - {b"s:gone"}
    assert live[b"s:ttl"].expire_at_ms == future

    def fp(recs: list[Any]) -> str:
        return fingerprint_records(
            recs, encoding=RecordEncoding.REDIS, profile="exact"
        ).fingerprint.text

    assert fp(read) == fp([r for r in records if r.key != b"s:gone"])


def test_mongo_restore_refuses_a_non_empty_collection_and_keeps_options(
    fresh_mongo: SecantusScratch,
) -> None:
    uri = ConnectionUri.parse(EngineName.MONGODB, fresh_mongo.uri)
    with engine_for_uri(EngineName.MONGODB, uri, password=None, timeout=5) as engine:
        doc = bson.encode({"_id": 1, "a": "b"})
        meta = json.dumps(
            {
                "options": {},
                "indexes": [
                    {"v": 2, "key": {"_id": 1}, "name": "_id_"},
                    {"v": 2, "key": {"a": 1}, "name": "a_1"},
                ],
                "collectionName": "c",
            }
        ).encode()
        assert engine.restore("t.c", [doc], metadata=meta) == 1
        assert [bytes(r) for r in engine.iter_records("t.c")] == [doc]
        with pytest.raises(InputError, match="already holds documents"):
            engine.restore("t.c", [doc], metadata=meta)
        with pytest.raises(InputError, match="not BSON"):
            engine.restore("t.d", [b"\x05\x00\x00\x00"])
    client: MongoClient[Any] = MongoClient(fresh_mongo.uri)
    try:
        assert {ix["name"] for ix in client.t.c.list_indexes()} == {"_id_", "a_1"}
    finally:
        client.close()


def test_redis_scratch_starts_from_an_rdb(tmp_path: Path, fresh_redis: RedisScratch) -> None:
    client = redis.Redis.from_url(fresh_redis.uri)
    client.set("k", "v")
    client.save()
    client.close()
    rdb = fresh_redis.workdir / "dump.rdb"
    with RedisScratch(rdb=rdb) as restored:
        assert restored.start_timeout >= 600
        assert (restored.workdir / "dump.rdb").is_file()
        other = redis.Redis.from_url(restored.uri)
        assert other.get("k") == b"v"
        other.close()
        pid = restored.pid
    assert pid is not None and not pid_alive(pid)


def test_catalog_edited_behind_affidavit_fails_the_drill(
    app: App, cli: Any, home: Path, seeded: dict[str, Any], tmp_path: Path
) -> None:
    backup = backup_of(app, cli, seeded, tmp_path, "redis")
    with sqlite3.connect(home / "catalog.sqlite") as db:  # an attacker with database access
        db.execute(
            "update backup_datasets set fingerprint = ? where backup_id = ? and name = 'db0'",
            ("afp1:exact:b12:n0:" + "0" * 64, backup.id),
        )
    r = cli("drill", "run", backup.id, "--json")
    assert r.code == 1, r.err
    out = json.loads(r.out)
    assert out["ok"] is False
    assert "manifest-mismatch" in {f["code"] for f in out["findings"]}
