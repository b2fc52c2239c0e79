"""Leases of running backups: telling a dead run from a live one, and recording the dead.

A backup is recorded ``running`` with a lease (:class:`~affidavit.models.backup.Lease`): the
host, its boot and PID namespace, the process id and the process's start time, and a
heartbeat that a thread of the run refreshes every :data:`HEARTBEAT_SECONDS` (a catalog write
without a ledger event: a heartbeat changes no state). Any later command that lists, checks
or starts backups calls :func:`reclaim_abandoned` (reads of backups through
:func:`read_reclaimed`, which costs one reader when nothing is running), which judges every
running backup:

- a run of this host, boot and PID namespace is alive exactly while its pid names a process
  that is not a zombie and has the recorded start time (``/proc/PID/stat`` field 22, so a
  reused pid does not keep a dead run alive); it is dead at once otherwise;
- a run of another host (or one whose process table cannot be read) is dead when its
  heartbeat is older than :data:`LEASE_TIMEOUT`, which is generous: a paused or partitioned
  run is not taken for dead while it may still write;
- a run recorded before leases existed is dead when it started longer than
  :data:`LEASE_TIMEOUT` ago.

A dead run is recorded ``failed`` with the reason ``abandoned`` and its artifacts, in one
transaction with its ``backup.abandoned`` event, but only when the ledger records that run
started (``backup.started``) and not ended (``backup.completed``, ``backup.failed``,
``backup.abandoned``): a ``running`` row is a copy anyone who can write the catalog can make,
so a completed backup marked running again, or a run typed in, gets nothing signed (``policy
check`` names such a row under ``ledger.integrity``). Before that, the unfinished writes it left
in a folder vault (``.NAME.<random>.partial``) are removed; those the vault refuses to give
up are named in the event and retried by later commands (``backup.partials_removed`` once
something changed). The ``backup.abandoned`` control reports abandoned runs from these
events (:func:`abandoned_run_facts`).
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from types import MappingProxyType
from typing import Any, TypeVar

from affidavit.catalog.store import UnitOfWork
from affidavit.constants import INGESTED_LABEL
from affidavit.errors import Error, VaultError
from affidavit.models.backup import Backup, BackupStatus, Lease
from affidavit.models.inventory import Vault
from affidavit.models.ledger import Event
from affidavit.policy.facts import AbandonedRunFacts
from affidavit.private_temp import sweep
from affidavit.processes import ProcessState, boot_id, pid_namespace, process_state
from affidavit.services.backends import vault_backend
from affidavit.services.context import App
from affidavit.services.policy_vouch import event_time, read_events
from affidavit.vaults.base import ArtifactNotFound, EntryKind

HEARTBEAT_SECONDS = 30.0
"""How often a run refreshes its lease."""
LEASE_TIMEOUT = timedelta(minutes=15)
"""How old a heartbeat must be before a run that cannot be looked up (another host, another
PID namespace, no ``/proc``) counts as dead: thirty missed heartbeats."""

_ABANDONED = "backup.abandoned"
_PARTIALS_REMOVED = "backup.partials_removed"
_LEFT_MEMO = "leases.partials_left"
_T = TypeVar("_T")


def _now() -> datetime:
    return datetime.now(UTC)


# -- who we are --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HostIdentity:
    """The process table this process lives in: host name, boot, PID namespace."""

    host: str
    boot_id: str | None
    pid_namespace: str | None

    def can_look_up(self, lease: Lease) -> bool:
        """Whether ``lease.pid`` names a process of this process table."""
        return (
            lease.host == self.host
            and self.boot_id is not None
            and self.pid_namespace is not None
            and lease.boot_id == self.boot_id
            and lease.pid_namespace == self.pid_namespace
        )


def this_host() -> HostIdentity:
    """This process's host name, boot id and PID namespace (None where the system does not
    say: then no lease is judged by its pid)."""
    return HostIdentity(host=socket.gethostname(), boot_id=boot_id(), pid_namespace=pid_namespace())


def new_lease(backup_id: str, at: datetime) -> Lease:
    """The lease this process takes on a backup it starts at ``at``."""
    here = this_host()
    own = process_state(os.getpid())
    return Lease(
        backup_id=backup_id,
        host=here.host,
        boot_id=here.boot_id,
        pid_namespace=here.pid_namespace,
        pid=os.getpid(),
        process_start=own.start if own is not None else None,
        started_at=at,
        heartbeat_at=at,
    )


def lease_json(lease: Lease) -> dict[str, Any]:
    """A lease as an event's details keep it (for runs whose lease lives in the ledger)."""
    return {
        "host": lease.host,
        "boot_id": lease.boot_id,
        "pid_namespace": lease.pid_namespace,
        "pid": lease.pid,
        "process_start": lease.process_start,
        "started_at": lease.started_at.isoformat(),
    }


