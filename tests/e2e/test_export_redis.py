"""Redis as an export input, and consent read from a registered source (issue 17).

A Redis database is read as one record per key (``{"_id", "type", "value", "expire_at_ms"}``,
docs/exports.md "A Redis input"), from a backup (the RDB decrypted from the vault) or live
(one RDB snapshot over SYNC), narrowed by a key pattern; the manifest's input fingerprint is
the backup's signed fingerprint of the database; `export verify` holds at the destination and
still catches tampering. Consent comes from Redis hashes or a MongoDB collection. Bad input
is refused before anything is recorded. Real redis-server, real SecantusDB, real age."""

from __future__ import annotations

import dataclasses
import json
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
import redis
from pymongo import MongoClient
from tests.e2e.test_export_cli import (
    _checks,
    _json,
    _plain,
    _reencrypt,
    add_recipient,
    events,
    ledger_size,
    verify,
)

from affidavit.errors import IntegrityError
from affidavit.scratch.redis_server import RedisScratch
from affidavit.scratch.secantus_server import SecantusScratch
from affidavit.services.context import App
from affidavit.services.exports.passes import RecordPass
from affidavit.services.exports.run import plan_export

pytestmark = pytest.mark.e2e

SPEC = """
name = "customers-to-acme"
purpose = "churn analysis"
legal_basis = "legitimate_interests"
recipient = "acme"
destination = "{dest}"

[input]
source = "cache"
dataset = "db0"
key_pattern = "customer:*"

[fields]
_id = "keep"
type = "keep"
"value.email" = {{ transform = "mask", keep = 4 }}
"value.country" = "keep"
expire_at_ms = "keep"

[contract]
min_records = 1
unique = ["_id"]

[contract.schema]
type = "object"
required = ["_id", "type", "value"]

[contract.schema.properties.type]
enum = ["hash"]
"""
LIVE_SPEC = SPEC.replace('dataset = "db0"\n', 'dataset = "db0"\nfrom = "live"\n')
CUSTOMERS = 30
OTHERS = 7  # keys the pattern leaves out
EXPIRE_AT = 2_200_000_000_000  # 2039: a key that expires, long after the tests


def _seed(client: redis.Redis) -> None:
    for n in range(CUSTOMERS):
        fields = {"email": f"person{n}@example.com", "country": "FR" if n % 2 else "DE"}
        client.hset(f"customer:{n}", mapping={**fields, "secret": f"pw{n}"})
    client.pexpireat("customer:5", EXPIRE_AT)
    for n in range(4):
        client.set(f"session:{n}", f"token{n}")
    client.rpush("queue:jobs", "a", "b")
    client.sadd("tags", "x", "y")
    client.zadd("scores", {"person1@example.com": 1.5})


def _consents(client: redis.Redis) -> None:
    """db1: consents of customers 0..19 (customer:18 expired, customer:19 another purpose)."""
    for n in range(20):
        client.hset(
            f"consent:{n}",
            mapping={
                "subject": f"customer:{n}",
                "purpose": "marketing" if n == 19 else "churn analysis",
                "valid_from": "2020-01-01T00:00:00Z",
                **({"valid_to": "2021-01-01T00:00:00Z"} if n == 18 else {}),
            },
        )


@pytest.fixture(scope="module")
def cache() -> Iterator[str]:
    with RedisScratch(replica_sync_delay=0) as server:
        _seed(_uri_db(server.uri, 0))
        _consents(_uri_db(server.uri, 1))
        yield server.uri


def _uri_db(uri: str, db: int) -> redis.Redis:
    """A client of database ``db`` (a URI's path would override ``db=``)."""
    return redis.Redis.from_url(urlunsplit(urlsplit(uri)._replace(path=f"/{db}")))


@dataclass
class Setup:
    dest: Path
    identity: str
    identity_file: Path
    vkey: str
    backup_id: str


