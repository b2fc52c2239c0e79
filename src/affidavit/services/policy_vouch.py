"""The facts of backups, verifications and drills as the ledger vouches for them.

The catalog's rows are copies that anyone who can write the database can edit; the ledger's
events are signed into a Merkle tree that ``ledger.integrity`` verifies. So a policy check
takes every fact a control relies on from the event that recorded it and uses the row only
where the two agree:

- a backup: its status (``backup.completed``, ``backup.deleted``), source, vault, retention
  and encryption (``backup.started``), datasets (``backup.completed``), classification and
  start (the manifest whose SHA-256 ``backup.completed`` recorded), completion and deletion
  times, and legal holds (``hold.added`` / ``hold.released``);
- a verification: its backup, kind, outcome and time (``verification.completed``);
- a drill: its backup, outcome, restore time, fingerprint match and time (``drill.completed``).

Each row that disagrees with its event, each row that no event vouches for (it is not
counted) and each event whose row is gone (the event's version is used) becomes a
:class:`~affidavit.policy.facts.CatalogMismatch`, which ``ledger.integrity`` reports by row.

A row's time is its event's when it lies within :data:`RECORD_LAG` before the event (the
service takes the time, then signs and commits): within that window the row's exact value is
kept, outside it the event's time is used. Events are read with one query per action
(:meth:`~affidavit.catalog.repository.LedgerRepository.find`), never per row.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from affidavit.catalog.repository import LedgerRepository
from affidavit.constants import INGESTED_LABEL, Classification
from affidavit.crypto.digest import sha256_hex
from affidavit.errors import FormatError
from affidavit.ledger.attestation import Statement
from affidavit.ledger.entries import parse_entry as parse_entry  # noqa: PLC0414 (re-export)
from affidavit.models.backup import Backup, Hold
from affidavit.models.checks import Drill, Verification
from affidavit.models.ledger import Event
from affidavit.models.manifest import BackupManifest
from affidavit.policy.facts import BackupFacts, CatalogMismatch, CheckFacts

#: how long before its event a row's time may have been taken (signing, lock waits, a KMS call)
RECORD_LAG = timedelta(minutes=10)
#: how far after its event a row's time may lie (none is legitimate; this absorbs rounding)
CLOCK_SKEW = timedelta(seconds=1)

_BACKUP_ACTIONS = ("backup.started", "backup.completed", "backup.failed", "backup.deleted")
_HOLD_ACTIONS = ("hold.added", "hold.released")
_CHECK_ACTIONS = ("verification.completed", "drill.completed")
ACTIONS = (*_BACKUP_ACTIONS, *_HOLD_ACTIONS, *_CHECK_ACTIONS)
_NEVER = datetime.min.replace(tzinfo=UTC)  # a time the ledger does not give: never recent


@dataclass(slots=True)
class LedgerRecords:
    """The ledger events that vouch for backups, holds, verifications and drills, by id."""

    started: dict[str, Event] = field(default_factory=dict)  # backup id ->
    completed: dict[str, Event] = field(default_factory=dict)
    failed: dict[str, Event] = field(default_factory=dict)
    deleted: dict[str, Event] = field(default_factory=dict)
    holds: dict[str, list[Event]] = field(default_factory=dict)  # backup id -> in seq order
    verifications: dict[str, Event] = field(default_factory=dict)  # verification id ->
    drills: dict[str, Event] = field(default_factory=dict)  # drill id ->

    @classmethod
    def read(cls, ledger: LedgerRepository) -> LedgerRecords:
        """One query per action (:func:`read_events`)."""
        records = cls()
        for action in ACTIONS:
            for event in read_events(ledger, action):
                records.add(event)
        for events in records.holds.values():
            events.sort(key=lambda e: e.seq)  # placed and released came by separate queries
        return records

    def add(self, event: Event) -> None:
        """File one event (the first of an id wins; ids are unique in a verified ledger)."""
        backup_id = event.subject.removeprefix("backup:")
        if event.action in _HOLD_ACTIONS:
            self.holds.setdefault(backup_id, []).append(event)
            return
        if event.action == "verification.completed":
            into, key = self.verifications, event.details.get("verification_id")
        elif event.action == "drill.completed":
            into, key = self.drills, event.details.get("drill_id")
        else:
            into = {
                "backup.started": self.started,
                "backup.completed": self.completed,
                "backup.failed": self.failed,
                "backup.deleted": self.deleted,
            }[event.action]
            key = backup_id
        if isinstance(key, str):
            into.setdefault(key, event)


@dataclass(frozen=True, slots=True, kw_only=True)
class Vouched:
    """The facts as the ledger vouches for them, and every row that disagrees."""

    backups: tuple[BackupFacts, ...]
    verifications: tuple[CheckFacts, ...]
    drills: tuple[CheckFacts, ...]
    mismatches: tuple[CatalogMismatch, ...]


def vouch(
    records: LedgerRecords,
    *,
    backups: Sequence[tuple[Backup, BackupFacts]],
    verifications: Sequence[Verification],
    drills: Sequence[Drill],
    levels: Mapping[tuple[str, str], Classification],
) -> Vouched:
    """Reconcile the rows (a backup with the facts its row gives) with ``records``.

    ``levels``: the inventory's classification of each (source, dataset), for a backup whose
    row is gone or whose manifest does not match what the ledger signed."""
    notes = _Notes()
    return Vouched(
        backups=tuple(_backups(records, backups, levels, notes)),
        verifications=tuple(_verifications(records, verifications, notes)),
        drills=tuple(_drills(records, drills, notes)),
        mismatches=notes.mismatches(),
    )


class _Notes:
    """The differences found, gathered per subject (one result per row)."""

    def __init__(self) -> None:
        self._by_subject: dict[str, tuple[list[str], int | None]] = {}

    def add(self, subject: str, message: str, seq: int | None = None) -> None:
        messages, first = self._by_subject.setdefault(subject, ([], seq))
        messages.append(message)
        if first is None and seq is not None:
            self._by_subject[subject] = (messages, seq)

    def time(
        self,
        subject: str,
        what: str,
        row: datetime | None,
        event: Event,
        *,
        lag: timedelta | None = RECORD_LAG,
    ) -> datetime:
        """The row's time when it fits its event's (at most ``lag`` before it, ``None``: any
        time before it; not after it), else the event's, and the difference is noted."""
        at = _event_time(event)
        if row is not None and row <= at + CLOCK_SKEW and (lag is None or row >= at - lag):
            return row
        self.add(subject, _differs(what, row, at, event), event.seq)
        return at

    def mismatches(self) -> tuple[CatalogMismatch, ...]:
        return tuple(
            CatalogMismatch(subject=subject, message="; ".join(messages), seq=seq)
            for subject, (messages, seq) in self._by_subject.items()
        )