def lease_from_json(key: str, data: object) -> Lease | None:
    """The lease :func:`lease_json` wrote (``key``: the run it is for), or None when ``data``
    is not one (then the run is judged by its age alone)."""
    if not isinstance(data, Mapping):
        return None
    try:
        started = datetime.fromisoformat(str(data["started_at"]))
        pid, start = data["pid"], data.get("process_start")
        if not isinstance(pid, int) or isinstance(pid, bool) or started.tzinfo is None:
            return None
        if start is not None and (not isinstance(start, int) or isinstance(start, bool)):
            return None
        return Lease(
            backup_id=key,
            host=str(data["host"]),
            boot_id=None if data.get("boot_id") is None else str(data["boot_id"]),
            pid_namespace=None if data.get("pid_namespace") is None else str(data["pid_namespace"]),
            pid=pid,
            process_start=start,
            started_at=started,
            heartbeat_at=started,
        )
    except (KeyError, TypeError, ValueError):
        return None


# -- judging a lease ----------------------------------------------------------------------------


def _ago(delta: timedelta) -> str:
    seconds = int(max(delta.total_seconds(), 0))
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    return f"{seconds / 3600:.1f} h"


def dead_because(
    lease: Lease | None,
    *,
    started_at: datetime,
    now: datetime,
    here: HostIdentity,
    probe: Callable[[int], ProcessState | None] = process_state,
    timeout: timedelta = LEASE_TIMEOUT,
) -> str | None:
    """Why the run holding ``lease`` is dead, in words; None while it may be alive."""
    if lease is None:
        if now - started_at > timeout:
            return (
                f"it has no lease (recorded before leases existed) and started "
                f"{_ago(now - started_at)} ago"
            )
        return None
    who = f"process {lease.pid} on {lease.host}"
    if here.can_look_up(lease):
        found = probe(lease.pid)
        if found is None:
            return f"{who} is gone"
        if found.exited:
            return f"{who} has exited"
        if found.start is not None and lease.process_start is not None:
            if found.start != lease.process_start:
                return f"{who} is gone (its pid now belongs to another process)"
            return None  # the very process that took the lease
    age = now - lease.heartbeat_at
    if age > timeout:
        return f"no heartbeat from {who} for {_ago(age)} (the limit is {_ago(timeout)})"
    if -age > timeout:  # no clock is that far off: a forged heartbeat keeps nothing alive
        return f"the heartbeat of {who} is dated {_ago(-age)} in the future"
    return None


# -- the heartbeat -----------------------------------------------------------------------------