def prepare(cli: Any, tmp: Path, uri: str, spec: str, *, backup: bool = True) -> Setup:
    add = ("source", "add", "cache", "--engine", "redis", "--uri", uri)
    assert cli(*add, "--classification", "confidential").code == 0
    assert cli("vault", "add", "v1", "--url", f"file://{tmp / 'vault'}").code == 0
    backup_id = _json(cli("backup", "run", "cache", "--json"))["backup_id"] if backup else ""
    identity = add_recipient(cli, tmp)
    identity_file = tmp / "acme.key"
    identity_file.write_text(f"# created: now\n{identity}\n")
    dest = tmp / "outbox"
    dest.mkdir()
    spec_file = tmp / "spec.toml"
    spec_file.write_text(spec.format(dest=dest))
    added = _json(cli("--actor", "olga", "export", "spec", "add", str(spec_file), "--json"))
    _json(cli("--actor", "paul", "export", "spec", "approve", added["name"], "1", "--json"))
    vkey = cli("ledger", "key").out.strip().splitlines()[-1]
    return Setup(dest, identity, identity_file, vkey, backup_id)


def _run(cli: Any, code: int = 0) -> dict[str, Any]:
    r = cli("export", "run", "customers-to-acme", "--json")
    assert r.code == code, r.err + r.out
    out: dict[str, Any] = json.loads(r.out)
    return out


def _signed_fingerprint(cli: Any, backup_id: str, dataset: str) -> str:
    shown = _json(cli("backup", "show", backup_id, "--json"))
    datasets = shown.get("datasets") or shown["backup"]["datasets"]
    (found,) = [d for d in datasets if d["name"] == dataset]
    fingerprint: str = found["fingerprint"]
    return fingerprint


def _records(s: Setup, file: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in _plain(s, file)]


def test_a_redis_backup_export_with_a_key_pattern(
    cli: Any, home: Path, tmp_path: Path, cache: str
) -> None:
    s = prepare(cli, tmp_path, cache, SPEC)
    out = _run(cli)
    predicate = out["predicate"]
    assert predicate["records"]["in"] == CUSTOMERS
    assert predicate["records"]["out"] == CUSTOMERS
    assert predicate["records"]["excluded"] == {"filter": OTHERS}
    source = predicate["input"]
    assert source["backup_id"] == s.backup_id
    assert source["engine"] == "redis" and source["record_shape"] == "redis-key/1"
    assert source["key_pattern"] == "customer:*"
    assert source["records_in_dataset"] == CUSTOMERS + OTHERS
    # the input's fingerprint is the one the backup signed (and verification checks)
    assert source["fingerprint"] == _signed_fingerprint(cli, s.backup_id, "db0")
    assert f":n{CUSTOMERS}:" in source["matched_fingerprint"]
    records = {r["_id"]: r for r in _records(s, Path(out["output"]))}
    assert sorted(records) == sorted(f"customer:{n}" for n in range(CUSTOMERS))
    seven = records["customer:7"]
    assert seven["type"] == "hash"
    assert seven["value"] == {"country": "FR", "email": "*" * 15 + ".com"}
    assert "secret" not in json.dumps(seven)  # not on the allow-list
    assert seven["expire_at_ms"] is None
    assert records["customer:5"]["expire_at_ms"] == {"$numberLong": str(EXPIRE_AT)}
    checked = verify(cli, s, Path(out["output"]), Path(out["manifest"]))
    assert checked.code == 0, checked.out
    assert json.loads(checked.out)["records"] == CUSTOMERS
    completed = events(home, "export.completed")[-1]["details"]
    assert completed["input"]["fingerprint"] == source["fingerprint"]

    # lineage: the input dataset is named redis://host:port + db0 (docs/lineage.md)
    host_port = cache.split("://", 1)[1].split("/", 1)[0].rpartition("@")[2]
    graph = json.loads(cli("lineage", "show", "cache/db0", "--json").out)
    ids = {d["id"]: d for d in graph["datasets"]}
    assert ids[f"redis://{host_port}|db0"]["kind"] == "source"
    assert ids[f"file|{out['output']}"]["kind"] == "destination"
    assert "export" in {r["kind"] for r in graph["runs"]}

    # tampering with the delivered records is still caught at the destination
    file, manifest = Path(out["output"]), Path(out["manifest"])
    lines = _plain(s, file)
    edited = json.loads(lines[0])
    edited["value"]["country"] = "NL"
    _reencrypt(s, file, [json.dumps(edited).encode() + b"\n", *lines[1:]])
    assert "fingerprint" in " ".join(_checks(verify(cli, s, file, manifest)))
    slipped = json.loads(lines[0])
    slipped["value"]["secret"] = "pw"
    _reencrypt(s, file, [json.dumps(slipped, separators=(",", ":")).encode() + b"\n", *lines[1:]])
    result = verify(cli, s, file, manifest)
    assert "allow-list" in _checks(result)
    assert any("value.secret" in d["message"] for d in json.loads(result.out)["discrepancies"])
    _reencrypt(s, file, lines[1:])  # a record dropped
    assert verify(cli, s, file, manifest).code == 1


