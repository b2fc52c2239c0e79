"""The dashboard's figures, computed from what the services return (backups, verifications,
drills, datasets, findings, due checks, the policy in force): pure functions, so that each
figure is tested on its own and the page itself only shows them. Each figure carries the
link to the records behind it.

Definitions (the same as the evidence report's):

- **success rate** of a source over the last N days: complete / (complete + failed) among the
  backups *started* in those N days; running and deleted backups count as other;
- **RPO**: a dataset is within its RPO when its newest complete backup finished no longer ago
  than the RPO of its classification in the policy in force (none approved: unknown);
- **newest verification / drill of a dataset**: the newest of those of any backup holding it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any, Final, Protocol
from urllib.parse import urlencode

from affidavit.constants import INGESTED_LABEL
from affidavit.models.backup import Backup, BackupStatus
from affidavit.models.checks import Drill, Verification
from affidavit.models.governance import ControlFinding, FindingStatus
from affidavit.models.inventory import Dataset
from affidavit.models.overview import CheckBrief
from affidavit.render.chart import Bar, GridCell, GridRow
from affidavit.services.adherence import ORDER as ADHERENCE_ORDER
from affidavit.services.adherence import Adherence
from affidavit.services.overview import Overview

WINDOWS: Final = (7, 30, 90)
CHART_DRILLS: Final = 20
DUE_SHOWN: Final = 50  # the due checks listed (overdue first); the rest are counted
OPEN: Final = frozenset({FindingStatus.OPEN, FindingStatus.ACKNOWLEDGED})
NO_SOURCE: Final = INGESTED_LABEL  # the label of a backup ingested without a source


class Policy(Protocol):
    """What the dashboard reads of the policy in force (``services.policy.effective_policy``):
    each classification level's requirements (``rpo_hours``)."""

    @property
    def levels(self) -> Mapping[Any, Any]:
        """Requirements by classification."""


def link(path: str, **query: object) -> str:
    """``path`` with the query parameters that are set."""
    params = {k: str(v) for k, v in query.items() if v is not None and v != ""}
    return f"{path}?{urlencode(params)}" if params else path


@dataclass(frozen=True, slots=True, kw_only=True)
class Rate:
    """One source's backups in one window."""

    source: str
    days: int
    complete: int
    failed: int
    other: int
    href: str

    @property
    def finished(self) -> int:
        """Complete and failed."""
        return self.complete + self.failed

    @property
    def rate(self) -> float | None:
        """complete / finished (None: nothing finished)."""
        return self.complete / self.finished if self.finished else None


def success_rates(
    backups: Sequence[Backup], now: datetime, windows: Sequence[int] = WINDOWS
) -> list[list[Rate]]:
    """Per source (by name), its :class:`Rate` in each window."""
    sources = sorted({b.source or NO_SOURCE for b in backups})
    table = []
    for source in sources:
        row = []
        for days in windows:
            since = now - timedelta(days=days)
            mine = [
                b for b in backups if (b.source or NO_SOURCE) == source and b.started_at >= since
            ]
            complete = sum(b.status is BackupStatus.COMPLETE for b in mine)
            failed = sum(b.status is BackupStatus.FAILED for b in mine)
            row.append(
                Rate(
                    source=source,
                    days=days,
                    complete=complete,
                    failed=failed,
                    other=len(mine) - complete - failed,
                    href=link("/backups", source=source, days=days),
                )
            )
        table.append(row)
    return table


@dataclass(frozen=True, slots=True, kw_only=True)
class DatasetStanding:
    """One dataset: its newest complete backup against the RPO, its newest verification and
    drill."""

    source: str
    name: str
    classification: str
    newest_backup: Backup | BackupRef | None
    rpo_hours: float | None
    rpo_state: str  # within | over | never | unknown (no policy in force)
    verification: Verification | CheckBrief | None
    drill: Drill | CheckBrief | None


@dataclass(frozen=True, slots=True, kw_only=True)
class BackupRef:
    """A backup as a standing names it: its id and when it finished."""

    id: str
    finished_at: datetime | None