# -- helpers ----------------------------------------------------------------------------------


def read_events(ledger: LedgerRepository, action: str) -> list[Event]:
    """The events of ``action``, in seq order, with one query. Entries are parsed (the
    ``action`` column is only a copy): one that does not parse (not JSON, not an event, nested
    too deeply) or whose signed action is another is skipped, never raised: ``ledger verify``
    reports it, and so ``ledger.integrity`` fails in the same check."""
    found = []
    for stored in ledger.find(action=action):
        event = parse_entry(stored.entry)
        if event is not None and event.action == action:
            found.append(event)
    return found


def event_time(event: Event) -> datetime:
    """When the event was recorded (its signed time; a time it does not give: never)."""
    return _event_time(event)


def signed_time(value: Any) -> datetime | None:
    """A time an event's details give (RFC 3339 with an offset), or None."""
    return _time(value)


def signed_source(started: Event) -> str | None:
    """The source ``backup.started`` names (None: an ingest that named none)."""
    label = _str(started.details.get("source"))
    return None if label in (None, INGESTED_LABEL) else label


def _time(text: Any) -> datetime | None:
    if not isinstance(text, str):
        return None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else None


def _event_time(event: Event) -> datetime:
    return _time(event.time) or _NEVER  # a verified ledger has only valid times


def at_seq(event: Event) -> str:
    """How a message names an event: ``ACTION (ledger seq N)``."""
    return f"{event.action} (ledger seq {event.seq})"


def _show(value: Any) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    return repr(value) if isinstance(value, str) else str(value)


def _differs(what: str, row: Any, signed: Any, event: Event) -> str:
    return f"{what} is {_show(row)} in the catalog but {_show(signed)} in {at_seq(event)}"


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _highest(levels: Iterable[Classification]) -> Classification | None:
    order = list(Classification)
    return max(levels, key=order.index, default=None)


