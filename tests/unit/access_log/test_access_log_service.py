"""The access log on a real SQLite catalog: recording (never into the ledger), listing,
verification, retention and export; migration 0008 up and down; and the same story on a real
PostgreSQL catalog."""

from __future__ import annotations

import json
import os
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from alembic import command
from alembic.config import Config

from affidavit.catalog.store import MIGRATIONS_DIR, Catalog
from affidavit.config import load_settings
from affidavit.errors import FormatError, InputError
from affidavit.ledger.checkpoint import open_checkpoint
from affidavit.models.access import AccessEntry, Outcome
from affidavit.models.identity import AccountKind, AuthMethod, Principal
from affidavit.models.ledger import ClientInfo, Event
from affidavit.services import access_log as svc
from affidavit.services import ledger as ledger_svc
from affidavit.services.context import App, open_app
from affidavit.services.setup import initialise

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def request(n: int, *, at: datetime = T0, who: str = "alice", **changes: object) -> AccessEntry:
    """The entry of request ``n`` made at ``at + n seconds``."""
    values: dict[str, object] = {
        "started": at + timedelta(seconds=n),
        "identity": who,
        "auth_method": "session",
        "method": "GET",
        "route": "/api/v1/backups/{backup_id}",
        "outcome": Outcome.ALLOWED,
        "client_ip": "192.0.2.10",
        "user_agent": "affidavit-cli/0.1.0",
        "subject": f"backup:bk-{n}",
        "status": 200,
        "latency_us": 900 + n,
    }
    values.update(changes)
    return svc.request_entry(**values)  # type: ignore[arg-type]


def ledger_size(app: App) -> int:
    with app.read() as uow:
        return uow.ledger.size()


def test_record_appends_signs_and_never_touches_the_ledger(app: App) -> None:
    before = ledger_size(app)
    first = svc.record(app, [request(0), request(1, outcome=Outcome.DENIED, status=403)])
    assert [e.seq for e in first.entries] == [0, 1]
    batch = svc.record(app, [request(n) for n in range(2, 12)])
    assert [e.seq for e in batch.entries] == list(range(2, 12))
    assert batch.size == 12
    assert ledger_size(app) == before  # recording an access is no change of state
    with app.read() as uow:
        notes = uow.access_log.checkpoints()
    assert [size for size, _ in notes] == [2, 12]  # one signed checkpoint per batch
    identity = app.ledger_identity()
    assert identity is not None
    checkpoint = open_checkpoint(notes[-1][1], identity.verifier)
    assert checkpoint.origin == identity.origin + "/access-log"
    assert checkpoint.root == batch.root
    report = svc.verify(app)
    assert report.ok, report.findings
    assert (report.size, report.expired, report.root) == (12, 0, batch.root)
    assert ledger_svc.verify_catalog(app).ok


def test_an_empty_access_log_verifies_and_an_empty_batch_records_nothing(app: App) -> None:
    assert svc.record(app, []).entries == ()
    report = svc.verify(app)
    assert report.ok
    assert report.size == 0
    assert report.checkpoint is None


def test_a_new_process_goes_on_from_the_catalog_and_from_a_lost_memory(
    app: App, settings: object, home: Path
) -> None:
    svc.record(app, [request(0)])
    with open_app(settings) as other:  # type: ignore[arg-type]
        svc.record(other, [request(1)])  # reads the stored frontier: not resumed
    svc.record(app, [request(2)])  # this App's resume state is stale: re-read
    (home / "keys" / svc.SIGNED_FILENAME).unlink()  # e.g. a home restored without it
    with open_app(settings) as other:  # type: ignore[arg-type]
        svc.record(other, [request(3)])
    assert (home / "keys" / svc.SIGNED_FILENAME).exists()
    assert svc.verify(app).ok
    assert svc.verify(app).size == 4


def test_show_filters_by_time_identity_and_limit(app: App) -> None:
    svc.record(app, [request(n, who="alice" if n % 2 else "bob") for n in range(6)])
    every = svc.show(app)
    assert [s.seq for s in every] == list(range(6))
    assert every[0].entry is not None
    assert every[0].entry.device.type.value == "client"
    bobs = svc.show(app, identity="bob")
    assert [s.seq for s in bobs] == [0, 2, 4]
    window = svc.show(app, since="2026-12-01T12:00:02Z", until="2026-12-01T12:00:04Z")
    assert [s.seq for s in window] == [2, 3]
    assert [s.seq for s in svc.show(app, limit=2)] == [4, 5]  # the newest, in order
    assert [s.seq for s in svc.show(app, since="2026-12-01")] == list(range(6))
    with pytest.raises(InputError, match="--since"):
        svc.show(app, since="yesterday")
    with pytest.raises(InputError, match="UTC offset"):
        svc.show(app, until="2026-12-01T12:00:00")


