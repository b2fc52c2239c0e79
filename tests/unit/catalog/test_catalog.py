"""Catalog: idempotent init, schema version guard, units of work that commit all or nothing."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest

from affidavit.catalog.store import Catalog
from affidavit.config import Settings, load_settings
from affidavit.constants import Classification, EngineName
from affidavit.errors import AlreadyExists, CatalogVersionError, InputError
from affidavit.models.inventory import Source, SourceName
from affidavit.services.context import App
from affidavit.services.setup import initialise


def source(name: str = "s1") -> Source:
    return Source(
        name=SourceName(name),
        engine=EngineName.REDIS,
        uri="redis://127.0.0.1:6379/0",
        secret=None,
        classification=Classification.INTERNAL,
        region=None,
        owner=None,
        created_at=datetime.now(UTC),
    )


def test_init_is_idempotent_and_records_one_event(tmp_path: Path) -> None:
    settings = load_settings(home=tmp_path / "h", environ={})
    first = initialise(settings)
    second = initialise(settings)
    assert first.schema_before is None and first.changed
    assert not second.changed and second.schema_before == second.schema_after
    with sqlite3.connect(tmp_path / "h" / "catalog.sqlite") as db:
        actions = [r[0] for r in db.execute("select action from ledger_entries order by seq")]
        assert actions.count("catalog.initialized") == 1
        assert db.execute("pragma journal_mode").fetchone()[0] == "wal"
    assert (tmp_path / "h").stat().st_mode & 0o777 == 0o700


def test_catalog_from_a_newer_schema_is_refused(settings: Settings) -> None:
    db = settings.home / "catalog.sqlite"
    with sqlite3.connect(db) as conn:
        conn.execute("update alembic_version set version_num = '9999_future'")
    before = db.read_bytes()
    for action in (
        Catalog(settings.effective_catalog_url).check_schema,
        lambda: initialise(settings),
    ):
        with pytest.raises(CatalogVersionError) as caught:
            action()
        assert "newer" in caught.value.message
    assert db.read_bytes() == before


def test_a_foreign_sqlite_file_is_not_taken_for_a_catalog(tmp_path: Path) -> None:
    db = tmp_path / "other.sqlite"
    with sqlite3.connect(db) as conn:
        conn.execute("create table t (x)")
    with pytest.raises(CatalogVersionError, match="not an affidavit catalog"):
        Catalog(f"sqlite:///{db}").check_schema()


def test_missing_catalog_says_run_init(tmp_path: Path) -> None:
    tmp_path.joinpath("h").mkdir()
    with pytest.raises(InputError) as caught:
        Catalog(f"sqlite:///{tmp_path / 'h' / 'catalog.sqlite'}").check_schema()
    assert "affidavit init" in caught.value.hint


def test_unit_of_work_rolls_back_change_and_event_together(app: App) -> None:
    with app.read() as uow:
        size_before = uow.ledger.size()
    with pytest.raises(RuntimeError), app.change() as change:
        change.uow.sources.add(source())
        change.record("source.added", "source:s1")
        raise RuntimeError("crash after the write, before commit")
    with app.read() as uow:
        assert uow.sources.list() == []
        assert uow.ledger.size() == size_before


def test_duplicate_name_fails_without_a_partial_write(app: App) -> None:
    with app.change() as change:
        change.uow.sources.add(source())
        change.record("source.added", "source:s1")
    with app.read() as uow:
        size = uow.ledger.size()
    with pytest.raises(AlreadyExists), app.change() as change:
        change.record("source.added", "source:s1")  # event first, then the failing change
        change.uow.sources.add(source())
    with app.read() as uow:
        assert uow.ledger.size() == size
        assert len(uow.sources.list()) == 1
