"""Consent subjects at a nested path (issue 17): ``consent.subject_field = "value.customer_id"``
resolved on the input record (before minimisation) by the allow-list's path rules, for Redis
and MongoDB input, on one process and on workers (the same bytes); a record whose path is
missing, null, an array or a sub-document is excluded as ``consent_subject_missing``. Real
redis-server, real SecantusDB, real age."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
import redis
from bson import ObjectId
from bson.int64 import Int64
from pymongo import MongoClient
from tests.e2e.test_export_cli import _json, add_recipient, verify
from tests.e2e.test_export_cli import prepare as prepare_mongo
from tests.e2e.test_export_parallel import _same_run

from affidavit.scratch.redis_server import RedisScratch
from affidavit.scratch.secantus_server import SecantusScratch
from affidavit.services.exports import parallel

pytestmark = pytest.mark.e2e

CUSTOMERS = 40
REDIS_SPEC = """
name = "customers-to-acme"
purpose = "churn analysis"
legal_basis = "consent"
recipient = "acme"
destination = "{dest}"

[consent]
{consent}
subject_field = "value.customer_id"

[input]
source = "cache"
dataset = "db0"
key_pattern = "customer:*"

[fields]
_id = "keep"
"value.country" = "keep"

[contract]
min_records = 1
unique = ["_id"]
"""


def _uri_db(uri: str, db: int) -> redis.Redis:
    return redis.Redis.from_url(urlunsplit(urlsplit(uri)._replace(path=f"/{db}")))


def _redis_seed(uri: str) -> None:
    """db0: customer:N hashes whose ``customer_id`` is cN (customers 35..39 have none); db1:
    consents of c0..c24 (c20 expired, c21 for another purpose)."""
    client = _uri_db(uri, 0)
    for n in range(CUSTOMERS):
        fields = {"country": "FR" if n % 2 else "DE", "secret": f"pw{n}"}
        if n < 35:
            fields["customer_id"] = f"c{n}"
        client.hset(f"customer:{n}", mapping=fields)
    client.set("customer:list", "a string: its value is no document")
    consents = _uri_db(uri, 1)
    for n in range(25):
        consents.hset(f"consent:{n}", mapping=_consent_fields(n))


def _consent_fields(n: int) -> dict[str, str]:
    return {
        "subject": f"c{n}",
        "purpose": "marketing" if n == 21 else "churn analysis",
        "valid_from": "2020-01-01T00:00:00Z",
        **({"valid_to": "2021-01-01T00:00:00Z"} if n == 20 else {}),
    }


@pytest.fixture(scope="module")
def cache() -> Iterator[str]:
    with RedisScratch(replica_sync_delay=0) as server:
        _redis_seed(server.uri)
        yield server.uri


def _prepare_redis(cli: Any, tmp: Path, uri: str, consent: str) -> tuple[Path, Path, str]:
    add = ("source", "add", "cache", "--engine", "redis", "--uri", uri)
    assert cli(*add, "--classification", "confidential").code == 0
    assert cli("vault", "add", "v1", "--url", f"file://{tmp / 'vault'}").code == 0
    assert cli("backup", "run", "cache", "--json").code == 0
    identity = add_recipient(cli, tmp)
    identity_file = tmp / "acme.key"
    identity_file.write_text(f"# created: now\n{identity}\n")
    dest = tmp / "outbox"
    dest.mkdir()
    spec_file = tmp / "spec.toml"
    spec_file.write_text(REDIS_SPEC.format(dest=dest, consent=consent))
    added = _json(cli("--actor", "olga", "export", "spec", "add", str(spec_file), "--json"))
    _json(cli("--actor", "paul", "export", "spec", "approve", added["name"], "1", "--json"))
    vkey = cli("ledger", "key").out.strip().splitlines()[-1]
    return identity_file, dest, vkey


def _run(cli: Any, workers: int, output: str) -> dict[str, Any]:
    r = cli(
        "export", "run", "customers-to-acme", "--workers", str(workers), "--output", output,
        "--json",
    )  # fmt: skip
    assert r.code == 0, r.err + r.out
    out: dict[str, Any] = json.loads(r.out)
    return out


def _verify(cli: Any, out: dict[str, Any], identity: Path, vkey: str) -> None:
    r = cli(
        "export", "verify", out["output"], "--manifest", out["manifest"], "--public-key", vkey,
        "--identity", str(identity), "--json", home_dir=None,
    )  # fmt: skip
    assert r.code == 0, r.out + r.err


@pytest.fixture
def small_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(parallel, "BATCH_BYTES", 512)


@pytest.mark.parametrize("where", ["redis", "file"])
def test_a_redis_hash_subject_at_value_customer_id(
    cli: Any, tmp_path: Path, cache: str, where: str, small_batches: None
) -> None:
    if where == "redis":
        consent = 'source = "cache"\ndataset = "db1"\nkey_pattern = "consent:*"'
    else:
        path = tmp_path / "consents.jsonl"
        path.write_text("".join(json.dumps(_consent_fields(n)) + "\n" for n in range(25)))
        consent = f'file = "{path}"'
    identity, _, vkey = _prepare_redis(cli, tmp_path, cache, consent)
    serial = _run(cli, 1, "serial.jsonl.age")
    records = serial["predicate"]["records"]
    assert records["in"] == CUSTOMERS + 1
    assert records["out"] == 23  # c0..c19, c22..c24
    assert records["excluded"] == {
        "consent_not_valid": 1,  # c20, expired
        "no_consent": 11,  # c21 (another purpose), c25..c34 (none)
        "consent_subject_missing": 6,  # customers 35..39 (no customer_id), customer:list
    }
    assert serial["predicate"]["consent"]["subject_field"] == "value.customer_id"
    _verify(cli, serial, identity, vkey)
    workers = _run(cli, 2, "workers.jsonl.age")
    _same_run(serial, workers)


MONGO_SPEC = """
name = "customers-to-acme"
purpose = "churn analysis"
legal_basis = "consent"
recipient = "acme"
destination = "{{dest}}"

