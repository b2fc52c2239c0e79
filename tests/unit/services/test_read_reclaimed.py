"""``services.leases.read_reclaimed``: a read of backups (``backup list|show``, the API's
``GET /backups``) runs in one reader when no backup is running and no abandoned run has
unfinished writes left, and still sweeps private temporary folders; otherwise dead runs are
recorded abandoned, and left-over writes retried, before the read. What it skips depends on
the catalog and the ledger, never on a timer."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from affidavit.models.backup import Backup, BackupStatus
from affidavit.models.inventory import Vault, VaultKind, VaultName
from affidavit.services import backup as backups
from affidavit.services import leases
from affidavit.services.context import App, open_app

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)


@pytest.fixture
def reclaims(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """One item per call of reclaim_abandoned (the slow path)."""
    calls: list[int] = []
    real = leases.reclaim_abandoned

    def counted(app: App) -> list[leases.Abandonment]:
        calls.append(1)
        return real(app)

    monkeypatch.setattr(leases, "reclaim_abandoned", counted)
    return calls


@pytest.fixture
def sweeps(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []
    real = leases.sweep

    def counted() -> list[Path]:
        calls.append(1)
        return real()

    monkeypatch.setattr(leases, "sweep", counted)
    monkeypatch.setitem(leases._read_sweep, "at", float("-inf"))  # no sweep yet, this process
    return calls


def _backup(app: App, backup_id: str, vault: Path, status: BackupStatus) -> None:
    """A backup row with its ``backup.started`` event (a run recorded before leases: judged
    by its start, two hours ago, so a running one is dead)."""
    with app.change() as change:
        if not change.uow.vaults.list():
            change.uow.vaults.add(
                Vault(name=VaultName("v1"), kind=VaultKind.FILE, url=f"file://{vault}",
                      region=None, immutable_days=None, created_at=NOW)
            )  # fmt: skip
        change.uow.backups.add(
            Backup(id=backup_id, source="cache", vault="v1", kind="run", format="rdb",
                   status=status, started_at=datetime.now(UTC) - timedelta(hours=2),
                   finished_at=None, retain_until=datetime.now(UTC) + timedelta(days=30))
        )  # fmt: skip
        change.record("backup.started", f"backup:{backup_id}", {"source": "cache", "vault": "v1"})


def test_with_nothing_running_a_read_is_one_reader_and_still_sweeps(
    app: App, tmp_path: Path, reclaims: list[int], sweeps: list[int]
) -> None:
    _backup(app, "bk-done", tmp_path / "vault", BackupStatus.FAILED)
    assert [b.id for b in backups.list_backups(app)] == ["bk-done"]
    assert backups.get_backup(app, "bk-done").status is BackupStatus.FAILED
    assert reclaims == []
    assert len(sweeps) == 1  # reads sweep at most once every READ_SWEEP_EVERY seconds
    leases._read_sweep["at"] -= leases.READ_SWEEP_EVERY  # ... which have passed
    assert backups.get_backup(app, "bk-done").status is BackupStatus.FAILED
    assert len(sweeps) == 2


def test_a_dead_run_is_recorded_abandoned_before_it_is_listed_or_shown(
    app: App, tmp_path: Path, reclaims: list[int]
) -> None:
    _backup(app, "bk-dead", tmp_path / "vault", BackupStatus.RUNNING)
    (listed,) = backups.list_backups(app)
    assert listed.status is BackupStatus.FAILED
    assert str(listed.error).startswith("abandoned: it has no lease")
    assert reclaims == [1]
    _backup(app, "bk-dead-2", tmp_path / "vault", BackupStatus.RUNNING)
    shown = backups.get_backup(app, "bk-dead-2")
    assert shown.status is BackupStatus.FAILED
    assert reclaims == [1, 1]
    backups.list_backups(app)
    assert reclaims == [1, 1]  # nothing running any more


def test_unfinished_writes_left_are_retried_by_reads_until_removed(
    app: App, tmp_path: Path, reclaims: list[int]
) -> None:
    """An abandonment that could not remove a partial file: every read retries it (the
    vault may let go at any time), and once the removal is recorded reads are cheap again.
    A ledger event recorded by another App is seen at the next read as well."""
    vault = tmp_path / "vault"
    _backup(app, "bk-1", vault, BackupStatus.FAILED)
    partial = vault / "cache" / "bk-1" / ".dump.rdb.age.x1y2.partial"
    partial.parent.mkdir(parents=True)
    backups.list_backups(app)  # nothing left yet: kept so
    assert reclaims == []
    left = {"path": "cache/bk-1/.dump.rdb.age.x1y2.partial", "error": "Permission denied"}
    # another process records an abandonment meanwhile
    with open_app(app.settings) as other, other.change() as change:
        change.record(
            "backup.abandoned",
            "backup:bk-1",
            {"reason": "abandoned", "partials_removed": [], "partials_left": [left]},
        )
    backups.list_backups(app)  # the file is gone already: the retry records that
    assert reclaims == [1]
    with app.read() as uow:
        (event,) = uow.ledger.find(action="backup.partials_removed")
    assert b'"gone":["cache/bk-1/.dump.rdb.age.x1y2.partial"]' in event.entry
    backups.list_backups(app)
    backups.get_backup(app, "bk-1")
    assert reclaims == [1]
