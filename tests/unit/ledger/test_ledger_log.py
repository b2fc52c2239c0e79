"""The stored-subtree ledger log agrees with the pure RFC 9162 functions at every size, and a
rolled-back unit of work leaves nothing behind."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select

from affidavit.catalog.schema import CheckpointRow, LedgerEntryRow
from affidavit.catalog.store import Catalog
from affidavit.ledger import merkle
from affidavit.ledger.log import LedgerLog
from affidavit.services.context import App

MAX_SIZE = 40


@pytest.fixture
def catalog(tmp_path: Path) -> Iterator[Catalog]:
    store = Catalog(f"sqlite:///{tmp_path / 'log.sqlite'}")
    store.upgrade()
    yield store
    store.close()


def _leaves(catalog: Catalog) -> list[bytes]:
    with catalog.reader() as uow:
        return [merkle.leaf_hash(e.entry) for e in uow.ledger.entries()]


def _check_against_pure(catalog: Catalog) -> None:
    leaves = _leaves(catalog)
    size = len(leaves)
    with catalog.reader() as uow:
        log = LedgerLog(uow.ledger)
        assert log.size() == size
        for n in range(size + 1):
            assert log.root(n) == merkle.root(leaves[:n]), n
        for index in range(size):
            assert log.inclusion_proof(index) == merkle.inclusion_proof(leaves, index)
            assert log.leaf(index) == leaves[index]
        for old in range(1, size + 1):
            assert log.consistency_proof(old) == merkle.consistency_proof(leaves, old)


def test_log_one_append_per_transaction_matches_pure_functions(catalog: Catalog) -> None:
    for i in range(MAX_SIZE):
        with catalog.unit_of_work() as uow:
            LedgerLog(uow.ledger).append(actor="a", action="test.one", subject=f"s:{i}")
        _check_against_pure(catalog)


@pytest.mark.parametrize("batches", [[1, 2, 3, 5, 7, 11, 11], [40], [16, 1, 15, 8]])
def test_log_batched_appends_match_pure_functions(catalog: Catalog, batches: list[int]) -> None:
    assert sum(batches) == MAX_SIZE
    done = 0
    for batch in batches:
        with catalog.unit_of_work() as uow:
            log = LedgerLog(uow.ledger)
            for _ in range(batch):
                log.append(actor="a", action="test.batch", subject=f"s:{done}", details={"i": done})
                done += 1
                # roots inside the unit of work already see the pending subtrees
                assert log.size() == done
            leaves = [merkle.leaf_hash(e.entry) for e in uow.ledger.entries()]
            assert log.root() == merkle.root(leaves)
        _check_against_pure(catalog)


def _counts(app: App) -> tuple[int, int, int]:
    with app.read() as uow:
        s = uow.session
        return (
            int(s.scalar(select(func.count()).select_from(LedgerEntryRow)) or 0),
            len(b"".join(s.scalars(select(LedgerEntryRow.nodes)))),
            int(s.scalar(select(func.count()).select_from(CheckpointRow)) or 0),
        )


def test_log_rolled_back_change_leaves_no_entry_node_or_checkpoint(app: App) -> None:
    before = _counts(app)

    class Boom(Exception):
        pass

    with pytest.raises(Boom), app.change() as change:
        change.record("test.doomed", "s:1", {"n": 1})
        change.record("test.doomed", "s:2", {"n": 2})
        raise Boom
    assert _counts(app) == before


def test_log_each_change_stores_a_checkpoint_of_its_tree(app: App) -> None:
    entries, _nodes, checkpoints = _counts(app)
    with app.change() as change:
        change.record("test.a", "s:1")
        change.record("test.b", "s:2")
    with app.read() as uow:
        stored = uow.ledger.checkpoints()
        leaves = [merkle.leaf_hash(e.entry) for e in uow.ledger.entries()]
    assert len(stored) == checkpoints + 1
    size, note = stored[-1]
    assert size == entries + 2 == len(leaves)
    identity = app.ledger_identity()
    assert identity is not None
    from affidavit.ledger.checkpoint import open_checkpoint

    cp = open_checkpoint(note, identity.verifier, identity.origin)
    assert cp.root == merkle.root(leaves)


def test_log_change_without_events_signs_nothing(app: App) -> None:
    before = _counts(app)
    with app.change():
        pass
    assert _counts(app) == before
