"""Cadence: which verifications and drills are due, and running them (``affidavit due`` and
``affidavit run-due``, meant for cron or a systemd timer; see ``docs/operations.md``).

What is scheduled, from the settings:

- every *complete* backup still within its retention gets a **full verification** every
  ``verify_full_every_days`` and, in between, a **sample verification**
  (``verify_sample_percent`` percent) every ``verify_sample_every_hours``. A full verification
  (or one against the source) also counts as a sample one, so only one of the two is due at a
  time;
- the **newest complete backup of each source** (backups without a source form one group)
  gets a **restore drill** every ``drill_every_days``; any drill of any backup of that source
  counts as the last one.

All of it is read from the ledger's events, not from the catalog's rows (which anyone who can
write the database can edit): which backups are complete and not deleted, their source,
format, completion and retention (``backup.started``, ``backup.completed``,
``backup.deleted``), and when each was last verified or drilled (``verification.completed``,
``drill.completed``), by :class:`~affidavit.services.policy_vouch.LedgerRecords`. A forged
fresh verification row therefore removes nothing that is due, and a backup hidden as failed
in the catalog is still scheduled.

A check is *due* from ``last done + interval`` (never done: from the backup's completion). It
is *overdue* when it was never done, or when its due time passed more than
:data:`OVERDUE_GRACE` ago (an hourly ``run-due`` would have run it: the scheduler is not
running or the check keeps failing to run). A recorded check counts as done whether it passed
or failed: a failure raises an alert once instead of at every run.
"""

from __future__ import annotations

import fcntl
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from affidavit.config import Settings
from affidavit.errors import Error, InternalError, OperationError
from affidavit.models.checks import Verification
from affidavit.models.progress import Reporter, SilentReporter
from affidavit.services import drill as drills
from affidavit.services.alerts import Poster, post_json, raise_alert
from affidavit.services.context import App
from affidavit.services.leases import reclaim_abandoned
from affidavit.services.policy_vouch import (
    LedgerRecords,
    event_time,
    signed_source,
    signed_time,
)

if TYPE_CHECKING:  # imported when a cluster is asked for (the verify module may be absent)
    from affidavit.services.verify.cluster import Cluster, ClusterTls

#: a due check not run within this time after its due time is overdue
OVERDUE_GRACE = timedelta(hours=1)
_FULL_KINDS = frozenset({"full", "against-source"})
_NO_SOURCE = "(no source)"
#: backup formats a restore drill supports
_DRILLABLE_FORMATS = frozenset({"mongodump", "mongodump-archive", "rdb"})


def _now() -> datetime:
    return datetime.now(UTC)


class CheckKind(StrEnum):
    """What a scheduled check does."""

    VERIFY_SAMPLE = "verify-sample"
    VERIFY_FULL = "verify-full"
    DRILL = "drill"


@dataclass(frozen=True, slots=True, kw_only=True)
class DueItem:
    """One scheduled check of one backup."""

    kind: CheckKind
    backup_id: str
    source: str | None
    last_done_at: datetime | None
    due_at: datetime
    overdue: bool
    is_due: bool

    def to_json(self) -> dict[str, Any]:
        """JSON-ready."""
        return {
            "kind": self.kind.value,
            "backup_id": self.backup_id,
            "source": self.source,
            "last_done_at": self.last_done_at.isoformat() if self.last_done_at else None,
            "due_at": self.due_at.isoformat(),
            "due": self.is_due,
            "overdue": self.overdue,
        }


def due_json(items: list[DueItem]) -> dict[str, Any]:
    """``due --json``: how many checks are due and overdue, and every item."""
    return {
        "due": sum(1 for i in items if i.is_due),
        "overdue": sum(1 for i in items if i.is_due and i.overdue),
        "items": [i.to_json() for i in items],
    }


@dataclass(frozen=True, slots=True, kw_only=True)
class _Signed:
    """A complete backup as its ledger events record it."""

    id: str
    source: str | None
    format: str | None
    finished_at: datetime  # backup.completed
    seq: int  # backup.completed


