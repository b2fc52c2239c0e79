"""The dashboard's reads of backups, verifications and drills: a handful of aggregate queries
whose answers grow with the number of sources and datasets, never with the number of backups
or checks (docs/web.md, "Performance"). Plain SQL expressions (SQLAlchemy core) that run the
same on SQLite and PostgreSQL; nothing is written.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import datetime
from typing import Any, Final

from sqlalchemy import case, func, select, union_all
from sqlalchemy.orm import Session

from affidavit.catalog.rows import aware
from affidavit.catalog.schema import (
    BackupDatasetRow,
    BackupRow,
    DrillRow,
    LedgerEntryRow,
    VerificationRow,
)
from affidavit.models.backup import BackupStatus
from affidavit.models.overview import BackupStart, CheckBrief, HeldDataset

_COMPLETE = BackupStatus.COMPLETE.value
PAGES: Final = (256, 4096)
"""The pages of newest checks read before the aggregate is asked for what is missing."""


class OverviewReadings:
    """Read-only aggregates for the dashboard, inside one unit of work's session."""

    def __init__(self, session: Session) -> None:
        self._s = session

    def last_seq_of(self, actions: Sequence[str]) -> int | None:
        """The sequence number of the newest ledger event of one of ``actions`` (None: none),
        from the (action, seq) index."""
        if not actions:
            return None
        each = union_all(  # one max per action: an index lookup each, not a range scan
            *(
                select(func.max(LedgerEntryRow.seq).label("m")).where(
                    LedgerEntryRow.action == action
                )
                for action in sorted(set(actions))
            )
        ).subquery()
        value = self._s.execute(select(func.max(each.c.m))).scalar()
        return None if value is None else int(value)

    def backup_sources(self) -> list[str | None]:
        """Every source some backup names (None: ingested without one)."""
        return [r[0] for r in self._s.execute(select(BackupRow.source).distinct())]

    def backups_started_since(self, since: datetime) -> list[BackupStart]:
        """Source, status and start of the backups started at or after ``since``."""
        query = select(BackupRow.source, BackupRow.status, BackupRow.started_at).where(
            BackupRow.started_at >= since
        )
        return [
            BackupStart(source=source, status=BackupStatus(status), started_at=aware(started))
            for source, status, started in self._s.execute(query)
        ]

    def held_datasets(self) -> list[HeldDataset]:
        """Every (source, dataset) some backup holds, with its newest complete backup."""
        b, d = BackupRow, BackupDatasetRow
        src = func.coalesce(b.source, "")
        complete_at = case((b.status == _COMPLETE, b.finished_at), else_=None)
        held: dict[tuple[str, str], str] = {}
        newest: set[tuple[str, str, Any]] = set()
        for s, n, c, m in self._s.execute(
            select(src, d.name, func.max(d.classification), func.max(complete_at))
            .select_from(d)
            .join(b, b.id == d.backup_id)
            .group_by(src, d.name)
        ):
            held[(s, n)] = str(c)
            if m is not None:
                newest.add((s, n, m))
        # the backups of those times (a join with the aggregate as a subquery is a nested
        # loop in SQLite: an IN list of at most one time per dataset is a lookup)
        query = (
            select(src, d.name, d.classification, b.id, b.finished_at)
            .select_from(d)
            .join(b, b.id == d.backup_id)
            .where(b.status == _COMPLETE, b.finished_at.in_(sorted({m for _, _, m in newest})))
            .order_by(b.id)
        )
        found: dict[tuple[str, str], tuple[str, str | None, Any]] = {
            key: (c, None, None) for key, c in held.items()
        }
        for s, n, c, backup_id, finished in self._s.execute(query):
            if (s, n, finished) in newest and found.get((s, n), ("", None))[1] is None:
                found[(s, n)] = (str(c), backup_id, finished)
        return [
            HeldDataset(
                source=s or None,
                name=n,
                classification=c,
                newest_backup_id=backup_id,
                newest_finished_at=aware(finished) if finished is not None else None,
            )
            for (s, n), (c, backup_id, finished) in sorted(found.items())
        ]

    def newest_checks_by_dataset(
        self, *, drills: bool, wanted: Collection[tuple[str | None, str]]
    ) -> dict[tuple[str | None, str], CheckBrief]:
        """Per (source, dataset) of ``wanted``: the newest verification (or drill) of any
        backup holding it.

        The newest checks first, a page at a time (:data:`PAGES`), with the datasets of
        their backups, until every wanted dataset has one: usually the first page, since
        every source is checked often. What is still missing then (a dataset never checked,
        or checked long ago) is found by one aggregate over the checks of backups holding
        those dataset names. At most six queries."""
        b, d = BackupRow, BackupDatasetRow
        table: Any = DrillRow if drills else VerificationRow
        src = func.coalesce(b.source, "")
        columns = [table.id, table.backup_id, table.ok, table.finished_at]
        if drills:
            columns += [table.restore_seconds, table.rto_seconds]
        out: dict[tuple[str | None, str], CheckBrief] = {}
        missing = set(wanted)
        offset = 0
        for size in PAGES:
            page = list(
                self._s.execute(
                    select(*columns)
                    .order_by(table.finished_at.desc(), table.id.desc())
                    .limit(size)
                    .offset(offset)
                )
            )
            offset += size
            holding: dict[str, list[tuple[str | None, str]]] = {}
            for backup_id, s, n in self._s.execute(
                select(d.backup_id, src, d.name)
                .select_from(d)
                .join(b, b.id == d.backup_id)
                .where(d.backup_id.in_(sorted({row[1] for row in page})))
            ):
                holding.setdefault(backup_id, []).append((s or None, n))
            for row in page:  # newest first
                for key in holding.get(row[1], ()):
                    if key not in out:
                        out[key] = _brief(row)
                        missing.discard(key)
            if not missing or len(page) < size:
                return out
        names = sorted({n for _, n in missing})
        newest = {
            (s or None, n, m)
            for s, n, m in self._s.execute(
                select(src, d.name, func.max(table.finished_at))
                .select_from(table)
                .join(d, d.backup_id == table.backup_id)
                .join(b, b.id == table.backup_id)
                .where(d.name.in_(names))
                .group_by(src, d.name)
            )
            if (s or None, n) in missing
        }
        query = (
            select(src, d.name, *columns)
            .select_from(table)
            .join(d, d.backup_id == table.backup_id)
            .join(b, b.id == table.backup_id)
            .where(d.name.in_(names), table.finished_at.in_(sorted({m for *_, m in newest})))
            .order_by(table.id)
        )
        for row in self._s.execute(query):
            if (row[0] or None, row[1], row[5]) in newest:
                out.setdefault((row[0] or None, row[1]), _brief(row[2:]))
        return out

    def newest_drills(self, limit: int) -> list[CheckBrief]:
        """The ``limit`` newest drills, newest first."""
        t = DrillRow
        query = (
            select(t.id, t.backup_id, t.ok, t.finished_at, t.restore_seconds, t.rto_seconds)
            .order_by(t.finished_at.desc(), t.id.desc())
            .limit(limit)
        )
        return [_brief(row) for row in self._s.execute(query)]


def _brief(row: Sequence[Any]) -> CheckBrief:
    restore, rto = (row[4], row[5]) if len(row) > 4 else (None, None)
    return CheckBrief(
        id=row[0],
        backup_id=row[1],
        ok=bool(row[2]),
        finished_at=aware(row[3]),
        restore_seconds=None if restore is None else float(restore),
        rto_seconds=None if rto is None else float(rto),
    )
