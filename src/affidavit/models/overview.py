"""What the dashboard reads of backups, verifications and drills: a few columns each, already
aggregated by the catalog (``affidavit.catalog.overview``), so that a page over a catalog of
any size reads a fixed number of small answers (docs/web.md, "Performance")."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from affidavit.models.backup import BackupStatus


@dataclass(frozen=True, slots=True, kw_only=True)
class BackupStart:
    """One backup started in the dashboard's longest window: its source, status and start."""

    source: str | None
    status: BackupStatus
    started_at: datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class CheckBrief:
    """A verification or drill as the dashboard shows it (a drill with its times)."""

    id: str
    backup_id: str
    ok: bool
    finished_at: datetime
    restore_seconds: float | None = None
    rto_seconds: float | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class HeldDataset:
    """A dataset some backup holds: its classification in the newest backup holding it, and
    its newest complete backup (None: never complete)."""

    source: str | None
    name: str
    classification: str
    newest_backup_id: str | None
    newest_finished_at: datetime | None