def _item(
    kind: CheckKind, backup: _Signed, last: datetime | None, interval: timedelta, now: datetime
) -> DueItem:
    due_at = last + interval if last is not None else backup.finished_at
    return DueItem(
        kind=kind,
        backup_id=backup.id,
        source=backup.source,
        last_done_at=last,
        due_at=due_at,
        is_due=due_at <= now,
        overdue=last is None or now > due_at + OVERDUE_GRACE,
    )


def _latest(times: list[datetime]) -> datetime | None:
    return max(times) if times else None


def scheduled(app: App) -> list[DueItem]:
    """Every scheduled check (due or not), verifications first, by due time. Read from the
    ledger's events (one query per action), not from the catalog's rows."""
    settings: Settings = app.settings
    now = _now()
    with app.read() as uow:
        records = LedgerRecords.read(uow.ledger)
    backups = _complete(records, now)  # newest first
    verified: dict[str, list[tuple[datetime, bool]]] = {}  # backup id -> (when, full)
    for event in records.verifications.values():
        backup_id = event.subject.removeprefix("backup:")
        full = event.details.get("kind") in _FULL_KINDS
        verified.setdefault(backup_id, []).append((event_time(event), full))
    sample_every = timedelta(hours=settings.verify_sample_every_hours)
    full_every = timedelta(days=settings.verify_full_every_days)
    drill_every = timedelta(days=settings.drill_every_days)
    items: list[DueItem] = []
    for backup in backups:
        mine = verified.get(backup.id, [])
        last_full = _latest([at for at, full in mine if full])
        last_any = _latest([at for at, _ in mine])
        full_item = _item(CheckKind.VERIFY_FULL, backup, last_full, full_every, now)
        items.append(full_item)
        if not full_item.is_due:
            items.append(_item(CheckKind.VERIFY_SAMPLE, backup, last_any, sample_every, now))
    newest: dict[str, _Signed] = {}
    for backup in backups:  # newest first; only formats a drill can restore
        if backup.format in _DRILLABLE_FORMATS:
            newest.setdefault(backup.source or _NO_SOURCE, backup)
    drilled: dict[str, list[datetime]] = {}  # group -> when
    for event in records.drills.values():
        group = _group(records, event.subject.removeprefix("backup:"))
        if group is not None:
            drilled.setdefault(group, []).append(event_time(event))
    for group, backup in newest.items():
        last = _latest(drilled.get(group, []))
        items.append(_item(CheckKind.DRILL, backup, last, drill_every, now))
    order = {CheckKind.VERIFY_FULL: 0, CheckKind.VERIFY_SAMPLE: 0, CheckKind.DRILL: 1}
    return sorted(items, key=lambda i: (order[i.kind], i.due_at, i.backup_id))


def _complete(records: LedgerRecords, now: datetime) -> list[_Signed]:
    """The backups the ledger records complete, not deleted and still within the retention
    their ``backup.started`` recorded; newest completion first."""
    out = []
    for backup_id, completed in records.completed.items():
        started = records.started.get(backup_id)
        if started is None or backup_id in records.deleted:
            continue
        retain_until = signed_time(started.details.get("retain_until"))
        if retain_until is None or retain_until <= now:
            continue
        fmt = started.details.get("format")
        out.append(
            _Signed(
                id=backup_id,
                source=signed_source(started),
                format=fmt if isinstance(fmt, str) else None,
                finished_at=event_time(completed),
                seq=completed.seq,
            )
        )
    return sorted(out, key=lambda b: b.seq, reverse=True)


def _group(records: LedgerRecords, backup_id: str) -> str | None:
    """The drill group (source) of a backup, as its ``backup.started`` records it."""
    started = records.started.get(backup_id)
    return None if started is None else signed_source(started) or _NO_SOURCE


def due(app: App, *, include_upcoming: bool = False) -> list[DueItem]:
    """The checks that are due now (with ``include_upcoming``: every scheduled check)."""
    items = scheduled(app)
    return items if include_upcoming else [i for i in items if i.is_due]


# -- running what is due ----------------------------------------------------------------------