class Heartbeat:
    """Refreshes a run's lease every ``every`` seconds from a daemon thread until
    :meth:`stop`. A failed refresh is skipped (the next one may succeed); a run whose backup
    was meanwhile recorded abandoned by another process finds out at its next catalog write
    (see ``services.backup``), not here."""

    def __init__(self, app: App, backup_id: str, *, every: float = HEARTBEAT_SECONDS) -> None:
        self._app = app
        self._backup_id = backup_id
        self._every = every
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start beating."""
        self._thread = threading.Thread(
            target=self._run, name=f"affidavit-lease-{self._backup_id}", daemon=True
        )
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self._every):
            if not self.beat():
                return

    def beat(self) -> bool:
        """Refresh the lease now; False once the backup is no longer running."""
        try:
            with self._app.change() as change:  # no event: a heartbeat changes no state
                return change.uow.backups.heartbeat(self._backup_id, at=_now())
        except Exception:  # a background thread: never a traceback; the next beat may succeed
            return True  # (the catalog was busy or unreachable)

    def stop(self) -> None:
        """Stop beating (idempotent)."""
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=60)


# -- unfinished writes in the vault ---------------------------------------------------------------


def backup_prefix(backup: Backup) -> str:
    """The folder of a backup's artifacts in its vault: ``SOURCE/BACKUP_ID``."""
    return f"{backup.source or INGESTED_LABEL}/{backup.id}"


def sweep_unfinished(vault: Vault, prefix: str) -> tuple[list[str], list[tuple[str, str]]]:
    """Remove the unfinished writes a dead run left under ``prefix`` (what the vault reports
    as such: a folder vault's ``.NAME.<random>.partial`` files); return the paths removed and
    ``(path, why)`` of those the vault refused to give up. Vaults whose unfinished writes are
    invisible (an S3 upload that never completed is not an object) report none."""
    backend = vault_backend(vault)
    removed: list[str] = []
    refused: list[tuple[str, str]] = []
    try:
        entries = [e for e in backend.foreign(prefix) if e.kind is EntryKind.UNFINISHED_WRITE]
    except VaultError as exc:
        return [], [(prefix, exc.message)]
    for entry in entries:
        try:
            backend.remove_unfinished(entry)
        except ArtifactNotFound:
            continue
        except Error as exc:
            refused.append((entry.path, exc.message))
            continue
        removed.append(entry.path)
    return sorted(removed), sorted(refused)


# -- reclaiming dead runs ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Abandonment:
    """A run recorded abandoned by :func:`reclaim_abandoned`."""

    backup_id: str
    why: str
    partials_removed: tuple[str, ...]
    partials_left: tuple[tuple[str, str], ...]  # (path, why the vault kept it)
    seq: int


def _lease_json(lease: Lease | None) -> dict[str, Any] | None:
    if lease is None:
        return None
    return {
        "host": lease.host,
        "pid": lease.pid,
        "process_start": lease.process_start,
        "started_at": lease.started_at.isoformat(),
        "heartbeat_at": lease.heartbeat_at.isoformat(),
    }


def reclaim_abandoned(
    app: App,
    *,
    now: datetime | None = None,
    here: HostIdentity | None = None,
    probe: Callable[[int], ProcessState | None] = process_state,
) -> list[Abandonment]:
    """Record every running backup whose run is dead as failed (abandoned), and retry the
    removal of unfinished writes that earlier abandonments could not remove. Cheap when
    nothing is running and nothing is left to retry: one reader, two queries (the running
    backups, and the newest abandonment event: see :func:`_partials_left`)."""
    sweep()  # private temporary folders (plaintext spools) of dead processes
    when = now or _now()
    with app.read() as uow:
        running = uow.backups.running()
        left = _partials_left(uow)
    out = []
    local = here if here is not None or not running else this_host()
    dead = []
    for backup_id, started_at, lease in running:
        assert local is not None
        why = dead_because(lease, started_at=started_at, now=when, here=local, probe=probe)
        if why is not None:
            dead.append((backup_id, lease, why))
    if dead:
        # a `running` row is a copy anyone who can write the catalog can make: only a run the
        # ledger records started and not yet ended is recorded abandoned; any other row is
        # left alone, unsigned (`policy check` reports it under ledger.integrity)
        with app.read() as uow:
            unfinished = _unfinished_runs(uow, {backup_id for backup_id, _, _ in dead})
        for backup_id, lease, why in dead:
            if backup_id in unfinished:
                done = _abandon(app, backup_id, lease, why, when)
                if done is not None:
                    out.append(done)
    if left:
        _retry_partials(app, left)
    return out


