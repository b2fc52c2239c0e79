"""The migration chain: a catalog written at an older revision upgrades in place, keeps its
rows and ledger, and records the upgrade."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from alembic import command
from alembic.config import Config

from affidavit.catalog.store import MIGRATIONS_DIR, Catalog
from affidavit.config import load_settings
from affidavit.services.setup import initialise


def test_upgrade_from_the_first_revision_keeps_everything(tmp_path: Path) -> None:
    home = tmp_path / "h"
    home.mkdir()
    url = f"sqlite:///{home / 'catalog.sqlite'}"
    catalog = Catalog(url)
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    with catalog._engine.begin() as conn:  # building an old catalog on purpose
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0001")
    catalog.close()
    with sqlite3.connect(home / "catalog.sqlite") as db:
        db.execute(
            "insert into sources (name, engine, uri, classification, created_at) "
            "values ('old', 'redis', 'redis://h/0', 'internal', '2026-01-01 00:00:00')"
        )
    result = initialise(load_settings(home=home, environ={}))
    assert result.schema_before == "0001"
    assert result.schema_after == Catalog(url).schema_state()[1]  # head
    assert result.changed
    with sqlite3.connect(home / "catalog.sqlite") as db:
        assert db.execute("select name from sources").fetchall() == [("old",)]
        tables = {r[0] for r in db.execute("select name from sqlite_master where type='table'")}
        assert {"backups", "backup_artifacts", "backup_datasets", "holds"} <= tables
        actions = [r[0] for r in db.execute("select action from ledger_entries order by seq")]
    assert "catalog.upgraded" in actions
    again = initialise(load_settings(home=home, environ={}))
    assert not again.changed


def test_the_migrations_build_exactly_the_schema_the_models_declare(tmp_path: Path) -> None:
    """alembic's autogenerate comparison finds nothing to add, drop or alter."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from affidavit.catalog.schema import Base

    home = tmp_path / "h"
    initialise(load_settings(home=home, environ={}))
    catalog = Catalog(f"sqlite:///{home / 'catalog.sqlite'}")
    try:
        with catalog._engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            diff = compare_metadata(context, Base.metadata)
    finally:
        catalog.close()
    assert diff == []