class Outcome(StrEnum):
    """How one due check went."""

    PASSED = "passed"
    FAILED = "failed"  # the check ran and the backup failed it
    ERROR = "error"  # the check could not run


@dataclass(frozen=True, slots=True, kw_only=True)
class ItemResult:
    """One due check as ``run-due`` ran it."""

    item: DueItem
    outcome: Outcome
    check_id: str | None = None
    message: str = ""
    findings: tuple[str, ...] = ()
    alert_id: int | None = None
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        """JSON-ready."""
        return {
            **self.item.to_json(),
            "outcome": self.outcome.value,
            "check_id": self.check_id,
            "message": self.message,
            "findings": list(self.findings),
            "alert_id": self.alert_id,
            "seconds": round(self.seconds, 3),
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class RunDueResult:
    """Everything one ``run-due`` did."""

    started_at: datetime
    finished_at: datetime
    results: tuple[ItemResult, ...] = field(default=())

    @property
    def ok(self) -> bool:
        """True when every due check ran and passed (also when nothing was due)."""
        return all(r.outcome is Outcome.PASSED for r in self.results)

    @property
    def alerts(self) -> int:
        """How many alerts were raised."""
        return sum(1 for r in self.results if r.alert_id is not None)

    def to_json(self) -> dict[str, Any]:
        """JSON-ready."""
        return {
            "ok": self.ok,
            "started_at": self.started_at.isoformat(),
            "finished_at": self.finished_at.isoformat(),
            "ran": len(self.results),
            "passed": sum(1 for r in self.results if r.outcome is Outcome.PASSED),
            "failed": sum(1 for r in self.results if r.outcome is Outcome.FAILED),
            "errors": sum(1 for r in self.results if r.outcome is Outcome.ERROR),
            "alerts": self.alerts,
            "results": [r.to_json() for r in self.results],
        }


def _verify_function() -> Callable[..., Verification]:
    """``affidavit.services.verify.verify_backup``, imported when first needed (a broken or
    missing verify module then fails only the verifications, not the drills)."""
    try:
        from affidavit.services.verify import verify_backup
    except ImportError as exc:
        raise OperationError(
            f"verification is not available in this installation: {exc}",
            hint="reinstall affidavit",
        ) from exc
    return verify_backup


def _run_one(
    app: App, item: DueItem, rep: Reporter, cluster: Cluster | None = None
) -> tuple[bool, str, tuple[str, ...], str]:
    """Run one check: (ok, check id, finding codes, summary); a verification's segments on
    ``cluster`` when given (drills run here)."""
    if item.kind is CheckKind.DRILL:
        rep.stage(f"drill of {item.backup_id}")
        result = drills.run_drill(app, item.backup_id, reporter=rep)
        codes = tuple(sorted({f.code for f in result.findings}))
        summary = (
            f"restored in {result.restore_seconds:.1f}s (RTO {result.rto_seconds:g}s)"
            if result.ok
            else f"drill failed: {', '.join(codes)}"
        )
        return result.ok, result.id, codes, summary
    verify_backup = _verify_function()
    sample = item.kind is CheckKind.VERIFY_SAMPLE
    rep.stage(f"{'sample' if sample else 'full'} verification of {item.backup_id}")
    verification = verify_backup(
        app,
        item.backup_id,
        against_source=False,
        sample_percent=app.settings.verify_sample_percent if sample else None,
        connected=cluster,
        reporter=rep,
    )
    codes = tuple(sorted({f.code for f in verification.findings}))
    ok = bool(verification.ok)
    summary = (
        f"verified ({verification.mode})" if ok else f"verification failed: {', '.join(codes)}"
    )
    return ok, verification.id, codes, summary


@contextmanager
def _single_run(home: Path) -> Iterator[None]:
    """One ``run-due`` per home at a time (an hourly cron job can overlap a long drill)."""
    lock = home / "run-due.lock"
    fh = lock.open("a")
    try:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise OperationError(
                "another `affidavit run-due` is running for this home",
                hint="it will pick up what is due; nothing to do now",
            ) from None
        yield
    finally:
        fh.close()  # releases the lock


def run_due(
    app: App,
    reporter: Reporter | None = None,
    *,
    post: Poster = post_json,
    cluster: str | None = None,
    cluster_tls: ClusterTls | None = None,
) -> RunDueResult:
    """Run every due check; raise an alert for each one that fails and for each overdue one
    that could not run. Never stops at the first problem. Only one run per home at a time.

    ``cluster`` (``tls://HOST:PORT``, or ``tcp://`` on loopback; ``cluster_tls``: the
    client's TLS files) sends the segments of every due verification to that Dask cluster,
    as ``verify --cluster`` does, over one connection opened first: a bad address is
    :class:`~affidavit.errors.InputError` and a scheduler that does not answer (or has no
    workers) :class:`OperationError`, both before anything is run or recorded."""
    if cluster is None:
        with _single_run(app.settings.home):
            reclaim_abandoned(app)  # a backup killed since the last run is recorded abandoned
            _sweep_samples(app)
            return _run_due(app, reporter, post=post)
    from affidavit.services.verify.cluster import Cluster as Remote
    from affidavit.services.verify.cluster import check_cluster_url

    check_cluster_url(cluster)
    with _single_run(app.settings.home):
        remote = Remote(cluster, tls=cluster_tls, timeout=app.settings.connect_timeout)
        with remote:  # connects: exit 3 before anything is recorded
            reclaim_abandoned(app)
            _sweep_samples(app)
            return _run_due(app, reporter, post=post, cluster=remote)


def _sweep_samples(app: App) -> None:
    """Remove the sealed export samples whose request ended, also when nobody acted on it
    (it expired): ``run-due`` is what a scheduler runs, so an expired request's personal data
    does not wait for the next export request or decision (docs/exports.md). Never raises."""
    from affidavit.services.requests import sweep_decided

    try:
        sweep_decided(app, _now())
    except Error:  # the catalog could not be read: the checks below say so; sweep next run
        return


def _run_due(
    app: App, reporter: Reporter | None, *, post: Poster, cluster: Cluster | None = None
) -> RunDueResult:
    rep = reporter or SilentReporter()
    started = _now()
    results: list[ItemResult] = []
    for item in due(app):
        clock = datetime.now(UTC)
        subject = f"backup:{item.backup_id}"
        try:
            try:
                ok, check_id, codes, summary = _run_one(app, item, rep, cluster)
            except Error:
                raise
            except Exception as unexpected:  # one broken check must not stop the others
                raise InternalError(
                    f"internal error: {type(unexpected).__name__}: {unexpected}"
                ) from unexpected
        except Error as exc:
            alert_id = None
            if item.overdue:
                alert = raise_alert(
                    app,
                    kind="check.overdue",
                    subject=subject,
                    summary=f"overdue {item.kind.value} of {item.backup_id} could not run: "
                    f"{exc.message}",
                    details={**item.to_json(), "error": exc.message, "hint": exc.hint},
                    post=post,
                )
                alert_id = alert.id
            results.append(
                ItemResult(
                    item=item,
                    outcome=Outcome.ERROR,
                    message=exc.message,
                    alert_id=alert_id,
                    seconds=(datetime.now(UTC) - clock).total_seconds(),
                )
            )
            continue
        alert_id = None
        if not ok:
            kind = "drill.failed" if item.kind is CheckKind.DRILL else "verification.failed"
            alert = raise_alert(
                app,
                kind=kind,
                subject=subject,
                summary=f"{item.kind.value} of {item.backup_id}: {summary}",
                details={**item.to_json(), "check_id": check_id, "findings": list(codes)},
                post=post,
            )
            alert_id = alert.id
        results.append(
            ItemResult(
                item=item,
                outcome=Outcome.PASSED if ok else Outcome.FAILED,
                check_id=check_id,
                message=summary,
                findings=codes,
                alert_id=alert_id,
                seconds=(datetime.now(UTC) - clock).total_seconds(),
            )
        )
    return RunDueResult(started_at=started, finished_at=_now(), results=tuple(results))