def _inventory(
    levels: Mapping[tuple[str, str], Classification], source: str | None, names: Iterable[str]
) -> list[Classification]:
    """The inventory's classification of the named datasets of ``source``."""
    if source is None:
        return []
    return [levels[(source, name)] for name in names if (source, name) in levels]


def _levels(values: Iterable[Any]) -> list[Classification]:
    known = {c.value: c for c in Classification}
    return [known[v] for v in values if isinstance(v, str) and v in known]


# -- backups ----------------------------------------------------------------------------------


def _status(records: LedgerRecords, backup_id: str) -> tuple[str, Event]:
    """The backup's status as the ledger records it, and the event that says so."""
    for status, events in (
        ("deleted", records.deleted),
        ("complete", records.completed),
        ("failed", records.failed),
    ):
        if backup_id in events:
            return status, events[backup_id]
    return "running", records.started[backup_id]


def _backups(
    records: LedgerRecords,
    rows: Sequence[tuple[Backup, BackupFacts]],
    levels: Mapping[tuple[str, str], Classification],
    notes: _Notes,
) -> Iterable[BackupFacts]:
    seen = set()
    for row, facts in rows:
        seen.add(row.id)
        if row.id not in records.started:
            notes.add(facts.subject, f"the catalog holds this {row.status.value} backup, but no "
                      "backup.started event records it: not counted")  # fmt: skip
            continue
        yield _backup(records, row, facts, levels, notes)
    for backup_id, started in records.started.items():
        if backup_id not in seen:
            yield _lost_backup(records, backup_id, started, levels, notes)


def _backup(
    records: LedgerRecords,
    row: Backup,
    facts: BackupFacts,
    levels: Mapping[tuple[str, str], Classification],
    notes: _Notes,
) -> BackupFacts:
    """The row's facts, each checked against the events of its backup (the ledger wins)."""
    subject, started = facts.subject, records.started[row.id]
    status, by = _status(records, row.id)

    def note(message: str, event: Event) -> None:
        notes.add(subject, message, event.seq)

    # running and failed may differ (a run found dead is failed without a completion); a
    # complete or deleted status is the ledger's to give
    if status != row.status.value and {status, row.status.value} & {"complete", "deleted"}:
        note(_differs("the status", row.status.value, status, by), by)
        facts = replace(facts, status=status, deleted_at=None)
    d = started.details
    label = d.get("source")
    if label != (row.source if row.source is not None else INGESTED_LABEL):
        note(_differs("the source", row.source, label, started), started)
        facts = replace(facts, source=None if label == INGESTED_LABEL else _str(label))
    if d.get("vault") != row.vault:
        note(_differs("the vault", row.vault, d.get("vault"), started), started)
        facts = replace(facts, vault=_str(d.get("vault")) or "?")
    retain = _time(d.get("retain_until"))
    if retain != row.retain_until:
        note(_differs("retain_until", row.retain_until, d.get("retain_until"), started), started)
        facts = replace(facts, retain_until=retain or _NEVER)
    kek = d.get("kek")
    signed_kek = kek.get("id") if isinstance(kek, dict) else None
    if d.get("recipient") != row.recipient:  # the KEK may change: rotation re-wraps
        note(_differs("the age recipient", row.recipient, d.get("recipient"), started), started)
    facts = replace(facts, encrypted=bool(d.get("recipient")) and bool(signed_kek))
    completed = records.completed.get(row.id)
    if status in ("complete", "deleted") and completed is not None:
        facts = _completion(completed, row, facts, levels, notes)
    if status == "deleted":  # the vault's deletions come between the row's time and the event
        deleted_at = notes.time(subject, "the deletion time", row.deleted_at,
                                records.deleted[row.id], lag=None)  # fmt: skip
        facts = replace(facts, deleted_at=deleted_at)
    holds = _holds(records.holds.get(row.id, []), row, subject, notes)
    return replace(facts, holds=holds)


