"""The verification story through the CLI against real servers (issue 6): clean backups verify,
`verify list` shows them, the ledger carries the signed result; drift against the live source;
recorded, reproducible samples; bad input and an unreachable vault."""

from __future__ import annotations

import json
import sqlite3
import uuid
from pathlib import Path
from typing import Any

import boto3
import pytest
import redis
from bson import ObjectId
from pymongo import MongoClient

from affidavit.config import load_settings
from affidavit.constants import EngineName
from affidavit.crypto.dsse import Envelope
from affidavit.ledger.attestation import VERIFICATION_PREDICATE_TYPE, verify_attestation
from affidavit.models.uri import ConnectionUri
from affidavit.scratch.redis_server import RedisScratch
from affidavit.scratch.secantus_server import SecantusScratch
from affidavit.services import verify as verify_service
from affidavit.services.backends import engine_for_uri
from affidavit.services.context import load_ledger_identity, open_app

pytestmark = pytest.mark.e2e


def _seed(engine: EngineName, uri: str, scale: int = 10) -> dict[str, int]:
    with engine_for_uri(engine, ConnectionUri.parse(engine, uri), password=None, timeout=5) as e:
        return dict(e.seed_sample(seed=6, scale=scale))


@pytest.fixture(scope="module")
def servers(mongo_scratch_class: type[SecantusScratch]) -> Any:
    """Seeded servers that no test of this module writes to."""
    with mongo_scratch_class() as mongo, RedisScratch(replica_sync_delay=0) as cache:
        _seed(EngineName.MONGODB, mongo.uri)
        _seed(EngineName.REDIS, cache.uri)
        yield {"mongo": mongo.uri, "redis": cache.uri}


def _register(cli: Any, *, mongo: str | None, redis_uri: str | None, vault: Path) -> None:
    if mongo:
        r = cli(
            "source",
            "add",
            "orders",
            "--engine",
            "mongodb",
            "--uri",
            mongo,
            "--classification",
            "internal",
        )
        assert r.code == 0, r.err
    if redis_uri:
        r = cli(
            "source",
            "add",
            "cache",
            "--engine",
            "redis",
            "--uri",
            redis_uri,
            "--classification",
            "internal",
        )
        assert r.code == 0, r.err
    assert cli("vault", "add", "v1", "--url", f"file://{vault}").code == 0


def _backup(cli: Any, source: str) -> str:
    r = cli("backup", "run", source, "--json")
    assert r.code == 0, r.err + r.out
    return str(json.loads(r.out)["backup_id"])


def _verify(cli: Any, *args: str) -> tuple[int, dict[str, Any]]:
    r = cli("verify", *args, "--json")
    assert r.out, r.err
    return r.code, json.loads(r.out)


def _codes(out: dict[str, Any]) -> set[str]:
    return {f["code"] for f in out["findings"]}


def test_clean_backups_verify_ok_listed_signed_and_in_the_ledger(
    cli: Any, home: Path, servers: Any, tmp_path: Path
) -> None:
    _register(cli, mongo=servers["mongo"], redis_uri=servers["redis"], vault=tmp_path / "vault")
    ids = {source: _backup(cli, source) for source in ("orders", "cache")}
    results = {}
    for source, bid in ids.items():
        code, out = _verify(cli, bid)
        assert code == 0, out
        assert out["ok"] is True and out["findings"] == []
        assert {"id", "backup_id", "kind", "seconds", "coverage"} <= set(out)
        assert out["backup_id"] == bid and out["kind"] == "full"
        cov = out["coverage"]
        assert cov["artifacts_checked"] == cov["artifacts_total"] > 0
        assert cov["datasets_checked"] and len(cov["datasets_checked"]) == cov["datasets_total"]
        results[source] = out

    # the human form and the default-command routing (`verify BACKUP` == `verify run BACKUP`)
    r = cli("verify", "run", ids["cache"])
    assert r.code == 0, r.err
    assert "verified" in r.out

    r = cli("verify", "list", "--json")
    assert r.code == 0, r.err
    listed = json.loads(r.out)["verifications"]
    assert len(listed) == 3
    assert all(v["ok"] and v["findings_count"] == 0 for v in listed)
    assert {"started_at", "seconds", "kind"} <= set(listed[0])
    r = cli("verify", "list", ids["orders"], "--json")
    assert [v["id"] for v in json.loads(r.out)["verifications"]] == [results["orders"]["id"]]
    r = cli("verify", "list")
    assert r.code == 0 and results["orders"]["id"] in r.out

    # the signed attestation verifies with the ledger key; its subjects are the artifacts read
    identity = load_ledger_identity(home)
    assert identity is not None
    with open_app(load_settings(home=home)) as app:
        (stored,) = verify_service.list_verifications(app, ids["orders"])
    assert stored.envelope is not None
    statement = verify_attestation(
        Envelope.from_json(stored.envelope),
        {identity.keyid: identity.signer.key.public_key},
        predicate_type=VERIFICATION_PREDICATE_TYPE,
    )
    assert statement.predicate["ok"] is True
    assert statement.predicate["backup_id"] == ids["orders"]
    assert all(s.name.startswith(f"orders/{ids['orders']}/") for s in statement.subjects)

    with sqlite3.connect(home / "catalog.sqlite") as db:
        done = [
            json.loads(e)
            for (e,) in db.execute(
                "select entry from ledger_entries where action = 'verification.completed'"
            )
        ]
        predicates = [
            json.loads(e)["details"]["predicate_type"]
            for (e,) in db.execute(
                "select entry from ledger_entries where action = 'attestation.created'"
            )
        ]
    assert len(done) == 3 and all(e["details"]["ok"] is True for e in done)
    assert predicates.count(VERIFICATION_PREDICATE_TYPE) == 3
    r = cli("ledger", "verify", "--json")
    assert r.code == 0, r.out + r.err
    assert json.loads(r.out)["ok"] is True


