"""The CLI end to end with its catalog on a real PostgreSQL server: ``init`` through
``--catalog-url``, ``AFFIDAVIT_CATALOG_URL`` or ``affidavit.toml``, a Redis backup into a
folder vault, ``verify``, ``ledger verify``, an evidence package built and verified, a policy
check; and attacks made with SQL on the catalog, which ``ledger verify`` reports and the
signer refuses to sign over.

This module's ``home`` replaces the SQLite one of ``conftest``: ``cli``, ``settings`` and
``app`` then all work on this test's own PostgreSQL database (``postgres_url``)."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import make_url

from affidavit.catalog.store import SCHEMA_HEAD
from affidavit.config import load_settings
from affidavit.constants import EngineName
from affidavit.ledger import merkle
from affidavit.models.ledger import Event
from affidavit.models.uri import ConnectionUri
from affidavit.scratch.postgres_server import PostgresScratch
from affidavit.scratch.redis_server import RedisScratch
from affidavit.services.backends import engine_for_uri
from affidavit.services.setup import initialise

pytestmark = pytest.mark.e2e

Cli = Callable[..., Any]
Sql = Callable[..., list[tuple[Any, ...]]]


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, postgres_url: str) -> Path:
    """An initialised home whose catalog is this test's PostgreSQL database, named by
    ``AFFIDAVIT_CATALOG_URL``; other AFFIDAVIT_* variables of the caller are cleared."""
    for var in list(os.environ):
        if var.startswith("AFFIDAVIT_"):
            monkeypatch.delenv(var)
    monkeypatch.setenv("AFFIDAVIT_ACTOR", "tester@example.com")
    monkeypatch.setenv("AFFIDAVIT_CATALOG_URL", postgres_url)
    path = tmp_path / "home"
    initialise(load_settings(home=path))
    return path


@pytest.fixture
def sql(postgres_server: PostgresScratch, postgres_url: str) -> Sql:
    """Run SQL (``%s`` placeholders) on the test's catalog database, behind affidavit's back."""
    database = make_url(postgres_url).database
    assert database is not None

    def run(statement: str, *params: Any) -> list[tuple[Any, ...]]:
        return postgres_server.execute(database, statement, params)

    return run


def _ok(result: Any) -> Any:
    assert result.code == 0, result.err + result.out
    return result


def _json(result: Any) -> Any:
    return json.loads(_ok(result).out)


def _size(sql: Sql) -> int:
    ((count,),) = sql("SELECT count(*) FROM ledger_entries")
    return int(count)


def _codes(report: dict[str, Any]) -> set[str]:
    return {f["code"] for f in report["findings"]}


# -- where the catalog is ---------------------------------------------------------------------


@pytest.fixture
def other_database(postgres_server: PostgresScratch) -> Iterator[tuple[str, Sql]]:
    """A second empty database: its URL, and SQL on it."""
    name = f"test_{uuid.uuid4().hex[:16]}"
    url = postgres_server.create_database(name)
    yield url, lambda statement, *params: postgres_server.execute(name, statement, params)
    postgres_server.drop_database(name)


def test_init_by_flag_environment_or_settings_file(
    cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, other_database: tuple[str, Sql]
) -> None:
    url, sql = other_database
    monkeypatch.delenv("AFFIDAVIT_CATALOG_URL")
    home = tmp_path / "pg-home"
    result = _json(cli("--catalog-url", url, "init", "--json", home_dir=home))
    assert result["catalog"] == url and result["schema"] == SCHEMA_HEAD
    assert not (home / "catalog.sqlite").exists()  # the catalog is the server's
    assert sql("SELECT version_num FROM alembic_version") == [(SCHEMA_HEAD,)]
    actions = [a for (a,) in sql("SELECT action FROM ledger_entries ORDER BY seq")]
    assert actions == ["ledger.key_created", "catalog.initialized"]
    report = _json(cli("--catalog-url", url, "ledger", "verify", "--json", home_dir=home))
    assert report["ok"] and report["size"] == 2
    # without the URL the home's default (SQLite) is meant, and there is none
    missing = cli("ledger", "verify", home_dir=home)
    assert missing.code == 2 and "no catalog at sqlite" in missing.err
    # the environment names it as well; init again migrates and records nothing
    monkeypatch.setenv("AFFIDAVIT_CATALOG_URL", url)
    _ok(cli("init", home_dir=home))
    assert _size(sql) == 2
    _ok(cli("vault", "add", "v1", "--url", (tmp_path / "v1").as_uri(), home_dir=home))
    # and so does the settings file
    monkeypatch.delenv("AFFIDAVIT_CATALOG_URL")
    config = home / "affidavit.toml"
    config.write_text(
        config.read_text(encoding="utf-8").replace(
            "[affidavit]\n", f'[affidavit]\ncatalog_url = "{url}"\n', 1
        ),
        encoding="utf-8",
    )
    vaults = _json(cli("vault", "list", "--json", home_dir=home))
    assert [v["name"] for v in (vaults["vaults"] if isinstance(vaults, dict) else vaults)] == ["v1"]
    assert _size(sql) == 3


# -- the story --------------------------------------------------------------------------------


def test_backup_verify_evidence_and_policy_on_a_postgresql_catalog(
    cli: Cli, home: Path, fresh_redis: RedisScratch, tmp_path: Path, sql: Sql
) -> None:
    with engine_for_uri(
        EngineName.REDIS, ConnectionUri.parse(EngineName.REDIS, fresh_redis.uri),
        password=None, timeout=5,
    ) as engine:  # fmt: skip
        seeded = dict(engine.seed_sample(seed=3, scale=5))
    _ok(cli("source", "add", "cache", "--engine", "redis", "--uri", fresh_redis.uri,
            "--classification", "internal", "--region", "eu-west-1"))  # fmt: skip
    _ok(cli("vault", "add", "v1", "--url", (tmp_path / "vault").as_uri(),
            "--region", "eu-central-1"))  # fmt: skip
    _ok(cli("inventory"))

    run = _json(cli("backup", "run", "cache", "--json"))
    bid = run["backup_id"]
    assert {d["name"]: d["records"] for d in run["datasets"]} == seeded
    for artifact in run["artifacts"]:
        assert (tmp_path / "vault" / artifact["path"]).stat().st_size == artifact["size"]
    shown = _json(cli("backup", "show", bid, "--json"))
    assert shown["status"] == "complete"
    started = datetime.fromisoformat(shown["started_at"])
    assert started.utcoffset() == timedelta(0)
    assert abs(datetime.now(UTC) - started) < timedelta(minutes=5)
    ((status, manifest, wrapped),) = sql(
        "SELECT status, manifest, wrapped_identity FROM backups WHERE id = %s", bid
    )
    assert status == "complete" and isinstance(manifest, bytes) and isinstance(wrapped, bytes)

    verified = _json(cli("verify", bid, "--json"))
    assert verified["ok"] is True, verified
    ledger = _json(cli("ledger", "verify", "--json"))
    assert ledger["ok"] and ledger["findings"] == []

    check = cli("policy", "check", "--json")
    assert check.code in (0, 1), check.err
    results = json.loads(check.out)
    assert results["results"]
    ((runs,),) = sql("SELECT count(*) FROM check_runs")
    assert runs == 1
    ((findings,),) = sql("SELECT count(*) FROM findings")
    assert findings == len(results["findings"]) > 0  # nothing approved: failures recorded
    out = tmp_path / "evidence.tar.gz"
    today = datetime.now(UTC).date()
    built = _json(cli("evidence", "build", "--from", str(today - timedelta(days=1)),
                      "--to", str(today + timedelta(days=1)), "--out", str(out), "--json"))  # fmt: skip
    assert out.is_file() and built["backups"] >= 1 and built["verifications"] >= 1
    vkey = cli("ledger", "key").out.strip()
    report = _json(cli("evidence", "verify", str(out), "--public-key", vkey, "--json"))
    assert report["ok"] is True and report["findings"] == []

    ledger = _json(cli("ledger", "verify", "--json"))
    assert ledger["ok"] and ledger["size"] == _size(sql)


# -- attacks made with SQL --------------------------------------------------------------------


@pytest.fixture
def busy(cli: Cli, home: Path) -> Path:
    """The ``home`` ledger with six more events (vaults added), each in its own change."""
    for i in range(6):
        _ok(cli("vault", "add", f"v{i}", "--url", (home.parent / f"v{i}").as_uri()))
    return home


def test_an_entry_rewritten_with_sql_is_reported(busy: Path, cli: Cli, sql: Sql) -> None:
    ((entry,),) = sql("SELECT entry FROM ledger_entries WHERE seq = 4")
    event = Event.from_canonical(bytes(entry))
    forged = bytes(entry).replace(b'"vault:v2"', b'"vault:vX"')
    assert forged != bytes(entry) and event.subject == "vault:v2"
    sql("UPDATE ledger_entries SET entry = %s WHERE seq = 4", forged)
    result = cli("ledger", "verify", "--json")
    report = json.loads(result.out)
    assert result.code == 1 and not report["ok"]
    assert {"stored-leaf-mismatch", "root-mismatch"} <= _codes(report)
    assert any(f["seq"] == 4 for f in report["findings"] if f["code"] == "stored-leaf-mismatch")
    # the query copy of the subject still says v2: a rewritten column is named as well
    sql("UPDATE ledger_entries SET subject = 'vault:vY' WHERE seq = 5")
    report = json.loads(cli("ledger", "verify", "--json").out)
    assert "column-mismatch" in _codes(report)


def test_a_deleted_row_is_a_gap(busy: Path, cli: Cli, sql: Sql) -> None:
    sql("DELETE FROM ledger_entries WHERE seq = 3")
    result = cli("ledger", "verify", "--json")
    assert result.code == 1
    gap = next(f for f in json.loads(result.out)["findings"] if f["code"] == "seq-gap")
    assert gap["seq"] == 3


def _append_well_formed(sql: Sql, action: str, details: dict[str, Any]) -> int:
    """Append an event exactly as LedgerLog would (leaf and subtree hashes right), without
    the key: what an attacker who can write the database but not sign can do."""
    stack: list[bytes] = []
    rows = sql("SELECT leaf_hash FROM ledger_entries ORDER BY seq")
    for count, (leaf,) in enumerate(rows):
        digest, carry = bytes(leaf), count
        while carry & 1:
            digest = merkle.node_hash(stack.pop(), digest)
            carry >>= 1
        stack.append(digest)
    seq = len(rows)
    time = "2026-12-01T00:00:00.000000Z"
    entry = Event(seq=seq, time=time, actor="mallory@example.com", action=action,
                  subject="policy:v99", details=details).canonical()  # fmt: skip
    leaf = merkle.leaf_hash(entry)
    closed, digest, carry = bytearray(), leaf, seq
    while carry & 1:
        digest = merkle.node_hash(stack.pop(), digest)
        carry >>= 1
        closed += digest
    sql(
        "INSERT INTO ledger_entries (seq, time, actor, action, subject, entry, leaf_hash, nodes)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
        seq, time, "mallory@example.com", action, "policy:v99", entry, leaf, bytes(closed),
    )  # fmt: skip
    return seq


def test_a_forged_append_with_the_checkpoints_deleted_is_never_signed(
    busy: Path, cli: Cli, sql: Sql, tmp_path: Path
) -> None:
    _append_well_formed(sql, "policy.approved", {"version": 99, "sha256": "0" * 64})
    sql("DELETE FROM ledger_checkpoints")
    before = _size(sql), sql("SELECT count(*) FROM vaults")
    result = cli("vault", "add", "late", "--url", (tmp_path / "late").as_uri())
    assert result.code == 3, result.err
    assert "refusing to sign" in result.err and "Traceback" not in result.err
    assert (_size(sql), sql("SELECT count(*) FROM vaults")) == before
    report = json.loads(cli("ledger", "verify", "--json").out)
    assert not report["ok"] and "unsigned-entries" in _codes(report)


def test_a_row_holding_a_value_affidavit_never_writes_is_named(
    busy: Path, cli: Cli, sql: Sql
) -> None:
    ((vault_id,),) = sql("SELECT id FROM vaults WHERE name = 'v3'")
    sql("UPDATE vaults SET kind = 'tape' WHERE name = 'v3'")
    result = cli("vault", "list")
    assert result.code == 3 and "Traceback" not in result.err
    assert f"damaged catalog row: vaults row {vault_id}, column kind holds 'tape'" in result.err