def _completion(
    completed: Event,
    row: Backup,
    facts: BackupFacts,
    levels: Mapping[tuple[str, str], Classification],
    notes: _Notes,
) -> BackupFacts:
    """Completion time, datasets, classification and start of a complete (or deleted) backup,
    from ``backup.completed`` and the manifest whose SHA-256 it recorded."""

    def note(message: str) -> None:
        notes.add(facts.subject, message, completed.seq)

    finished_at = notes.time(facts.subject, "the completion time", row.finished_at, completed)
    facts = replace(facts, seq=completed.seq, finished_at=finished_at)
    signed = completed.details.get("datasets")
    signed = signed if isinstance(signed, dict) else {}
    mine = {ds.name: ds.fingerprint for ds in row.datasets}
    if mine != signed:
        note(f"the datasets and their fingerprints differ from {at_seq(completed)}")
        facts = replace(facts, datasets=tuple(str(name) for name in signed))
    digest = completed.details.get("manifest_sha256")
    signed = _manifest(row, digest)
    inventory = _inventory(levels, facts.source, facts.datasets)
    if signed is None:
        note(f"the manifest is not the one whose SHA-256 {at_seq(completed)} recorded")
        # the classification cannot be trusted: the strictest of the row's and the inventory's
        row_levels = _levels(ds.classification for ds in row.datasets)
        strictest = _highest([*row_levels, *inventory, facts.classification])
        return replace(facts, classification=strictest or facts.classification)
    if signed.levels != {ds.name: ds.classification for ds in row.datasets}:
        note(f"the datasets' classification differs from the manifest {at_seq(completed)} signed")
    level = _highest(_levels(signed.levels.values())) or _highest(inventory)
    facts = replace(facts, classification=level or Classification.INTERNAL)
    started_at = signed.started_at
    if started_at is not None and started_at != row.started_at:
        note(f"the start is {row.started_at.isoformat()} in the catalog but "
             f"{started_at.isoformat()} in the manifest {at_seq(completed)} signed")  # fmt: skip
        facts = replace(facts, started_at=started_at)
    return facts


@dataclass(frozen=True, slots=True)
class _Signed:
    """What the facts take from a backup's manifest: each dataset's classification and the
    start."""

    levels: dict[Any, Any]  # dataset name -> classification
    started_at: datetime | None


def _manifest(row: Backup, digest: Any) -> _Signed | None:
    """The signed manifest's facts when the row's manifest is the one with ``digest`` (the
    SHA-256 that ``backup.completed`` recorded: these are the bytes the key signed)."""
    if not isinstance(digest, str) or row.manifest is None or row.manifest_sha256 != digest:
        return None
    if sha256_hex(row.manifest) != digest:
        return None
    try:
        manifest = BackupManifest.from_predicate(Statement.from_json(row.manifest).predicate)
    except (FormatError, RecursionError):  # PredicateError is a FormatError
        return _partial_manifest(row.manifest)
    return _Signed({d.name: d.classification for d in manifest.datasets}, manifest.started_at)


def _partial_manifest(data: bytes) -> _Signed | None:
    """The facts of a statement whose digest the ledger recorded but that is no manifest of
    this version, read member by member as far as it goes. affidavit never signs one; the
    hand-made statements of tests/unit/services/test_policy_vouch.py are such."""
    try:
        statement = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        return None
    predicate = statement.get("predicate") if isinstance(statement, dict) else None
    if not isinstance(predicate, dict):
        return None
    entries = predicate.get("datasets")
    entries = [e for e in entries if isinstance(e, dict)] if isinstance(entries, list) else []
    levels = {e.get("name"): e.get("classification") for e in entries}
    return _Signed(levels, _time(predicate.get("started_at")))