def test_against_source_mongo_change_after_backup_is_drift_named_by_key(
    cli: Any, home: Path, fresh_mongo: SecantusScratch, tmp_path: Path
) -> None:
    _seed(EngineName.MONGODB, fresh_mongo.uri, scale=5)
    _register(cli, mongo=fresh_mongo.uri, redis_uri=None, vault=tmp_path / "vault")
    bid = _backup(cli, "orders")
    code, out = _verify(cli, bid, "--against-source")
    assert code == 0 and out["ok"] is True and out["findings"] == [], out

    with MongoClient(fresh_mongo.uri) as client:
        doc = client.shop.customers.find_one(sort=[("_id", 1)])
        assert doc is not None
        client.shop.customers.update_one({"_id": doc["_id"]}, {"$set": {"tier": "changed"}})
    code, out = _verify(cli, bid, "--against-source")
    assert code == 0, out  # drift alone does not fail
    assert out["ok"] is True and out["kind"] == "against-source"
    (drift,) = out["findings"]
    assert drift["code"] == "drift" and drift["subject"] == "shop.customers"
    assert isinstance(doc["_id"], ObjectId)
    assert [k["key"] for k in drift["details"]["keys"]] == [json.dumps({"$oid": str(doc["_id"])})]
    assert str(doc["_id"]) in drift["message"]


def test_against_source_redis_change_is_source_differs_named_by_key(
    cli: Any, home: Path, fresh_redis: RedisScratch, tmp_path: Path
) -> None:
    _seed(EngineName.REDIS, fresh_redis.uri, scale=5)
    _register(cli, mongo=None, redis_uri=fresh_redis.uri, vault=tmp_path / "vault")
    bid = _backup(cli, "cache")
    client = redis.Redis.from_url(fresh_redis.uri)
    client.set(b"verify:new-key", b"added after the backup")
    client.close()
    code, out = _verify(cli, bid, "--against-source")
    assert code == 1, out
    assert out["ok"] is False
    (differs,) = out["findings"]
    assert differs["code"] == "source-differs" and differs["subject"] == "db0"
    assert [(k["change"], k["key"]) for k in differs["details"]["keys"]] == [
        ("extra", "verify:new-key")
    ]
    assert "cannot be told apart" in differs["details"]["note"]


