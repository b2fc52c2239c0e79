"""The migration chain: a catalog written at an older revision upgrades in place, keeps its
rows and ledger, and records the upgrade."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from alembic import command
from alembic.config import Config

from affidavit.catalog.store import MIGRATIONS_DIR, Catalog
from affidavit.config import Settings, load_settings
from affidavit.errors import IntegrityError
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


def _home_with_events(tmp_path: Path, events: int) -> tuple[Settings, Path]:
    """A new home whose ledger holds ``events`` test events, one change each (with the
    ledger's own setup events before them); returns its settings and catalog path."""
    from affidavit.services.context import App

    home = tmp_path / "h"
    settings = load_settings(home=home, environ={"AFFIDAVIT_ACTOR": "t@example.com"})
    initialise(settings)
    app = App(settings)
    for i in range(events):
        with app.change() as change:
            change.record("test.event", f"s:{i}", {"i": i})
    app.close()
    return settings, home / "catalog.sqlite"


def _downgrade(path: Path, revision: str) -> None:
    """Take the catalog at ``path`` down to ``revision`` (building an old catalog on purpose)."""
    catalog = Catalog(f"sqlite:///{path}")
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    with catalog._engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, revision)
    catalog.close()


def _ledger_rows(path: Path) -> tuple[list[tuple[int, bytes, bytes]], list[tuple[int, str]]]:
    with sqlite3.connect(path) as db:
        entries = db.execute("select seq, leaf_hash, nodes from ledger_entries order by seq")
        checkpoints = db.execute("select size, note from ledger_checkpoints order by size")
        return list(entries), list(checkpoints)


def test_0005_moves_subtree_hashes_into_entry_rows_and_back(tmp_path: Path) -> None:
    """A ledger written by 0005 goes down to 0004's node table and up again unchanged, and
    after the upgrade every proof still leads to the signed root."""
    from affidavit.ledger import merkle
    from affidavit.services import ledger as svc
    from affidavit.services.context import App

    settings, path = _home_with_events(tmp_path, 37)
    before = _ledger_rows(path)

    _downgrade(path, "0004")
    with sqlite3.connect(path) as db:
        nodes = {
            (level, index): bytes(h)
            for level, index, h in db.execute('select level, "index", hash from ledger_nodes')
        }
    leaves = [leaf for _, leaf, _ in before[0]]
    size = len(leaves)
    # every complete subtree of the tree, and nothing else, is in the old table
    expected = {
        (level, index) for level in range(size.bit_length()) for index in range(size >> level)
    }
    assert set(nodes) == expected
    for level, index in expected:
        lo = index << level
        assert nodes[(level, index)] == merkle.root(leaves[lo : lo + (1 << level)])

    initialise(settings)  # upgrades 0004 -> head (and records catalog.upgraded)
    after_entries, after_checkpoints = _ledger_rows(path)
    assert after_entries[:size] == before[0]
    assert after_checkpoints[: len(before[1])] == before[1]
    size = len(after_entries)
    app = App(settings)
    try:
        assert svc.verify_catalog(app).ok
        for seq in range(size):
            assert svc.inclusion_proof(app, seq).seq == seq  # verified against the root
    finally:
        app.close()


def test_0005_keeps_a_gap_in_the_old_node_table_visible(tmp_path: Path) -> None:
    """An altered 0004 catalog (a subtree hash deleted) stays detectably altered."""
    from affidavit.services import ledger as svc
    from affidavit.services.context import App

    settings, path = _home_with_events(tmp_path, 8)
    _downgrade(path, "0004")
    with sqlite3.connect(path) as db:  # the subtree 4..7 (stored at leaf 7, level 2) goes
        db.execute('delete from ledger_nodes where level = 2 and "index" = 1')
    # the layout is upgraded, then affidavit refuses to append to the altered ledger
    with pytest.raises(IntegrityError, match="lacks subtree hash"):
        initialise(settings)
    with sqlite3.connect(path) as db:
        (nodes,) = db.execute("select nodes from ledger_entries where seq = 7").fetchone()
    assert len(nodes) == 32  # level 1 kept; level 2 missing ends the list (3 is dropped)
    app = App(settings)
    try:
        report = svc.verify_catalog(app)
        assert not report.ok
        assert {f.code.value for f in report.findings} == {"stored-nodes-mismatch"}
    finally:
        app.close()


def test_the_schema_head_constant_is_alembics_head(tmp_path: Path) -> None:
    """check_schema trusts SCHEMA_HEAD to skip alembic: it must be the newest migration."""
    from affidavit.catalog.store import SCHEMA_HEAD, _script

    assert _script().get_current_head() == SCHEMA_HEAD
    catalog = Catalog(f"sqlite:///{tmp_path / 'c.sqlite'}")
    catalog.upgrade()
    catalog.check_schema()
    with sqlite3.connect(tmp_path / "c.sqlite") as db:  # an older catalog takes alembic's way
        db.execute("UPDATE alembic_version SET version_num = '0004'")
    with pytest.raises(Exception, match=f"needs {SCHEMA_HEAD}"):
        catalog.check_schema()
    with sqlite3.connect(tmp_path / "c.sqlite") as db:
        db.execute("UPDATE alembic_version SET version_num = '9999'")
    with pytest.raises(Exception, match="newer than this affidavit knows"):
        catalog.check_schema()
    catalog.close()


def test_0006_adds_the_lease_table_and_a_run_from_before_it_is_judged_by_its_age(
    tmp_path: Path,
) -> None:
    """A catalog at 0005 with a backup left ``running`` upgrades to the lease table; that run
    has no lease, so the next reclaim records it abandoned (it started long ago). Down again,
    the table goes."""
    from affidavit.services import leases
    from affidavit.services.context import App

    settings, path = _home_with_events(tmp_path, 0)
    _downgrade(path, "0005")
    with sqlite3.connect(path) as db:
        tables = {r[0] for r in db.execute("select name from sqlite_master where type='table'")}
        assert "backup_leases" not in tables
        db.execute(
            "insert into backups (id, source, vault, kind, format, status, started_at, "
            "retain_until) values ('bk-old', 'cache', 'v1', 'run', 'rdb', 'running', "
            "'2026-01-01 00:00:00', '2099-01-01 00:00:00')"
        )
    result = initialise(settings)
    assert result.schema_before == "0005"  # and up to head (0006 and every later one)
    app = App(settings)
    try:
        with app.change() as change:  # its start, as the ledger recorded it before 0006
            change.record("backup.started", "backup:bk-old", {"source": "cache", "vault": "v1"})
        (abandoned,) = leases.reclaim_abandoned(app)
        assert abandoned.backup_id == "bk-old"
        assert abandoned.why.startswith("it has no lease (recorded before leases existed)")
        with app.read() as uow:
            assert uow.backups.lease("bk-old") is None
            assert uow.backups.status("bk-old").value == "failed"
    finally:
        app.close()
    _downgrade(path, "0005")
    with sqlite3.connect(path) as db:
        tables = {r[0] for r in db.execute("select name from sqlite_master where type='table'")}
    assert "backup_leases" not in tables