def _lost_backup(
    records: LedgerRecords,
    backup_id: str,
    started: Event,
    levels: Mapping[tuple[str, str], Classification],
    notes: _Notes,
) -> BackupFacts:
    """A backup the ledger records and the catalog no longer holds, rebuilt from its events."""
    status, by = _status(records, backup_id)
    subject = f"backup:{backup_id}"
    notes.add(subject, f"missing from the catalog: the ledger records it ({at_seq(started)}; "
              f"{status} by {at_seq(by)})", started.seq)  # fmt: skip
    d = started.details
    source = signed_source(started)
    completed = records.completed.get(backup_id)
    names = completed.details.get("datasets") if completed is not None else None
    datasets = tuple(str(n) for n in names) if isinstance(names, dict) else ()
    inventory = _inventory(levels, source, datasets)
    kek = d.get("kek")
    deleted = records.deleted.get(backup_id)
    ended = completed or records.failed.get(backup_id)
    return BackupFacts(
        id=backup_id,
        source=source,
        vault=_str(d.get("vault")) or "?",
        status=status,
        started_at=_event_time(started),
        finished_at=_event_time(ended) if ended is not None else None,
        retain_until=_time(d.get("retain_until")) or _event_time(started),
        datasets=datasets,
        classification=_highest(inventory) or Classification.INTERNAL,
        encrypted=bool(d.get("recipient")) and isinstance(kek, dict) and bool(kek.get("id")),
        deleted_at=_event_time(deleted) if deleted is not None else None,
        holds=_holds(records.holds.get(backup_id, []), None, subject, notes),
        seq=completed.seq if completed is not None else None,
    )


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _holds(
    events: Sequence[Event], row: Backup | None, subject: str, notes: _Notes
) -> tuple[tuple[datetime, datetime | None], ...]:
    """``(placed, released)`` of every hold the ledger records (``hold.added``, then
    ``hold.released`` of the same case), with the row's times where they agree; a hold the
    catalog lacks, adds, or releases otherwise is noted."""
    signed: dict[str, list[list[Event]]] = {}  # case -> [[added, released?], ...]
    for event in events:
        held = signed.setdefault(str(event.details.get("case")), [])
        if event.action == "hold.added":
            held.append([event])
        elif open_ := [h for h in held if len(h) == 1]:
            open_[0].append(event)
    kept: dict[str, list[Hold]] = {}
    for placed_hold in row.holds if row is not None else ():
        kept.setdefault(placed_hold.case_id, []).append(placed_hold)
    out: list[tuple[datetime, datetime | None]] = []
    for case in sorted(set(signed) | set(kept)):
        ledger, catalog = signed.get(case, []), sorted(kept.get(case, []), key=_placed)
        if row is not None and len(ledger) != len(catalog):
            seq = ledger[0][0].seq if ledger else None
            notes.add(subject, f"hold {case}: {len(catalog)} in the catalog but {len(ledger)} "
                      "in the ledger (hold.added)", seq)  # fmt: skip
        for i, (added, *released) in enumerate(ledger):
            hold = catalog[i] if i < len(catalog) else None
            if hold is None:
                out.append((_event_time(added), _event_time(released[0]) if released else None))
                continue
            placed = notes.time(subject, f"hold {case}: placed", hold.created_at, added)
            if released:
                ended = notes.time(subject, f"hold {case}: released", hold.released_at,
                                   released[0])  # fmt: skip
            else:
                ended = None
                if hold.released_at is not None:
                    notes.add(subject, f"hold {case}: released at "
                              f"{hold.released_at.isoformat()} in the catalog but active in the "
                              "ledger (no hold.released)", added.seq)  # fmt: skip
            out.append((placed, ended))
    return tuple(out)


def _placed(hold: Hold) -> datetime:
    return hold.created_at


@dataclass(frozen=True, slots=True, kw_only=True)
class Protection:
    """What keeps a backup from deletion, as the ledger records it."""

    retain_until: datetime | None  # from ``backup.started`` (None: no event says)
    held: tuple[str, ...]  # cases of holds added and not released


def protection(ledger: LedgerRepository, backup_id: str) -> Protection:
    """The retention and active legal holds of ``backup_id`` according to its signed events
    (``backup.started``, ``hold.added``, ``hold.released``), for a deletion to check the
    catalog's copies against: a retention shortened or a hold deleted in the catalog does not
    make a backup deletable."""
    records = LedgerRecords()
    subject = f"backup:{backup_id}"
    for action in ("backup.started", *_HOLD_ACTIONS):
        for event in read_events(ledger, action):
            if event.subject == subject:
                records.add(event)
    started = records.started.get(backup_id)
    retain = _time(started.details.get("retain_until")) if started is not None else None
    open_cases: dict[str, int] = {}
    for event in sorted(records.holds.get(backup_id, []), key=lambda e: e.seq):
        case = str(event.details.get("case"))
        step = 1 if event.action == "hold.added" else -1
        open_cases[case] = max(0, open_cases.get(case, 0) + step)
    return Protection(
        retain_until=retain, held=tuple(sorted(c for c, n in open_cases.items() if n > 0))
    )