def test_record_read_logs_reads_now_or_with_the_request(app: App) -> None:
    principal = Principal(
        name="carol", kind=AccountKind.HUMAN, method=AuthMethod.PASSWORD_TOTP, account_id="a1"
    )
    now = svc.record_read(app, principal, "evidence:pkg-1", "/api/v1/evidence/{package_id}",
                          client=ClientInfo(address="203.0.113.5", agent="curl/8.1"))  # fmt: skip
    assert now.seq == 0
    batch: list[AccessEntry] = []
    added = svc.record_read(app, None, "ledger-proof:4", "ledger proof", batch=batch)
    assert batch == [added]
    assert added.seq is None  # recorded with the request's own entry
    assert added.identity == app.actor
    assert added.auth_method == "local-os-user"
    svc.record(app, [request(0), *batch])
    shown = [s.entry for s in svc.show(app)]
    assert [(e.identity, e.subject, e.method) for e in shown if e is not None] == [
        ("carol", "evidence:pkg-1", "READ"),
        ("alice", "backup:bk-0", "GET"),
        (app.actor, "ledger-proof:4", "READ"),
    ]


def test_expiry_drops_payloads_keeps_leaves_and_is_ledgered(app: App) -> None:
    old = T0 - timedelta(days=500)
    svc.record(app, [request(n, at=old) for n in range(5)])
    svc.record(app, [request(n, at=T0) for n in range(5, 8)])
    root = svc.verify(app).root
    ledger_before = ledger_size(app)
    result = svc.expire(app, now=T0 + timedelta(days=1))  # default: 400 days
    assert (result.count, result.first, result.last) == (5, 0, 4)
    assert result.ledger_seq == ledger_before
    report = svc.verify(app)
    assert report.ok, report.findings
    assert (report.expired, report.root) == (5, root)
    shown = svc.show(app)
    assert [s.entry is None for s in shown] == [True] * 5 + [False] * 3
    assert shown[0].to_json()["expired_at"] is not None
    with app.read() as uow:
        (event,) = uow.ledger.find(action="access_log.expired")
        rows = {r.seq: r for r in uow.access_log.rows()}
    details = Event.from_canonical(event.entry).details
    assert details["from_seq"] == 0
    assert details["to_seq"] == 4
    assert details["count"] == 5
    assert details["retention_days"] == 400
    assert rows[0].identity is None
    assert rows[0].subject is None
    assert rows[0].leaf_hash is not None
    assert rows[5].identity == "alice"
    again = svc.expire(app, now=T0 + timedelta(days=1))
    assert again.count == 0
    assert ledger_size(app) == ledger_before + 1  # nothing expired: nothing recorded
    svc.record(app, [request(9)])  # appending goes on over the expired prefix
    assert svc.verify(app).ok
    assert ledger_svc.verify_catalog(app).ok


def test_expiry_stops_at_the_first_entry_inside_the_period(app: App) -> None:
    svc.record(app, [request(0, at=T0 - timedelta(days=30)), request(1, at=T0),
                     request(2, at=T0 - timedelta(days=30))])  # fmt: skip
    result = svc.expire(app, older_than=timedelta(days=7), now=T0)
    assert (result.count, result.first, result.last) == (1, 0, 0)  # a prefix, never early
    assert svc.verify(app).ok
    with pytest.raises(InputError):
        svc.expire(app, older_than=timedelta(0))


def test_the_retention_period_is_a_setting(tmp_path: Path) -> None:
    assert load_settings(home=tmp_path, environ={}).access_log_retention_days == 400
    settings = load_settings(home=tmp_path, environ={"AFFIDAVIT_ACCESS_LOG_RETENTION_DAYS": "30"})
    assert settings.access_log_retention_days == 30