def test_a_live_redis_export_reads_one_snapshot_with_the_same_result(
    cli: Any, home: Path, tmp_path: Path, cache: str
) -> None:
    s = prepare(cli, tmp_path, cache, LIVE_SPEC)
    out = _run(cli)
    predicate = out["predicate"]
    assert predicate["records"]["in"] == CUSTOMERS
    assert predicate["records"]["excluded"] == {"filter": OTHERS}
    source = predicate["input"]
    assert source["from"] == "live" and "backup_id" not in source
    assert source["uri"] == cache
    assert source["consistency"]["mode"] == "rdb-snapshot"
    # nothing changed since the backup: the live database has the backup's fingerprint
    assert source["fingerprint"] == _signed_fingerprint(cli, s.backup_id, "db0")
    assert out["export"]["backup_id"] == "live"
    checked = verify(cli, s, Path(out["output"]), Path(out["manifest"]))
    assert checked.code == 0, checked.out
    completed = events(home, "export.completed")[-1]["details"]
    assert completed["input"]["key_pattern"] == "customer:*"
    # lineage: the live input is the source's dataset itself, redis://host:port + db0
    host_port = cache.split("://", 1)[1].split("/", 1)[0].rpartition("@")[2]
    graph = json.loads(cli("lineage", "show", out["predicate"]["export_id"], "--json").out)
    ids = {d["id"]: d for d in graph["datasets"]}
    assert ids[f"redis://{host_port}|db0"]["kind"] == "source"
    forward = {(e["from"], e["to"]) for e in graph["edges"]}
    assert any(a == f"redis://{host_port}|db0" for a, _ in forward), forward
    assert cli("lineage", "verify").code == 0


CONSENT_SPEC = SPEC.replace('legal_basis = "legitimate_interests"', 'legal_basis = "consent"')


def test_consent_from_redis_hashes_excludes_by_reason(
    cli: Any, home: Path, tmp_path: Path, cache: str
) -> None:
    spec = CONSENT_SPEC.replace(
        "[input]",
        '[consent]\nsource = "cache"\ndataset = "db1"\nkey_pattern = "consent:*"\n\n[input]',
    )
    s = prepare(cli, tmp_path, cache, spec)
    out = _run(cli)
    records = out["predicate"]["records"]
    assert records["out"] == 18  # customers 0..17
    assert records["excluded"] == {
        "filter": OTHERS,
        "consent_not_valid": 1,  # customer:18, expired
        "no_consent": CUSTOMERS - 19,  # 19 (another purpose) and 20..29
    }
    consent = out["predicate"]["consent"]
    assert consent["source"] == "cache" and consent["key_pattern"] == "consent:*"
    assert consent["entries"] == 20 and len(consent["sha256"]) == 64
    assert consent["consistency"]["mode"] == "rdb-snapshot"
    assert consent["fingerprint"].startswith("afp1:exact:") and ":n20:" in consent["fingerprint"]
    completed = events(home, "export.completed")[-1]["details"]
    assert completed["consent_sha256"] == consent["sha256"]
    assert verify(cli, s, Path(out["output"]), Path(out["manifest"])).code == 0

    # a consent source that cannot be reached: exit 3, nothing recorded, nothing delivered
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    add = ("source", "add", "gone", "--engine", "redis", "--uri", f"redis://127.0.0.1:{port}")
    assert cli(*add, "--classification", "internal").code == 0
    (tmp_path / "spec2.toml").write_text(
        spec.replace('source = "cache"\ndataset = "db1"', 'source = "gone"\ndataset = "db1"')
        .format(dest=s.dest)
    )  # fmt: skip
    assert cli("--actor", "olga", "export", "spec", "add", str(tmp_path / "spec2.toml")).code == 0
    assert cli("--actor", "paul", "export", "spec", "approve", "customers-to-acme", "2").code == 0
    before, delivered = ledger_size(home), sorted(s.dest.iterdir())
    r = cli("export", "run", "customers-to-acme", "--output", "again.jsonl.age")
    assert r.code == 3, r.err + r.out
    assert "Redis" in r.err and "Traceback" not in r.err
    assert ledger_size(home) == before
    assert sorted(s.dest.iterdir()) == delivered