# -- verifications and drills ----------------------------------------------------------------


def _checks(  # noqa: PLR0917 - two call sites, each names every argument's role
    kind: str,
    events: Mapping[str, Event],
    rows: Sequence[Verification] | Sequence[Drill],
    notes: _Notes,
    differences: Callable[[Any, Event], list[str]],
    facts: Callable[[str, Event, datetime], CheckFacts],
) -> Iterable[CheckFacts]:
    """The facts of verifications or drills (``kind``) from their ``KIND.completed`` events:
    a row agreeing with its event keeps its own time, a row without an event is not counted,
    an event without a row counts; each difference (the backup, the result, and what
    ``differences`` adds) is noted against the row."""
    seen = set()
    for row in rows:
        subject = f"{kind}:{row.id}"
        event = events.get(row.id)
        if event is None:
            notes.add(subject, f"the catalog holds this {kind} ({_outcome(row.ok)}), but no "
                      f"{kind}.completed event records it: not counted")  # fmt: skip
            continue
        seen.add(row.id)
        backup_id, ok = event.subject.removeprefix("backup:"), event.details.get("ok")
        diffs = []
        if row.backup_id != backup_id:
            diffs.append(_differs("the backup", row.backup_id, backup_id, event))
        if row.ok is not ok:
            diffs.append(_differs("the result", _outcome(row.ok), _outcome(ok), event))
        for diff in [*diffs, *differences(row, event)]:
            notes.add(subject, diff, event.seq)
        yield facts(row.id, event, notes.time(subject, "the finish time", row.finished_at, event))
    for item_id, event in events.items():
        if item_id not in seen:
            notes.add(f"{kind}:{item_id}", "missing from the catalog: the ledger records it "
                      f"({at_seq(event)}, {_outcome(event.details.get('ok'))}, on "
                      f"{event.subject})", event.seq)  # fmt: skip
            yield facts(item_id, event, _event_time(event))


def _verifications(
    records: LedgerRecords, rows: Sequence[Verification], notes: _Notes
) -> Iterable[CheckFacts]:
    def differences(row: Verification, event: Event) -> list[str]:
        kind = event.details.get("kind")
        return [] if row.kind == kind else [_differs("the kind", row.kind, kind, event)]

    return _checks("verification", records.verifications, rows, notes, differences,
                   _verification_facts)  # fmt: skip


def _outcome(ok: Any) -> str:
    return "passed" if ok is True else "failed"


def _verification_facts(verification_id: str, event: Event, at: datetime) -> CheckFacts:
    return CheckFacts(
        id=verification_id,
        kind=str(event.details.get("kind")),
        backup_id=event.subject.removeprefix("backup:"),
        at=at,
        ok=event.details.get("ok") is True,
    )


def _drills(records: LedgerRecords, rows: Sequence[Drill], notes: _Notes) -> Iterable[CheckFacts]:
    def differences(r: Drill, event: Event) -> list[str]:
        d, diffs = event.details, []
        signed = _number(d.get("restore_seconds"))
        if signed is None or abs(r.restore_seconds - signed) > 1e-5:  # recorded to 6 places
            diffs.append(_differs("the restore time", r.restore_seconds, signed, event))
        if r.fingerprint_match is not d.get("fingerprint_match"):
            diffs.append(_differs("the fingerprint match", r.fingerprint_match,
                                  d.get("fingerprint_match"), event))  # fmt: skip
        rto = _number(d.get("rto_seconds"))
        if (r.rto_seconds is None) != (rto is None) or (
            r.rto_seconds is not None and rto is not None and abs(r.rto_seconds - rto) > 1e-5
        ):
            diffs.append(_differs("the RTO", r.rto_seconds, d.get("rto_seconds"), event))
        return diffs

    return _checks("drill", records.drills, rows, notes, differences, _drill_facts)


def _drill_facts(drill_id: str, event: Event, at: datetime) -> CheckFacts:
    d = event.details
    return CheckFacts(
        id=drill_id,
        kind="drill",
        backup_id=event.subject.removeprefix("backup:"),
        at=at,
        ok=d.get("ok") is True,
        restore_seconds=_number(d.get("restore_seconds")),
        fingerprint_match=d.get("fingerprint_match") is True,
    )
