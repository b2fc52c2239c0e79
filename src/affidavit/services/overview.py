"""The dashboard's view of backups, verifications and drills, read with a fixed number of
small aggregate queries (``affidavit.catalog.overview``) in one read transaction: what the
web dashboard shows over a catalog of any size (docs/web.md, "Performance").

Unlike :func:`affidavit.services.backup.list_backups` it does not first record dead runs as
abandoned: a run that died shows as running (counted as *other*) until a listing or a
policy check records it.

What it reads changes only with a backup, hold, verification or drill event (the service
that changes a row records its event in the same transaction), so the overview and the due
list are remembered per catalog under the newest such event's sequence number (one indexed
query tells whether they still hold); the due list for at most a minute besides.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Final

from affidavit.catalog.overview import OverviewReadings
from affidavit.catalog.store import UnitOfWork
from affidavit.models.overview import BackupStart, CheckBrief, HeldDataset
from affidavit.services import schedule
from affidavit.services.context import App
from affidavit.services.policy_vouch import ACTIONS
from affidavit.services.schedule import DueItem


@dataclass(frozen=True, slots=True, kw_only=True)
class Overview:
    """Backups in the window, datasets held, newest checks per dataset, newest drills."""

    sources: tuple[str | None, ...]
    recent: tuple[BackupStart, ...]
    held: tuple[HeldDataset, ...]
    verifications: dict[tuple[str | None, str], CheckBrief]
    drills: dict[tuple[str | None, str], CheckBrief]
    newest_drills: tuple[CheckBrief, ...]


def backup_overview(app: App, *, since: datetime, drills: int = 20) -> Overview:
    """Every backup's source; the backups started since ``since``; the datasets held, each
    with its newest complete backup, verification and drill; the ``drills`` newest drills.
    At most seventeen queries whatever the number of records (usually nine), and one while
    nothing it reads has changed (see :func:`facts_seq`)."""
    key = app.catalog.describe()
    with app.read() as uow:
        seq = facts_seq(uow)
        with _lock:
            known = _memo.get(key)
        if known is not None and known[0] == seq and known[1] <= since:
            seen = known[2]
            if known[1] == since:
                return seen
            recent = tuple(b for b in seen.recent if b.started_at >= since)
            return replace(seen, recent=recent)
        read = OverviewReadings(uow.session)
        held = tuple(read.held_datasets())
        keys = [(h.source, h.name) for h in held]
        seen = Overview(
            sources=tuple(read.backup_sources()),
            recent=tuple(read.backups_started_since(since)),
            held=held,
            verifications=read.newest_checks_by_dataset(drills=False, wanted=keys),
            drills=read.newest_checks_by_dataset(drills=True, wanted=keys),
            newest_drills=tuple(read.newest_drills(drills)),
        )
    with _lock:
        _memo[key] = (seq, since, seen)
    return seen


FACT_ACTIONS: Final = (
    *ACTIONS,  # what the schedule reads (services.policy_vouch)
    "backup.abandoned",
    "backup.artifact_stored",
    "backup.deletion_partial",
    "backup.deletion_refused",
    "backup.manifest_copy_failed",
    "backup.partials_removed",
    "verification.failed",
    "verification.could_not_run",
    "drill.failed",
)
"""Every event recorded with a change to a backup, hold, verification or drill row."""


def facts_seq(uow: UnitOfWork) -> int | None:
    """The newest ledger event of :data:`FACT_ACTIONS`: every change to the rows the
    overview reads, and every event the schedule reads, comes with one of those events in
    its transaction, so while this number stands still, so do they."""
    return OverviewReadings(uow.session).last_seq_of(FACT_ACTIONS)


_memo: dict[str, tuple[int | None, datetime, Overview]] = {}
_lock = threading.Lock()


# -- the checks due, remembered while the ledger stands still ---------------------------------

DUE_FOR: Final = timedelta(seconds=60)
"""How long a computed due list is shown again when the ledger has not grown."""

_due_memo: dict[str, tuple[int | None, float, tuple[DueItem, ...]]] = {}
_due_lock = threading.Lock()


def due_checks(app: App) -> tuple[DueItem, ...]:
    """:func:`affidavit.services.schedule.due`, remembered per catalog while no backup, hold,
    verification or drill event has been recorded (:func:`facts_seq`), for at most
    :data:`DUE_FOR`. The schedule reads every such event (it trusts the ledger, not the
    rows), so its cost grows with the ledger; the time limit keeps "due" and "overdue"
    current."""
    with app.read() as uow:
        seq = facts_seq(uow)
    key = app.catalog.describe()
    now = time.monotonic()
    with _due_lock:
        known = _due_memo.get(key)
        if known is not None and known[0] == seq and now - known[1] < DUE_FOR.total_seconds():
            return known[2]
    items = tuple(schedule.due(app))
    with _due_lock:
        _due_memo[key] = (seq, now, items)
    return items
