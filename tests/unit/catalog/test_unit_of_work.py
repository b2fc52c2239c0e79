"""The unit of work runs ledger-only changes without an ORM session, joins a session to the
same transaction when a repository needs one (in either order), and an App resumes its
ledger from memory only while the catalog still holds exactly what it committed."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from affidavit.catalog import store
from affidavit.catalog.repository import LedgerRepository
from affidavit.catalog.store import Catalog, UnitOfWork
from affidavit.constants import Classification, EngineName
from affidavit.errors import CatalogError, SigningRefused
from affidavit.ledger import merkle
from affidavit.ledger.log import LedgerLog
from affidavit.models.inventory import Source, SourceName
from affidavit.services import ledger as ledger_svc
from affidavit.services.context import App


def _source(name: str) -> Source:
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


def _no_session(*_args: Any, **_kwargs: Any) -> Any:
    raise AssertionError("an ORM session was created")


def _state(app: App) -> tuple[int, list[str], int]:
    with app.read() as uow:
        return (
            uow.ledger.size(),
            [s.name for s in uow.sources.list()],
            len(uow.ledger.checkpoints()),
        )


def test_a_ledger_only_change_needs_no_orm_session(
    app: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    size, _, checkpoints = _state(app)
    monkeypatch.setattr(app.catalog, "_sessions", _no_session)
    for i in range(3):
        with app.change() as change:
            change.record("test.raw", f"s:{i}", {"i": i})
    with app.read() as uow:  # the ledger's reads need none either
        assert uow.ledger.size() == size + 3
        assert len(uow.ledger.checkpoints()) == checkpoints + 3
        assert [e.seq for e in uow.ledger.find(action="test.raw")] == [size, size + 1, size + 2]
    monkeypatch.undo()
    assert ledger_svc.verify_catalog(app).ok


@pytest.mark.parametrize("event_first", [True, False])
def test_orm_change_and_event_commit_together_in_either_order(app: App, event_first: bool) -> None:
    size, names, checkpoints = _state(app)
    with app.change() as change:
        if event_first:
            change.record("source.added", "source:s1")
        change.uow.sources.add(_source("s1"))
        if not event_first:
            change.record("source.added", "source:s1")
    assert _state(app) == (size + 1, [*names, "s1"], checkpoints + 1)
    assert ledger_svc.verify_catalog(app).ok


@pytest.mark.parametrize("event_first", [True, False])
def test_orm_change_and_event_roll_back_together_in_either_order(
    app: App, event_first: bool
) -> None:
    before = _state(app)

    class Boom(Exception):
        pass

    with pytest.raises(Boom), app.change() as change:
        if event_first:
            change.record("source.added", "source:s1")
        change.uow.sources.add(_source("s1"))
        if not event_first:
            change.record("source.added", "source:s1")
        raise Boom
    assert _state(app) == before
    with app.change() as change:  # the pooled connection is usable afterwards
        change.record("test.after", "s")
    assert _state(app)[0] == before[0] + 1


def test_a_driver_error_on_the_raw_connection_is_a_catalog_error(app: App) -> None:
    before = _state(app)
    with pytest.raises(CatalogError) as caught, app.catalog.unit_of_work() as uow:
        uow.ledger.append(
            seq=0, time="t", actor="a", action="x", subject="s", entry=b"{}", leaf_hash=b"0" * 32
        )  # seq 0 exists: the primary key refuses it
    assert "could not write the catalog" in caught.value.message
    assert _state(app) == before


def test_a_busy_catalog_is_reported_with_a_hint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store, "_BUSY_TIMEOUT_MS", 50)
    catalog = Catalog(f"sqlite:///{tmp_path / 'c.sqlite'}")
    catalog.upgrade()
    blocker = sqlite3.connect(tmp_path / "c.sqlite", isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(CatalogError) as caught, catalog.unit_of_work() as uow:
            uow.ledger.size()
        assert caught.value.hint is not None
        assert "another affidavit process" in caught.value.hint
        with catalog.reader() as uow:  # a reader never waits for a writer (WAL snapshot)
            assert uow.ledger.size() == 0
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    with catalog.unit_of_work() as uow:  # the connection went back to the pool usable
        assert uow.ledger.size() == 0
    catalog.close()


def test_a_reader_never_commits(app: App) -> None:
    before = _state(app)
    with app.read() as uow:
        uow.ledger.add_checkpoint(size=0, root=bytes(32), note="n", created_at="t")
        uow.sources.add(_source("s9"))
    assert _state(app) == before


def test_a_unit_of_work_still_wraps_a_session(app: App) -> None:
    size = _state(app)[0]
    session = app.catalog._sessions()
    try:
        uow = UnitOfWork(session)
        assert uow.session is session
        assert uow.ledger.size() == size
        assert uow.sources.list() == []
    finally:
        session.rollback()
        session.close()


def _append_behind_its_back(app: App) -> None:
    # entry and subtree hashes as affidavit writes them, but no checkpoint: not its own
    catalog = Catalog(app.settings.effective_catalog_url)
    try:
        with catalog.unit_of_work() as uow:
            LedgerLog(uow.ledger).append(actor="x", action="forged", subject="s")
    finally:
        catalog.close()


def test_an_app_resumes_only_the_state_it_committed(app: App, tmp_path: Path) -> None:
    with app.change() as change:
        change.record("test.one", "s:1")
    other = App(app.settings)  # another process appending in between
    try:
        with other.change() as change:
            change.record("test.other", "s:2")
            change.record("test.other", "s:3")
        with app.change() as change:  # must read the frontier again, not trust its memory
            change.record("test.one", "s:4")
        with other.change() as change:
            change.record("test.other", "s:5")
    finally:
        other.close()
    with app.change() as change:
        change.record("test.one", "s:6")
    report = ledger_svc.verify_catalog(app)
    assert report.ok, report.findings
    with app.read() as uow:
        leaves = [merkle.leaf_hash(e.entry) for e in uow.ledger.entries()]
        assert LedgerLog(uow.ledger).root() == merkle.root(leaves)


def test_an_app_with_a_remembered_state_still_refuses_foreign_rows(app: App) -> None:
    with app.change() as change:
        change.record("test.one", "s:1")
    size = _state(app)[0]
    _append_behind_its_back(app)
    with pytest.raises(SigningRefused, match="refusing to sign"), app.change() as change:
        change.record("test.one", "s:2")
    assert _state(app)[0] == size + 1


def test_an_app_does_not_resume_over_a_rewritten_checkpoint(app: App) -> None:
    with app.change() as change:
        change.record("test.one", "s:1")
    db = sqlite3.connect(app.settings.home / "catalog.sqlite")
    with db:  # same size, another root: the remembered frontier no longer describes it
        db.execute(
            "UPDATE ledger_checkpoints SET root = ? WHERE size = (SELECT max(size) FROM "
            "ledger_checkpoints)",
            (bytes(32),),
        )
    db.close()
    with app.change() as change:
        assert change.resume is not None
        log = change.log
        assert log._frontier is None  # not resumed: it will read the stored hashes
        change.record("test.one", "s:2")


def test_an_app_resumes_its_own_state_without_reading_subtree_hashes(
    app: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    with app.change() as change:
        change.record("test.one", "s:1")
    reads: list[object] = []
    original = LedgerRepository.get_nodes

    def counting(self: LedgerRepository, keys: Any) -> dict[tuple[int, int], bytes]:
        reads.append(keys)
        return original(self, keys)

    monkeypatch.setattr(LedgerRepository, "get_nodes", counting)
    for i in range(5):
        with app.change() as change:
            change.record("test.one", f"s:{i}")
    assert reads == []
    monkeypatch.undo()
    assert ledger_svc.verify_catalog(app).ok
