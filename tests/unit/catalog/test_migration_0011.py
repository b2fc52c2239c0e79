"""Migration 0011 (governed exports): a catalog at 0010 upgrades to the three export tables
without touching what it held, the tables work, and down again they go."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from pathlib import Path

from tests.unit.catalog.test_migrations import _downgrade, _home_with_events

from affidavit.catalog.exports import WrappedKey
from affidavit.models.export import Recipient
from affidavit.services.context import App
from affidavit.services.setup import initialise

_TABLES = {"export_recipients", "export_specs", "export_runs"}


def _tables(path: Path) -> set[str]:
    with sqlite3.connect(path) as db:
        return {r[0] for r in db.execute("select name from sqlite_master where type='table'")}


def test_0011_adds_the_export_tables_and_removes_them_again(tmp_path: Path) -> None:
    settings, path = _home_with_events(tmp_path, 3)
    _downgrade(path, "0010")
    assert not (_tables(path) & _TABLES)
    result = initialise(settings)
    assert result.schema_before == "0010"
    assert _tables(path) >= _TABLES
    app = App(settings)
    try:
        with app.change() as change:
            change.uow.exports.add_recipient(
                Recipient(
                    name="acme",
                    organisation="Acme",
                    contact="dpo@acme.test",
                    public_key="age1example",
                    dpa=None,
                    added_by="t@example.com",
                    added_at=datetime.now(UTC),
                    challenge_sha256="0" * 64,
                ),
                WrappedKey(kek_id="file:default", kek_version=1, ciphertext=b"wrapped"),
            )
            change.record("recipient.added", "recipient:acme", {})
        with app.read() as uow:
            assert [r.name for r in uow.exports.recipients()] == ["acme"]
            assert uow.exports.pseudonym_key("acme").ciphertext == b"wrapped"
    finally:
        app.close()
    with sqlite3.connect(path) as db:  # what was there before is still there
        kept = db.execute("select count(*) from ledger_entries where action = 'test.event'")
        assert kept.fetchone()[0] == 3
    _downgrade(path, "0010")
    assert not (_tables(path) & _TABLES)