def test_sample_records_seed_and_coverage_and_the_seed_repeats_the_sample(
    cli: Any, home: Path, servers: Any, tmp_path: Path
) -> None:
    _register(cli, mongo=servers["mongo"], redis_uri=None, vault=tmp_path / "vault")
    bid = _backup(cli, "orders")
    code, first = _verify(cli, bid, "--sample", "50")
    assert code == 0, first
    assert first["kind"] == "sample" and first["sample_percent"] == 50
    seed = first["sample_seed"]
    assert seed and len(seed) == 16
    cov = first["coverage"]
    assert cov["data_artifacts_total"] == 2 and cov["data_artifacts_checked"] == 1
    assert cov["artifacts_checked"] < cov["artifacts_total"]
    assert 0 < cov["data_bytes_checked"] <= cov["data_bytes_total"]
    code, again = _verify(cli, bid, "--sample", "50", "--seed", seed)
    assert code == 0 and again["sample_seed"] == seed
    assert again["coverage"]["data_paths_checked"] == cov["data_paths_checked"]
    # the sample is a pure function of seed and paths, documented in docs/verification.md
    paths = [f"p/{i}" for i in range(40)]
    pick = verify_service.sample_paths(paths, 10, "abc")
    assert len(pick) == 4 and pick == verify_service.sample_paths(list(reversed(paths)), 10, "abc")
    assert pick != verify_service.sample_paths(paths, 10, "abd")
    with sqlite3.connect(home / "catalog.sqlite") as db:
        rows = db.execute("select sample_seed, sample_percent from verifications").fetchall()
    assert sorted(rows) == [(seed, 50.0), (seed, 50.0)]


# -- bad input and an unreachable vault: right exit code, one line with a hint ---------------


def _one_error(r: Any, code: int) -> None:
    assert r.code == code, (r.code, r.out, r.err)
    lines = [line for line in r.err.strip().splitlines() if line]
    lines = lines[next((i for i, x in enumerate(lines) if x.startswith("error: ")), 0) :]
    assert lines and lines[0].startswith("error: "), r.err
    assert len(lines) <= 2 and "Traceback" not in r.err + r.out


def test_unknown_backup_and_bad_sample_percent_are_bad_input(
    cli: Any, home: Path, servers: Any, tmp_path: Path
) -> None:
    _register(cli, mongo=None, redis_uri=servers["redis"], vault=tmp_path / "vault")
    _one_error(cli("verify", "bk-20990101T000000Z-000000"), 2)
    bid = _backup(cli, "cache")
    for bad in ("0", "150", "-5", "nan"):
        _one_error(cli("verify", bid, "--sample", bad), 2)
    r = cli("verify", bid, "--sample", "abc")
    assert r.code == 2
    _one_error(cli("verify", bid, "--seed", "abc"), 2)
    r = cli("verify", "list", "--json")
    assert json.loads(r.out)["verifications"] == []


def test_deleted_backup_is_bad_input_with_a_hint(
    cli: Any, home: Path, servers: Any, tmp_path: Path
) -> None:
    _register(cli, mongo=None, redis_uri=servers["redis"], vault=tmp_path / "vault")
    bid = _backup(cli, "cache")
    with sqlite3.connect(home / "catalog.sqlite") as db:
        db.execute(
            "update backups set status = 'deleted', deleted_at = finished_at where id = ?", (bid,)
        )
    r = cli("verify", bid)
    _one_error(r, 2)
    assert "deleted" in r.err and "hint: " in r.err and "backup show" in r.err


def test_unreachable_s3_vault_is_exit_3_one_line_and_not_recorded_as_a_verification(
    cli: Any, home: Path, servers: Any, monkeypatch: pytest.MonkeyPatch, moto_scratch_class: Any
) -> None:
    with moto_scratch_class() as moto:
        monkeypatch.setenv("AWS_ENDPOINT_URL", moto.uri)
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
        bucket = f"vault-{uuid.uuid4().hex[:12]}"
        boto3.client("s3").create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=True)
        assert (
            cli(
                "source",
                "add",
                "cache",
                "--engine",
                "redis",
                "--uri",
                servers["redis"],
                "--classification",
                "internal",
            ).code
            == 0
        )
        r = cli("vault", "add", "s3v", "--url", f"s3://{bucket}/b", "--region", "us-east-1")
        assert r.code == 0, r.err
        bid = _backup(cli, "cache")
        code, out = _verify(cli, bid)
        assert code == 0, out
    # the moto server is stopped now: the vault cannot be reached
    r = cli("verify", bid, "--json")
    _one_error(r, 3)
    assert r.out == ""
    with sqlite3.connect(home / "catalog.sqlite") as db:
        assert db.execute("select count(*) from verifications").fetchone() == (1,)
        (entry,) = db.execute(
            "select entry from ledger_entries where action = 'verification.could_not_run'"
        ).fetchone()
    assert json.loads(entry)["subject"] == f"backup:{bid}"
    assert cli("ledger", "verify").code == 0