READ_SWEEP_EVERY = 10.0
_read_sweep = {"at": float("-inf")}
_read_sweep_lock = threading.Lock()


def _sweep_for_reads() -> None:
    now = time.monotonic()
    with _read_sweep_lock:
        if now - _read_sweep["at"] < READ_SWEEP_EVERY:
            return
        _read_sweep["at"] = now
    sweep()


def read_reclaimed(app: App, read: Callable[[UnitOfWork], _T]) -> _T:
    """``read(uow)`` once every dead run is recorded abandoned (:func:`reclaim_abandoned`):
    in one reader when it finds no backup running and no unfinished write left to retry
    (then there is nothing to reclaim, and the read sees the same snapshot), else after
    :func:`reclaim_abandoned`, in a reader of its own. Private temporary folders of dead
    processes are swept first either way, at most once every :data:`READ_SWEEP_EVERY`
    seconds in a process (a server reads backups many times a second; reclaiming a dead
    run and every verification and drill sweep each time)."""
    _sweep_for_reads()
    with app.read() as uow:
        if not uow.backups.running() and not _partials_left(uow):
            return read(uow)
    reclaim_abandoned(app)
    with app.read() as uow:
        return read(uow)


def _unfinished_runs(uow: UnitOfWork, backup_ids: set[str]) -> set[str]:
    """Those of ``backup_ids`` whose run the ledger records started (``backup.started``) and
    not ended (no ``backup.completed``, ``backup.failed`` or ``backup.abandoned``). One query
    per action; an entry that does not parse is skipped (``ledger verify`` reports it)."""
    subjects = {f"backup:{backup_id}": backup_id for backup_id in backup_ids}
    started = {e.subject for e in read_events(uow.ledger, "backup.started")}
    ended: set[str] = set()
    for action in ("backup.completed", "backup.failed", _ABANDONED):
        ended.update(e.subject for e in read_events(uow.ledger, action))
    return {subjects[s] for s in subjects if s in started and s not in ended}


def _abandon(
    app: App, backup_id: str, lease: Lease | None, why: str, now: datetime
) -> Abandonment | None:
    with app.read() as uow:
        backup = uow.backups.get(backup_id)
    removed, refused = _sweep(app, backup)
    with app.change() as change:
        backups = change.uow.backups
        # another command may have been first, or the run may have beaten meanwhile
        if (
            backups.status(backup_id) is not BackupStatus.RUNNING
            or backups.lease(backup_id) != lease
        ):
            return None
        backups.fail(backup_id, finished_at=now, error=f"abandoned: {why}")
        event = change.record(
            _ABANDONED,
            f"backup:{backup_id}",
            {
                "reason": "abandoned",
                "why": why,
                "source": backup.source,
                "vault": backup.vault,
                "lease": _lease_json(lease),
                "artifacts_written": [a.path for a in backup.artifacts],
                "partials_removed": removed,
                "partials_left": [{"path": p, "error": e} for p, e in refused],
            },
        )
    return Abandonment(
        backup_id=backup_id,
        why=why,
        partials_removed=tuple(removed),
        partials_left=tuple(refused),
        seq=event.seq,
    )


@dataclass(slots=True)
class _Record:
    """What the ledger says of one abandoned run."""

    event: Event
    left: tuple[str, ...]