def test_export_is_verified_offline_and_recorded(app: App, tmp_path: Path) -> None:
    svc.record(app, [request(n, at=T0 - timedelta(days=500)) for n in range(3)])
    svc.record(app, [request(n) for n in range(3, 9)])
    svc.expire(app, now=T0)
    out = tmp_path / "access.jsonl"
    result = svc.export(app, out)
    assert (result.entries, result.expired, result.checkpoints) == (9, 3, 2)
    lines = [json.loads(line) for line in out.read_text("utf-8").splitlines()]
    assert lines[0]["format"] == "affidavit-access-log-export"
    assert lines[0]["origin"].endswith("/access-log")
    assert [line["type"] for line in lines[1:]] == ["checkpoint"] * 2 + ["entry"] * 9
    assert "entry" not in lines[3]
    assert lines[3]["expired_at"]
    assert "entry" in lines[-1]
    vkey = ledger_svc.ledger_vkey(app.settings)
    report = svc.verify_file(out, vkey=vkey)
    assert report.ok, report.findings
    assert (report.size, report.expired) == (9, 3)
    with app.read() as uow:
        (event,) = uow.ledger.find(action="access_log.exported")
    assert Event.from_canonical(event.entry).details["sha256"] == result.sha256
    with pytest.raises(InputError, match="already exists"):
        svc.export(app, out)
    with pytest.raises(InputError, match="verifier key"):
        svc.verify_file(out, vkey=None)
    ledger_export = tmp_path / "ledger.jsonl"
    ledger_svc.export_ledger(app, ledger_export)
    with pytest.raises(FormatError, match="header"):  # a ledger export is not an access log
        svc.verify_file(ledger_export, vkey=vkey)


def _migrate(path: Path, revision: str, *, down: bool) -> None:
    catalog = Catalog(f"sqlite:///{path}")
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    try:
        with catalog._engine.begin() as conn:  # an old catalog, on purpose
            cfg.attributes["connection"] = conn
            (command.downgrade if down else command.upgrade)(cfg, revision)
    finally:
        catalog.close()


def _tables(path: Path) -> set[str]:
    with sqlite3.connect(path) as db:
        return {r[0] for r in db.execute("select name from sqlite_master where type='table'")}


def test_0008_adds_the_access_log_tables_and_takes_them_away(tmp_path: Path) -> None:
    home = tmp_path / "h"
    settings = load_settings(home=home, environ={"AFFIDAVIT_ACTOR": "t@example.com"})
    initialise(settings)
    path = home / "catalog.sqlite"
    tables = {"access_log_entries", "access_log_checkpoints"}
    assert tables <= _tables(path)
    _migrate(path, "0007", down=True)
    assert not tables & _tables(path)
    result = initialise(settings)  # upgrades 0007 -> head and records it
    assert result.schema_before == "0007"
    assert tables <= _tables(path)
    with open_app(settings) as app:
        svc.record(app, [request(0), request(1)])
        assert svc.verify(app).ok
        assert ledger_svc.verify_catalog(app).ok


@pytest.mark.integration
def test_the_access_log_on_postgresql(
    tmp_path: Path, postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for var in list(os.environ):
        if var.startswith("AFFIDAVIT_"):
            monkeypatch.delenv(var)
    settings = load_settings(
        home=tmp_path / "h",
        environ={"AFFIDAVIT_ACTOR": "t@example.com", "AFFIDAVIT_CATALOG_URL": postgres_url},
    )
    initialise(settings)
    with open_app(settings) as app:
        before = ledger_size(app)
        svc.record(app, [request(n, at=T0 - timedelta(days=500)) for n in range(4)])
        svc.record(app, [request(n, who="bob") for n in range(4, 7)])
        svc.record(app, [request(7)])
        assert ledger_size(app) == before
        assert [s.seq for s in svc.show(app, identity="bob")] == [4, 5, 6]
        assert svc.verify(app).ok
        assert svc.expire(app, now=T0).count == 4
        report = svc.verify(app)
        assert report.ok, report.findings
        assert report.expired == 4
        out = tmp_path / "a.jsonl"
        svc.export(app, out)
        assert svc.verify_file(out, vkey=ledger_svc.ledger_vkey(settings)).ok
        with app.catalog.unit_of_work() as uow:  # an edited payload is caught there too
            cur = uow._tx.dbapi().cursor()
            cur.execute(
                "UPDATE access_log_entries SET entry = convert_to(replace("
                "convert_from(entry, 'UTF8'), 'bob', 'eve'), 'UTF8') WHERE seq = 5"
            )
        codes = {f.code.value for f in svc.verify(app).findings}
        assert "stored-leaf-mismatch" in codes
        assert ledger_svc.verify_catalog(app).ok