def test_a_malformed_redis_consent_is_named_by_its_key(
    cli: Any, home: Path, tmp_path: Path
) -> None:
    with RedisScratch(replica_sync_delay=0) as server:
        client = _uri_db(server.uri, 0)
        _seed(client)
        consents = _uri_db(server.uri, 1)
        _consents(consents)
        spec = CONSENT_SPEC.replace(
            "[input]",
            '[consent]\nsource = "cache"\ndataset = "db1"\nkey_pattern = "consent:*"\n\n[input]',
        )
        s = prepare(cli, tmp_path, server.uri, spec)
        before = ledger_size(home)
        cases = [
            (lambda: consents.set("consent:bad", "x"), "key 'consent:bad': is a string"),
            (
                lambda: consents.hset("consent:bad", mapping={"subject": "s", "purpose": "p"}),
                "key 'consent:bad': valid_from must be",
            ),
            (
                lambda: consents.hset(
                    "consent:bad",
                    mapping={"subject": "s", "purpose": "p", "valid_from": "2020", "x": "1"},
                ),
                "key 'consent:bad': unknown key(s) x",
            ),
        ]
        for make, words in cases:
            consents.delete("consent:bad")
            make()
            r = cli("export", "run", "customers-to-acme")
            assert r.code == 2, r.err + r.out
            assert words in r.err and "Traceback" not in r.err
        assert ledger_size(home) == before
        assert list(s.dest.iterdir()) == []
        client.close()
        consents.close()


def _consent_docs() -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for n in range(10):
        docs.append(
            {
                "_id": n,
                "subject": f"customer:{n}",
                "purpose": "churn analysis",
                "valid_from": "2020-01-01T00:00:00Z",
                "valid_to": None if n != 9 else "2021-01-01T00:00:00Z",
            }
        )
    return docs


@pytest.fixture
def consent_db(mongo_scratch_class: type[SecantusScratch]) -> Iterator[tuple[str, Any]]:
    with mongo_scratch_class() as server:
        client: MongoClient[dict[str, Any]] = MongoClient(server.uri)
        client["crm"]["consents"].insert_many(_consent_docs())
        yield server.uri, client["crm"]["consents"]
        client.close()


def test_consent_from_a_mongodb_collection_and_its_malformed_entries(
    cli: Any, home: Path, tmp_path: Path, cache: str, consent_db: tuple[str, Any]
) -> None:
    uri, collection = consent_db
    add = ("source", "add", "crm", "--engine", "mongodb", "--uri", uri)
    assert cli(*add, "--classification", "internal").code == 0
    spec = CONSENT_SPEC.replace(
        "[input]", '[consent]\nsource = "crm"\ndataset = "crm.consents"\n\n[input]'
    )
    s = prepare(cli, tmp_path, cache, spec)
    out = _run(cli)
    records = out["predicate"]["records"]
    assert records["out"] == 9
    assert records["excluded"] == {
        "filter": OTHERS,
        "consent_not_valid": 1,
        "no_consent": CUSTOMERS - 10,
    }
    consent = out["predicate"]["consent"]
    assert consent["source"] == "crm" and consent["dataset"] == "crm.consents"
    assert consent["entries"] == 10 and consent["uri"] == uri
    assert consent["fingerprint"].startswith("afp1:logical:")
    assert verify(cli, s, Path(out["output"]), Path(out["manifest"])).code == 0

    before = ledger_size(home)
    collection.insert_one({"_id": "broken", "subject": "customer:1", "purpose": "p"})
    r = cli("export", "run", "customers-to-acme", "--output", "again.jsonl.age")
    assert r.code == 2, r.err + r.out
    assert '_id "broken": valid_from must be' in r.err and "Traceback" not in r.err
    assert ledger_size(home) == before


def _refused_at_spec_add(cli: Any, home: Path, spec_file: Path, words: str) -> None:
    before = ledger_size(home)
    r = cli("--actor", "olga", "export", "spec", "add", str(spec_file))
    assert r.code == 2, r.err + r.out
    assert words in r.err and "Traceback" not in r.err
    assert "hint" in r.err.lower() or len(r.err.strip().splitlines()) >= 1
    assert ledger_size(home) == before