def _records(uow: UnitOfWork) -> dict[str, _Record]:
    """Every abandoned run by backup id, with the unfinished writes still left after the
    newest ``backup.partials_removed`` event of it. An entry that does not parse is left to
    ``ledger verify`` to report."""
    out: dict[str, _Record] = {}
    found = [*read_events(uow.ledger, _ABANDONED), *read_events(uow.ledger, _PARTIALS_REMOVED)]
    for event in sorted(found, key=lambda e: e.seq):
        backup_id = event.subject.removeprefix("backup:")
        key = "partials_left" if event.action == _ABANDONED else "left"
        items = event.details.get(key)
        left = tuple(
            str(item.get("path"))
            for item in (items if isinstance(items, list) else ())
            if isinstance(item, dict)
        )
        if event.action == _ABANDONED:
            out[backup_id] = _Record(event=event, left=left)
        elif backup_id in out:
            out[backup_id].left = left
    return out


def _sweep(app: App, backup: Backup) -> tuple[list[str], list[tuple[str, str]]]:
    """:func:`sweep_unfinished` for a backup; a vault that cannot be reached (or is no longer
    registered) keeps everything, which is reported as such."""
    prefix = backup_prefix(backup)
    try:
        with app.read() as uow:
            vault = uow.vaults.get(backup.vault)
        return sweep_unfinished(vault, prefix)
    except Error as exc:
        return [], [(prefix, exc.message)]


@dataclass(frozen=True, slots=True)
class _Left:
    """The unfinished writes left of each abandoned run (those with some), as of the newest
    ``backup.abandoned`` / ``backup.partials_removed`` entry (``mark``: seq and leaf hash)."""

    mark: tuple[int, bytes] | None
    left: Mapping[str, tuple[str, ...]]


def _partials_left(uow: UnitOfWork) -> Mapping[str, tuple[str, ...]]:
    """The unfinished writes left of each abandoned run that has some (:func:`_records`),
    by backup id. Only those two actions' events change it, so what a reader found is kept
    for the catalog with the newest of them, and used again while that is still the newest:
    one query (an index seek per action) instead of reading every abandonment."""
    mark = uow.ledger.newest_of((_ABANDONED, _PARTIALS_REMOVED))
    kept = uow.catalog_memo.get(_LEFT_MEMO)
    if isinstance(kept, _Left) and kept.mark == mark:
        return kept.left
    left = MappingProxyType({bid: r.left for bid, r in _records(uow).items() if r.left})
    if uow.read_only:
        uow.catalog_memo[_LEFT_MEMO] = _Left(mark=mark, left=left)
    return left


def _retry_partials(app: App, pending: Mapping[str, tuple[str, ...]]) -> None:
    for backup_id, was_left in pending.items():
        try:
            with app.read() as uow:
                backup = uow.backups.get(backup_id)
        except Error:
            continue  # no such backup in the catalog: the ledger's entry stays the report
        removed, refused = _sweep(app, backup)
        left = tuple(p for p, _ in refused)
        if set(left) == set(was_left) and not removed:
            continue
        with app.change() as change:
            latest = _records(change.uow).get(backup_id)
            if latest is None or set(latest.left) != set(was_left):
                continue  # another command recorded it first
            change.record(
                _PARTIALS_REMOVED,
                f"backup:{backup_id}",
                {
                    "removed": removed,
                    "gone": sorted(set(was_left) - set(left) - set(removed)),
                    "left": [{"path": p, "error": e} for p, e in refused],
                },
            )


def abandoned_run_facts(app: App) -> tuple[AbandonedRunFacts, ...]:
    """The abandoned runs as the ledger records them (for the ``backup.abandoned`` control)."""
    with app.read() as uow:
        records = _records(uow)
    facts = []
    for backup_id, record in sorted(records.items(), key=lambda item: item[1].event.seq):
        details = record.event.details
        source = details.get("source")
        facts.append(
            AbandonedRunFacts(
                backup_id=backup_id,
                source=source if isinstance(source, str) else None,
                at=event_time(record.event),
                why=str(details.get("why") or "its process died"),
                seq=record.event.seq,
                leftovers=record.left,
            )
        )
    return tuple(facts)
