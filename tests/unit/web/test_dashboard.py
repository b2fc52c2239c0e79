"""The dashboard's figures, each on its own: success rates per source and window, each
dataset against its RPO with its newest verification and drill, the restore chart's bars,
open findings by severity, owner and due date."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from types import MappingProxyType
from typing import Any

from affidavit.constants import Classification
from affidavit.models.backup import Backup, BackupDataset, BackupStatus
from affidavit.models.checks import Drill, Verification
from affidavit.models.governance import ControlFinding, FindingStatus, Severity
from affidavit.models.inventory import Dataset, SourceName
from affidavit.render.chart import BarState
from affidavit.server.web import dashboard

NOW = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)


def _backup(
    bid: str, source: str | None, status: BackupStatus, age_days: float, *names: str
) -> Backup:
    started = NOW - timedelta(days=age_days)
    return Backup(
        id=bid,
        source=source,
        vault="v",
        kind="run",
        format="rdb",
        status=status,
        started_at=started,
        finished_at=started + timedelta(minutes=1) if status is not BackupStatus.RUNNING else None,
        retain_until=NOW + timedelta(days=30),
        datasets=tuple(
            BackupDataset(name=n, records=1, fingerprint="f", classification="internal")
            for n in names
        ),
    )


def _verification(vid: str, backup_id: str, age_h: float, ok: bool) -> Verification:
    at = NOW - timedelta(hours=age_h)
    return Verification(
        id=vid, backup_id=backup_id, kind="full", started_at=at, finished_at=at, ok=ok, findings=()
    )


def _drill(did: str, backup_id: str, age_h: float, seconds: float, rto: float | None) -> Drill:
    at = NOW - timedelta(hours=age_h)
    return Drill(
        id=did,
        backup_id=backup_id,
        target="scratch",
        started_at=at,
        finished_at=at,
        ok=True,
        rto_seconds=rto,
        restore_seconds=seconds,
        fingerprint_match=True,
        phases={},
        probes=(),
        findings=(),
    )


BACKUPS = [
    _backup("b1", "cache", BackupStatus.COMPLETE, 1, "db0", "db1"),
    _backup("b2", "cache", BackupStatus.FAILED, 2),
    _backup("b3", "cache", BackupStatus.COMPLETE, 20, "db0"),
    _backup("b4", "cache", BackupStatus.RUNNING, 0.1),
    _backup("b5", "cache", BackupStatus.FAILED, 60),
    _backup("b6", None, BackupStatus.COMPLETE, 100, "x"),
]


def test_success_rates_count_complete_over_finished_in_each_window() -> None:
    rows = dashboard.success_rates(BACKUPS, NOW)
    assert [row[0].source for row in rows] == ["cache", "ingested"]
    cache = {r.days: (r.complete, r.failed, r.other) for r in rows[0]}
    assert cache == {7: (1, 1, 1), 30: (2, 1, 1), 90: (2, 2, 1)}
    assert rows[0][0].rate == 0.5
    assert rows[0][0].href == "/backups?source=cache&days=7"
    assert [r.finished for r in rows[1]] == [0, 0, 0]  # 100 days old: outside every window
    assert rows[1][0].rate is None


@dataclass(frozen=True)
class _Level:
    rpo_hours: float


@dataclass(frozen=True)
class _Policy:
    levels: Any


def test_each_dataset_against_its_rpo_with_its_newest_checks() -> None:
    datasets = [
        Dataset(
            source=SourceName("cache"),
            name=n,
            classification=Classification.INTERNAL,
            inherited=True,
            reason=None,
            records=1,
            discovered_at=NOW,
        )
        for n in ("db0", "db1", "db2")
    ]
    policy = _Policy(levels=MappingProxyType({Classification.INTERNAL: _Level(rpo_hours=12)}))
    verifications = [
        _verification("v-old", "b3", 400, ok=True),
        _verification("v-new", "b1", 2, ok=False),
    ]
    drills = [_drill("d1", "b3", 300, 0.2, 600)]
    standings = dashboard.dataset_standings(
        datasets,
        backups=BACKUPS,
        verifications=verifications,
        drills=drills,
        policy=policy,
        now=NOW,
    )
    by = {(s.source, s.name): s for s in standings}
    assert set(by) == {("cache", "db0"), ("cache", "db1"), ("cache", "db2"), ("ingested", "x")}
    db0 = by[("cache", "db0")]
    assert db0.newest_backup is not None and db0.newest_backup.id == "b1"
    assert db0.rpo_state == "over"  # a day old against 12 h
    assert db0.verification is not None and db0.verification.id == "v-new"
    assert db0.drill is not None and db0.drill.id == "d1"  # of b3, which holds db0 too
    assert by[("cache", "db1")].drill is None  # b3 does not hold db1
    assert by[("cache", "db2")].rpo_state == "never"
    unknown = dashboard.dataset_standings(
        datasets, backups=BACKUPS, verifications=[], drills=[], policy=None, now=NOW
    )
    assert {s.rpo_state for s in unknown} == {"unknown"}
    fresh = _Policy(levels={Classification.INTERNAL: _Level(rpo_hours=48)})
    again = dashboard.dataset_standings(
        datasets, backups=BACKUPS, verifications=[], drills=[], policy=fresh, now=NOW
    )
    assert {(s.name, s.rpo_state) for s in again if s.source == "cache"} == {
        ("db0", "within"), ("db1", "within"), ("db2", "never"),
    }  # fmt: skip


def test_the_restore_chart_shows_the_newest_drills_first_with_links() -> None:
    drills = [_drill(f"d{i}", f"b{i}", i, 0.1 * (i + 1), 600 if i % 2 else None) for i in range(25)]
    bars = dashboard.restore_bars(drills)
    assert len(bars) == dashboard.CHART_DRILLS
    assert [b.label for b in bars[:3]] == ["d0", "d1", "d2"]
    assert bars[1].href == "/drills?backup=b1"
    assert bars[0].state is BarState.NO_LIMIT and bars[1].state is BarState.WITHIN


def test_open_findings_by_severity_owner_and_due_date() -> None:
    def finding(fid: str, sev: Severity, owner: str, due_h: float, status: FindingStatus) -> Any:
        return ControlFinding(
            id=fid,
            control="c",
            subject="s",
            severity=sev,
            owner=owner,
            message="m",
            status=status,
            opened_at=NOW,
            last_seen_at=NOW,
            due_at=NOW + timedelta(hours=due_h),
        )

    found = [
        finding("f1", Severity.LOW, "ann", 5, FindingStatus.OPEN),
        finding("f2", Severity.CRITICAL, "bob", -1, FindingStatus.ACKNOWLEDGED),
        finding("f3", Severity.CRITICAL, "ann", 2, FindingStatus.OPEN),
        finding("f4", Severity.HIGH, "ann", -5, FindingStatus.RESOLVED),
    ]
    summary = dashboard.finding_summary(found, NOW)
    assert (summary.total, summary.overdue) == (3, 1)
    assert [(c.key, c.count) for c in summary.by_severity] == [("critical", 2), ("low", 1)]
    assert [(c.key, c.count) for c in summary.by_owner] == [("ann", 2), ("bob", 1)]
    assert summary.by_severity[0].href == "/findings?status=unresolved&severity=critical"
    assert [f.id for f in summary.soonest] == ["f2", "f3", "f1"]