def test_input_selectors_that_do_not_fit_the_engine_are_refused_at_spec_add(
    cli: Any, home: Path, tmp_path: Path, cache: str
) -> None:
    add = ("source", "add", "cache", "--engine", "redis", "--uri", cache)
    assert cli(*add, "--classification", "internal").code == 0
    add = ("source", "add", "shop", "--engine", "mongodb", "--uri", "mongodb://127.0.0.1:1/")
    assert cli(*add, "--classification", "internal").code == 0
    spec_file = tmp_path / "spec.toml"
    # a key pattern on a MongoDB input
    spec_file.write_text(SPEC.replace('source = "cache"', 'source = "shop"').format(dest=tmp_path))
    _refused_at_spec_add(cli, home, spec_file, "input.key_pattern selects Redis keys")
    # a query filter on a Redis input
    spec_file.write_text(
        SPEC.replace('key_pattern = "customer:*"', 'filter = {{ type = "hash" }}').format(
            dest=tmp_path
        )
    )
    _refused_at_spec_add(cli, home, spec_file, "input.filter is a MongoDB query")
    # both at once: refused when parsed
    spec_file.write_text(
        SPEC.replace('key_pattern = "customer:*"', 'key_pattern = "c*"\nfilter = {{ a = 1 }}')
        .format(dest=tmp_path)
    )  # fmt: skip
    _refused_at_spec_add(cli, home, spec_file, "both a filter")
    # a consent key pattern on a MongoDB source; a consent collection on a Redis source
    for consent, words in (
        ('source = "shop"\nkey_pattern = "c:*"', "consent.key_pattern selects Redis keys"),
        ('source = "cache"\ndataset = "db1"', "consent.dataset names a MongoDB collection"),
        ('source = "cache"', "consent.source needs consent.dataset"),
        ('file = "/x.jsonl"\nsource = "cache"', "names a file and a source"),
        ('source = "cache"\nkey_pattern = ""', "key_pattern must be a non-empty string"),
    ):
        spec_file.write_text(
            CONSENT_SPEC.replace("[input]", f"[consent]\n{consent}\n\n[input]").format(
                dest=tmp_path
            )
        )
        _refused_at_spec_add(cli, home, spec_file, words)


def test_an_unreachable_live_redis_source_is_exit_3_with_nothing_recorded(
    cli: Any, home: Path, tmp_path: Path
) -> None:
    with RedisScratch(replica_sync_delay=0) as server:
        _seed(_uri_db(server.uri, 0))
        s = prepare(cli, tmp_path, server.uri, LIVE_SPEC, backup=False)
    before = ledger_size(home)  # the server is gone now
    r = cli("export", "run", "customers-to-acme")
    assert r.code == 3, r.err + r.out
    assert "Redis" in r.err and "Traceback" not in r.err
    assert ledger_size(home) == before
    assert list(s.dest.iterdir()) == []


def test_a_live_redis_dataset_that_is_not_a_database_is_bad_input(
    cli: Any, home: Path, tmp_path: Path, cache: str
) -> None:
    spec = LIVE_SPEC.replace('dataset = "db0"', 'dataset = "customers"')
    s = prepare(cli, tmp_path, cache, spec, backup=False)
    before = ledger_size(home)
    r = cli("export", "run", "customers-to-acme")
    assert r.code == 2, r.err + r.out
    assert "db0, db1" in r.err and "Traceback" not in r.err
    assert ledger_size(home) == before
    assert list(s.dest.iterdir()) == []


def test_a_redis_backup_that_does_not_hold_its_signed_fingerprint_exports_nothing(
    app: App, cli: Any, home: Path, tmp_path: Path, cache: str
) -> None:
    """The run's own check of the RDB it read against the signed manifest: a plan whose signed
    fingerprint (or count) is not the RDB's fails the pass, whatever the vault digests say."""
    prepare(cli, tmp_path, cache, SPEC)
    plan = plan_export(app, "customers-to-acme")
    assert plan.dataset is not None
    other = plan.dataset.fingerprint[:-8] + "00000000"
    for forged in (
        dataclasses.replace(plan.dataset, fingerprint=other),
        dataclasses.replace(plan.dataset, records=plan.dataset.records + 1),
    ):
        records = RecordPass(app, dataclasses.replace(plan, dataset=forged), at=datetime.now(UTC))
        with pytest.raises(IntegrityError, match="its signed manifest"):
            for _ in records.shipped(tmp_path):
                pass
    honest = RecordPass(app, plan, at=datetime.now(UTC))
    assert sum(1 for _ in honest.shipped(tmp_path)) == CUSTOMERS