[consent]
file = "{consents}"
subject_field = "customer.id"

[input]
source = "shop"
dataset = "shop.people"

[fields]
_id = "keep"
country = "keep"

[contract]
min_records = 1
unique = ["_id"]
"""
OID = ObjectId("65a1b2c3d4e5f60718293a4b")


def _people() -> list[dict[str, Any]]:
    """30 people with ``customer.id`` a string (0..9), an Int64 (10..19) or an int32
    (20..24), one an ObjectId, and 6 without a usable subject."""
    out: list[dict[str, Any]] = []
    for n in range(25):
        ident: Any = f"p{n}" if n < 10 else Int64(n) if n < 20 else n
        out.append({"_id": n, "customer": {"id": ident, "tier": "gold"}, "country": "FR"})
    out.append({"_id": 25, "customer": {"id": OID}, "country": "DE"})
    out.append({"_id": 26, "customer": {"tier": "gold"}, "country": "DE"})  # missing
    out.append({"_id": 27, "customer": {"id": None}, "country": "DE"})  # null
    out.append({"_id": 28, "customer": {"id": ["p1"]}, "country": "DE"})  # an array
    out.append({"_id": 29, "customer": {"id": {"x": "p1"}}, "country": "DE"})  # a document
    out.append({"_id": 30, "customer": [{"id": "p1"}], "country": "DE"})  # crosses an array
    out.append({"_id": 31, "customer": "p1", "country": "DE"})  # crosses a string
    out.append({"_id": 32, "country": "DE"})  # no customer at all
    return out


@pytest.fixture(scope="module")
def mongo(mongo_scratch_class: type[SecantusScratch]) -> Iterator[str]:
    with mongo_scratch_class() as server:
        client: MongoClient[dict[str, Any]] = MongoClient(server.uri)
        client["shop"]["people"].insert_many(_people())
        client.close()
        yield server.uri


def test_a_mongo_subject_at_customer_id_one_rule_for_every_type(
    cli: Any, home: Path, tmp_path: Path, mongo: str, small_batches: None
) -> None:
    consents = tmp_path / "consents.jsonl"
    subjects: list[Any] = [f"p{n}" for n in range(0, 10, 2)]  # strings: p0, p2, .. p8
    subjects += [10, "11", 12]  # an Int64 matches its digits, as an integer or a string
    subjects += [20, "21"]  # an int32 too
    subjects += [str(OID)]  # an ObjectId: its 24 hex digits
    subjects += ["p1"]  # matches customer 1 only: never an array, a document or a string path
    consents.write_text(
        "".join(
            json.dumps({"subject": s, "purpose": "churn analysis", "valid_from": "2020-01-01Z"})
            .replace("2020-01-01Z", "2020-01-01T00:00:00Z") + "\n"
            for s in subjects
        )
    )  # fmt: skip
    spec = MONGO_SPEC.format(consents=consents)
    s = prepare_mongo(cli, home, tmp_path, mongo, spec=spec)
    serial = _run(cli, 1, "serial.jsonl.age")
    records = serial["predicate"]["records"]
    assert records["in"] == 33
    # p0 p2 p4 p6 p8, p1, 10 11 12, 20 21, the ObjectId
    assert records["out"] == 12
    assert records["excluded"] == {
        "no_consent": 33 - 12 - 7,
        "consent_subject_missing": 7,  # 26..32
    }
    r = verify(cli, s, Path(serial["output"]), Path(serial["manifest"]))
    assert r.code == 0, r.out
    workers = _run(cli, 2, "workers.jsonl.age")
    _same_run(serial, workers)


def test_a_subject_field_that_is_not_a_path_is_refused_at_spec_add(
    cli: Any, home: Path, tmp_path: Path
) -> None:
    for bad in ("customer..id", "customer.$id", ".id", "a.b.c.d.e.f.g.h.i"):
        spec = MONGO_SPEC.format(consents="/nonexistent.jsonl").replace(
            'subject_field = "customer.id"', f'subject_field = "{bad}"'
        )
        spec_file = tmp_path / "spec.toml"
        spec_file.write_text(spec.format(dest=tmp_path))
        r = cli("--actor", "olga", "export", "spec", "add", str(spec_file))
        assert r.code == 2, (bad, r.out, r.err)
        assert "subject_field" in r.err and "Traceback" not in r.err
        assert "hint" in r.err.lower()


def test_a_redis_subject_path_that_never_resolves_is_refused_at_spec_add(
    cli: Any, tmp_path: Path
) -> None:
    for bad in ("value.a.b", "_id.x", "type.name", "expire_at_ms.ms"):
        spec = REDIS_SPEC.format(dest=tmp_path, consent='file = "/c.jsonl"').replace(
            'subject_field = "value.customer_id"', f'subject_field = "{bad}"'
        )
        spec_file = tmp_path / "spec.toml"
        spec_file.write_text(spec)
        r = cli("--actor", "olga", "export", "spec", "add", str(spec_file))
        assert r.code == 2, (bad, r.out, r.err)
        assert "never names a subject of a Redis record" in r.err, r.err
        assert "Traceback" not in r.err
    assert cli("export", "spec", "list", "--json").out.count("customers-to-acme") == 0
