"""A large live Redis server is read as one RDB snapshot over ``SYNC``
(``services.fingerprint.snapshot_fingerprints``) by ``affidavit fingerprint SOURCE``
and ``verify --against-source``. The snapshot path must give exactly what the key-by-key
path (SCAN and typed reads, which share no code with the RDB parser) gives on the same
server: the two read paths check each other. A server that refuses ``SYNC`` is read key by
key. The size threshold is forced here so that small fixtures take the snapshot path."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import redis

from affidavit.constants import EngineName
from affidavit.engines.redis import RedisEngine
from affidavit.models.progress import SilentReporter
from affidavit.models.uri import ConnectionUri
from affidavit.scratch.redis_server import RedisScratch
from affidavit.services import fingerprint as fingerprint_service
from affidavit.services.backends import engine_for_uri

pytestmark = pytest.mark.integration


@pytest.fixture
def cache(fresh_redis: RedisScratch, cli: Any, tmp_path: Path) -> RedisScratch:
    """A seeded server (every type, TTLs, binary names, three databases) registered as
    ``cache``, which answers SYNC at once."""
    client = redis.Redis(port=fresh_redis.port)
    client.config_set("repl-diskless-sync-delay", 0)
    client.close()
    uri = ConnectionUri.parse(EngineName.REDIS, fresh_redis.uri)
    with engine_for_uri(EngineName.REDIS, uri, password=None, timeout=5) as engine:
        engine.seed_sample(seed=11, scale=40)
    r = cli("source", "add", "cache", "--engine", "redis", "--uri", fresh_redis.uri,
            "--classification", "internal")  # fmt: skip
    assert r.code == 0, r.err
    r = cli("vault", "add", "v1", "--url", f"file://{tmp_path / 'vault'}")
    assert r.code == 0, r.err
    return fresh_redis


def _fingerprints(cli: Any, *args: str) -> dict[str, tuple[int, str]]:
    r = cli("fingerprint", "cache", *args, "--json")
    assert r.code == 0, r.err
    return {d["name"]: (d["records"], d["fingerprint"]) for d in json.loads(r.out)["datasets"]}


def _no_key_by_key_reads(*args: Any, **kwargs: Any) -> Any:
    raise AssertionError("a large server is read as one RDB snapshot")


@pytest.mark.parametrize("profile", ["exact", "logical"])
def test_snapshot_and_key_by_key_reads_agree(
    cli: Any, cache: RedisScratch, monkeypatch: pytest.MonkeyPatch, profile: str
) -> None:
    by_key = _fingerprints(cli, "--profile", profile)
    assert sum(n for n, _ in by_key.values()) > 100
    monkeypatch.setattr(fingerprint_service, "SNAPSHOT_FROM_KEYS", 0)
    monkeypatch.setattr(RedisEngine, "iter_records", _no_key_by_key_reads)
    assert _fingerprints(cli, "--profile", profile) == by_key


def test_a_changed_key_changes_the_snapshot_fingerprint(
    cli: Any, cache: RedisScratch, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(fingerprint_service, "SNAPSHOT_FROM_KEYS", 0)
    before = _fingerprints(cli)
    client = redis.Redis(port=cache.port)
    key = next(iter(client.scan_iter(count=10)))
    client.pexpire(key, 10**9)  # only the expiry changes
    client.close()
    after = _fingerprints(cli)
    assert after["db0"][0] == before["db0"][0] and after["db0"][1] != before["db0"][1]


def test_a_server_that_refuses_sync_is_read_key_by_key(
    cli: Any, cache: RedisScratch, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = redis.Redis(port=cache.port)
    client.acl_setuser("reader", enabled=True, passwords=["+s3cret"], keys=["*"],
                       commands=["+@all", "-sync", "-psync"])  # fmt: skip
    client.close()
    uri = ConnectionUri.parse(EngineName.REDIS, f"redis://reader@127.0.0.1:{cache.port}/0")
    with engine_for_uri(EngineName.REDIS, uri, password="s3cret", timeout=5) as engine:
        refused = fingerprint_service.snapshot_fingerprints(
            engine, ["db0"], profile="exact", index_for=lambda _: None, rep=SilentReporter()
        )
        assert refused is None
        by_key = fingerprint_service.fingerprint_records(
            engine.iter_records("db0"), encoding=engine.record_encoding, profile="exact",
            dataset="db0",
        )  # fmt: skip
    assert by_key.fingerprint.count > 0


@pytest.mark.parametrize("snapshot", [False, True])
def test_against_source_names_the_same_keys_either_way(
    cli: Any, cache: RedisScratch, monkeypatch: pytest.MonkeyPatch, snapshot: bool
) -> None:
    r = cli("backup", "run", "cache", "--json")
    assert r.code == 0, r.err
    backup_id = json.loads(r.out)["backup_id"]
    client = redis.Redis(port=cache.port)
    client.set(b"verify:new-key", b"added after the backup")
    client.close()
    if snapshot:
        monkeypatch.setattr(fingerprint_service, "SNAPSHOT_FROM_KEYS", 0)
        monkeypatch.setattr(RedisEngine, "iter_records", _no_key_by_key_reads)
    r = cli("verify", backup_id, "--against-source", "--json")
    out = json.loads(r.out)
    assert r.code == 1, out
    (differs,) = out["findings"]
    assert differs["code"] == "source-differs" and differs["subject"] == "db0"
    assert [(k["change"], k["key"]) for k in differs["details"]["keys"]] == [
        ("extra", "verify:new-key")
    ]