def dataset_standings(
    datasets: Sequence[Dataset],
    *,
    backups: Sequence[Backup],
    verifications: Sequence[Verification],
    drills: Sequence[Drill],
    policy: Policy | None,
    now: datetime,
) -> list[DatasetStanding]:
    """Every dataset the catalog knows, and every dataset a backup holds that it does not
    (a dataset gone from the source still has backups), by source and name."""
    holding: dict[tuple[str, str], list[Backup]] = {}
    for b in backups:  # newest first, as the service lists them
        for d in b.datasets:
            holding.setdefault((b.source or NO_SOURCE, d.name), []).append(b)
    known: dict[tuple[str, str], str] = {
        (d.source, d.name): d.classification.value for d in datasets
    }
    for (source, name), held in holding.items():
        if (source, name) not in known and held[0].datasets:
            known[(source, name)] = next(
                d.classification for d in held[0].datasets if d.name == name
            )
    newest_verification: dict[str, Verification] = {}
    for v in sorted(verifications, key=lambda v: v.finished_at):
        newest_verification[v.backup_id] = v
    newest_drill: dict[str, Drill] = {}
    for dr in sorted(drills, key=lambda dr: dr.finished_at):
        newest_drill[dr.backup_id] = dr
    out = []
    for (source, name), classification in sorted(known.items()):
        held = holding.get((source, name), [])
        complete = [b for b in held if b.status is BackupStatus.COMPLETE and b.finished_at]
        newest = max(complete, key=lambda b: b.finished_at or now, default=None)
        rpo = _rpo_hours(policy, classification)
        if rpo is None:
            state = "unknown"
        elif newest is None or newest.finished_at is None:
            state = "never"
        else:
            state = "within" if now - newest.finished_at <= timedelta(hours=rpo) else "over"
        ids = {b.id for b in held}
        out.append(
            DatasetStanding(
                source=source,
                name=name,
                classification=classification,
                newest_backup=newest,
                rpo_hours=rpo,
                rpo_state=state,
                verification=max(
                    (newest_verification[i] for i in ids if i in newest_verification),
                    key=lambda v: v.finished_at,
                    default=None,
                ),
                drill=max(
                    (newest_drill[i] for i in ids if i in newest_drill),
                    key=lambda dr: dr.finished_at,
                    default=None,
                ),
            )
        )
    return out


def _rpo_hours(policy: Policy | None, classification: str) -> float | None:
    if policy is None:
        return None
    for level, requirements in policy.levels.items():
        if str(getattr(level, "value", level)) == classification:
            return float(requirements.rpo_hours)
    return None


def restore_bars(drills: Sequence[Drill | CheckBrief], limit: int = CHART_DRILLS) -> list[Bar]:
    """The newest ``limit`` drills as chart bars (restore time against the RTO), newest
    first, each linking to its backup's drills."""
    newest = sorted(drills, key=lambda d: d.finished_at, reverse=True)[:limit]
    return [
        Bar(
            label=d.id,
            value=d.restore_seconds,
            limit=d.rto_seconds,
            href=link("/drills", backup=d.backup_id),
        )
        for d in newest
    ]


@dataclass(frozen=True, slots=True, kw_only=True)
class Count:
    """A count and the list it links to."""

    key: str
    count: int
    href: str


@dataclass(frozen=True, slots=True, kw_only=True)
class FindingSummary:
    """Open findings (open or acknowledged) by severity, by owner, and by due date."""

    total: int
    overdue: int
    by_severity: list[Count]
    by_owner: list[Count]
    soonest: list[ControlFinding]


_SEVERITY_ORDER: Final = ("critical", "high", "medium", "low")


def finding_summary(
    findings: Sequence[ControlFinding], now: datetime, shown: int = 10
) -> FindingSummary:
    """The open findings among ``findings``."""
    open_ = [f for f in findings if f.status in OPEN]
    severities: dict[str, int] = {}
    owners: dict[str, int] = {}
    for f in open_:
        severities[f.severity.value] = severities.get(f.severity.value, 0) + 1
        owners[f.owner] = owners.get(f.owner, 0) + 1
    order = {s: i for i, s in enumerate(_SEVERITY_ORDER)}
    return FindingSummary(
        total=len(open_),
        overdue=sum(f.due_at < now for f in open_),
        by_severity=[
            Count(key=s, count=n, href=link("/findings", status="unresolved", severity=s))
            for s, n in sorted(severities.items(), key=lambda kv: order.get(kv[0], 99))
        ],
        by_owner=[
            Count(key=o, count=n, href=link("/findings", status="unresolved", owner=o))
            for o, n in sorted(owners.items(), key=lambda kv: (-kv[1], kv[0]))
        ],
        soonest=sorted(open_, key=lambda f: f.due_at)[:shown],
    )


# -- the same figures from the catalog's aggregates (the dashboard page) -----------------------


def overview_rates(
    overview: Overview, now: datetime, windows: Sequence[int] = WINDOWS
) -> list[list[Rate]]:
    """:func:`success_rates` from :class:`Overview` (``overview.recent`` must hold the
    backups started in the longest window)."""
    table = []
    for source in sorted({s or NO_SOURCE for s in overview.sources}):
        mine = [b for b in overview.recent if (b.source or NO_SOURCE) == source]
        row = []
        for days in windows:
            since = now - timedelta(days=days)
            inside = [b for b in mine if b.started_at >= since]
            complete = sum(b.status is BackupStatus.COMPLETE for b in inside)
            failed = sum(b.status is BackupStatus.FAILED for b in inside)
            row.append(
                Rate(
                    source=source,
                    days=days,
                    complete=complete,
                    failed=failed,
                    other=len(inside) - complete - failed,
                    href=link("/backups", source=source, days=days),
                )
            )
        table.append(row)
    return table


def overview_standings(
    datasets: Sequence[Dataset], overview: Overview, *, policy: Policy | None, now: datetime
) -> list[DatasetStanding]:
    """:func:`dataset_standings` from :class:`Overview`: every dataset the catalog knows and
    every dataset a backup holds that it does not, by source and name."""
    held = {(h.source or NO_SOURCE, h.name): h for h in overview.held}
    known: dict[tuple[str, str], str] = {
        (d.source, d.name): d.classification.value for d in datasets
    }
    for key, one in held.items():
        known.setdefault(key, one.classification)
    out = []
    for (source, name), classification in sorted(known.items()):
        h = held.get((source, name))
        lookup = (None if source == NO_SOURCE else source, name)
        newest = (
            BackupRef(id=h.newest_backup_id, finished_at=h.newest_finished_at)
            if h is not None and h.newest_backup_id is not None
            else None
        )
        rpo = _rpo_hours(policy, classification)
        if rpo is None:
            state = "unknown"
        elif newest is None or newest.finished_at is None:
            state = "never"
        else:
            state = "within" if now - newest.finished_at <= timedelta(hours=rpo) else "over"
        out.append(
            DatasetStanding(
                source=source,
                name=name,
                classification=classification,
                newest_backup=newest,
                rpo_hours=rpo,
                rpo_state=state,
                verification=overview.verifications.get(lookup),
                drill=overview.drills.get(lookup),
            )
        )
    return out


# -- control adherence over time --------------------------------------------------------------

ADHERENCE_DAYS: Final = 30


def day_label(day: date) -> str:
    """``Dec 5``: a column of the adherence grid."""
    return f"{day:%b} {day.day}"


def _counts_text(counts: Mapping[str, int]) -> str:
    return ", ".join(f"{counts[s]} {s}" for s in ADHERENCE_ORDER if counts.get(s))


def adherence_rows(adherence: Adherence) -> list[GridRow]:
    """A grid row per control: a cell per day (the day's vouched check: its state, the
    subjects per state, linking to that check's results for the control) and the days per
    state in words."""
    rows = []
    for control, _title in adherence.controls:
        cells: list[GridCell | None] = []
        for day in adherence.days:
            cell = adherence.cells.get((control, day))
            if cell is None:
                cells.append(None)
                continue
            cells.append(
                GridCell(
                    state=cell.state,
                    tip=f"{control} on {day.isoformat()}: {cell.state} "
                    f"({_counts_text(cell.counts)}; check {cell.run_id})",
                    href=link(f"/checks/{cell.run_id}", control=control),
                )
            )
        totals = adherence.totals(control)
        rows.append(
            GridRow(
                label=control,
                cells=tuple(cells),
                summary=f"days: {_counts_text(totals)}" if totals else "no check",
            )
        )
    return rows
