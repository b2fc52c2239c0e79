"""The auditor's evidence package: build it from the catalog for a period, and verify one
offline with nothing but the ledger's verifier key (docs/formats/evidence.md).

Building first verifies the catalog's ledger (as ``affidavit ledger verify`` does) and refuses
to sign anything over a ledger that does not verify. It then reads everything in one read
transaction against the newest signed checkpoint, so every cited event has an inclusion proof
to that checkpoint; events are read from their signed entries (never from the catalog's query
columns), and a backup's status, deletion and holds from its ledger events; the package is written
atomically and then recorded as ``evidence.built`` (with its SHA-256). If that record cannot
be written, the package is removed: no evidence file exists without its ledger event.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import rfc8785

from affidavit import __version__
from affidavit.catalog.store import UnitOfWork
from affidavit.crypto import tokens
from affidavit.crypto.digest import sha256_hex, sha256_readable
from affidavit.crypto.dsse import sign_envelope
from affidavit.errors import AlreadyExists, InputError, IntegrityError, NotFound
from affidavit.evidence.content import EvidenceContent
from affidavit.evidence.package import (
    CHECKPOINT,
    EVENTS,
    MANIFEST_PAYLOAD_TYPE,
    OSCAL,
    REPORT,
    read_package,
    write_package,
)
from affidavit.evidence.verify import RECORDS, EvidenceReport, verify_package
from affidavit.ledger import merkle
from affidavit.ledger.checkpoint import Checkpoint, open_checkpoint
from affidavit.ledger.log import LedgerLog
from affidavit.models.backup import Backup
from affidavit.models.checks import Drill, Verification
from affidavit.models.governance import CheckRun, ControlFinding, FindingStatus
from affidavit.models.ledger import Event
from affidavit.models.period import Period
from affidavit.models.progress import Reporter
from affidavit.policy.controls import check_framework
from affidavit.services import server_files
from affidavit.services.context import App, LedgerIdentity
from affidavit.services.exports.evidence import ExportEvidence, gather_export_evidence
from affidavit.services.ledger import current_checkpoint, parse_vkey, require_verified_ledger
from affidavit.services.policy import list_controls
from affidavit.services.policy_vouch import ACTIONS as VOUCHED_ACTIONS
from affidavit.services.policy_vouch import LedgerRecords, parse_entry, signed_time


@dataclass(frozen=True, slots=True, kw_only=True)
class EvidenceBuild:
    """A package written and recorded."""

    path: Path
    sha256: str
    period: Period
    framework: str | None
    files: int
    events: int
    backups: int
    verifications: int
    drills: int
    findings: int
    checkpoint_size: int
    seq: int
    warnings: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        """JSON-ready."""
        return {
            "path": str(self.path),
            "sha256": self.sha256,
            "period": {"from": self.period.start.isoformat(), "to": self.period.end.isoformat()},
            "framework": self.framework,
            "files": self.files,
            "events": self.events,
            "backups": self.backups,
            "verifications": self.verifications,
            "drills": self.drills,
            "findings": self.findings,
            "checkpoint_size": self.checkpoint_size,
            "seq": self.seq,
            "warnings": list(self.warnings),
        }


def _identity(app: App) -> LedgerIdentity:
    identity = app.ledger_identity()
    if identity is None:
        raise InputError("this home has no ledger key yet", hint="run `affidavit init`")
    return identity


def build_evidence(
    app: App,
    *,
    period: Period,
    out: Path,
    framework: str | None = None,
    reporter: Reporter | None = None,
) -> EvidenceBuild:
    """Build the package for ``period`` at ``out`` (which must not exist)."""
    if framework is not None:
        check_framework(framework)
    out = out.expanduser().absolute()
    if os.path.lexists(out):
        raise AlreadyExists(f"{out} already exists", hint="choose another --out; nothing changed")
    if not out.parent.is_dir():
        raise InputError(
            f"the folder {out.parent} does not exist", hint="create it first; nothing changed"
        )
    identity = _identity(app)
    # a package is only as good as the ledger it cites, and the builder reads the entries
    # themselves: replaced, unparseable or back-dated (through the query columns) entries are
    # refused here (IntegrityError, exit 1) before anything is written
    require_verified_ledger(app, refusing="to sign the package", nothing="written")
    current_checkpoint(app)  # make sure a signed checkpoint covers the whole ledger
    now = datetime.now(UTC)
    with app.read() as uow:
        latest = uow.ledger.latest_checkpoint()
        if latest is None:
            raise IntegrityError("the ledger has no checkpoint", hint="run `affidavit init`")
        checkpoint = open_checkpoint(latest[1], identity.verifier, identity.origin)
        gathered = _gather(uow, period, checkpoint.size)
        cited = gathered.cited_seqs()
        if reporter is not None:
            reporter.task("proving cited ledger events", total=len(cited))
        lines = _proof_lines(uow, cited, checkpoint, reporter)
    if reporter is not None:
        reporter.finish()
        reporter.stage("writing the package")
    content = gathered.content(
        now=now, period=period, framework=framework, origin=identity.origin,
        checkpoint=checkpoint, events=len(lines),
    )  # fmt: skip
    files = _files(content, gathered, latest[1], lines)
    header = {
        "generated_at": now.isoformat(),
        "generator": {"name": "affidavit", "version": __version__},
        "origin": identity.origin,
        "period": {"from": period.start.isoformat(), "to": period.end.isoformat()},
        "framework": framework,
        "checkpoint": {"size": checkpoint.size, "root": checkpoint.root.hex()},
    }

    def sign(manifest: bytes) -> str:
        envelope = sign_envelope(
            manifest, MANIFEST_PAYLOAD_TYPE, identity.signer.key, identity.keyid
        )
        return envelope.to_json()

    digest = write_package(out, files, header=header, sign=sign, mtime=now)
    try:
        with app.change() as change:
            event = change.record(
                "evidence.built",
                f"evidence:{digest}",
                {
                    "path": str(out),
                    "period": header["period"],
                    "framework": framework,
                    "files": len(files) + 2,
                    "events": len(lines),
                    "checkpoint_size": checkpoint.size,
                },
            )
    except BaseException:
        out.unlink(missing_ok=True)
        raise
    warnings = []
    if not content.check_runs:
        warnings.append(
            "no policy check ran in the period: the package has no control results and will "
            "not verify (control-results-missing); run `affidavit policy check` and build again"
        )
    if gathered.disagreeing:
        shown = ", ".join(gathered.disagreeing[:5])
        more = len(gathered.disagreeing) - 5
        warnings.append(
            f"the catalog's rows of backup(s) {shown}{f' and {more} more' if more > 0 else ''} "
            "say another status, deletion or holds than the ledger: the package states the "
            "ledger's; `affidavit policy check` names each row (ledger.integrity)"
        )
    if gathered.exports.left_out:
        warnings.append(
            f"the signed manifest of export(s) {', '.join(gathered.exports.left_out[:5])} is "
            "left out (the catalog's copy is not the one the ledger recorded): the package "
            "will not verify (export-manifest-missing)"
        )
    return EvidenceBuild(
        path=out, sha256=digest, period=period, framework=framework, files=len(files) + 2,
        events=len(lines), backups=len(content.backups), verifications=len(content.verifications),
        drills=len(content.drills), findings=len(content.findings),
        checkpoint_size=checkpoint.size, seq=event.seq, warnings=tuple(warnings),
    )  # fmt: skip


PACKAGES_FOLDER = "evidence"
"""Where the home keeps the packages built for clients of the server (``HOME/evidence``)."""
_PACKAGE_ID = re.compile(r"ev-[0-9a-f]{16}")


def build_evidence_package(
    app: App,
    *,
    period: Period,
    framework: str | None = None,
    reporter: Reporter | None = None,
) -> tuple[str, EvidenceBuild]:
    """Build a package for ``period`` in the home's evidence folder under a new id
    (``ev-...``), for a client of the server to download (:func:`evidence_package`) within
    ``server_files.KEEP``; packages built longer ago are removed first."""
    folder = app.settings.home / PACKAGES_FOLDER
    folder.mkdir(mode=0o700, exist_ok=True)
    server_files.sweep(folder, _PACKAGE_ID, ".tar.gz")  # kept server_files.KEEP, then gone
    package_id = f"ev-{tokens.new_id()}"
    built = build_evidence(
        app,
        period=period,
        out=folder / f"{package_id}.tar.gz",
        framework=framework,
        reporter=reporter,
    )
    return package_id, built


def evidence_package(app: App, package_id: str) -> Path:
    """The file of the package ``package_id`` that :func:`build_evidence_package` built;
    :class:`NotFound` for any other id (never a path outside the evidence folder)."""
    path = app.settings.home / PACKAGES_FOLDER / f"{package_id}.tar.gz"
    if not _PACKAGE_ID.fullmatch(package_id) or not path.is_file():
        raise NotFound(
            f"no evidence package {package_id[:40]!r}",
            hint="`affidavit evidence build` through the server names the one it built",
        )
    if server_files.expired(path):
        raise NotFound(
            f"the evidence package {package_id} was built more than "
            f"{server_files.KEEP_TEXT} ago and is gone",
            hint="build it again: `affidavit evidence build`",
        )
    return path


def check_package_file(path: Path, sha256: str) -> None:
    """Raise :class:`IntegrityError`, and remove the file, when the package at ``path`` (one
    a client downloaded) is not the one whose SHA-256 ``sha256`` the ledger recorded."""
    with path.open("rb") as fh:
        stream = sha256_readable(fh)
    if stream.hexdigest() != sha256:
        path.unlink(missing_ok=True)
        raise IntegrityError(
            f"the package received has SHA-256 {stream.hexdigest()}, not the {sha256} that was "
            "built and recorded: it changed on the way, and was removed",
            hint="build it again; if it happens again, check what lies between you and the server",
        )


def verify_evidence(path: Path, public_key: str) -> EvidenceReport:
    """Verify a package offline (no catalog is opened)."""
    verifier = parse_vkey(public_key)
    return verify_package(read_package(path.expanduser()), verifier)


def read_evidence_file(path: Path, member: str) -> bytes:
    """One file of a package (e.g. ``report/index.html``), read without extracting."""
    package = read_package(path.expanduser())
    if member not in package.files:
        raise InputError(f"{path} has no {member}")
    return package.files[member]


# -- gathering --------------------------------------------------------------------------------


def _in(period: Period, moment: datetime | None) -> bool:
    return moment is not None and moment in period


@dataclass(slots=True)
class _Gathered:
    """What the catalog holds for the period, and the ledger events that prove it."""

    backups: list[Backup]
    verifications: list[Verification]
    drills: list[Drill]
    findings: list[ControlFinding]
    exceptions: list[dict[str, Any]]
    policy_versions: list[dict[str, Any]]
    check_runs: list[dict[str, Any]]
    results: list[dict[str, Any]]
    key_rotations: list[dict[str, Any]]
    period_seqs: list[int]
    attestation_seq: dict[str, int]  # envelope sha256 -> seq
    completed_seq: dict[str, int]  # "backup:ID" / "verification:ID" / "drill:ID" -> seq
    ledger: LedgerRecords  # the backups' lifecycle and holds as the ledger records them
    size: int
    disagreeing: list[str] = field(default_factory=list)  # backups whose rows say otherwise
    exports: ExportEvidence = field(default_factory=ExportEvidence)  # the period's exports

    def envelope_files(self) -> dict[str, bytes]:
        out: dict[str, bytes] = {}
        for kind, items in (
            ("backup", self.backups),
            ("verification", self.verifications),
            ("drill", self.drills),
        ):
            for item in items:
                if item.envelope:
                    out[f"attestations/{kind}/{item.id}.json"] = item.envelope.encode("utf-8")
        return out

    def cited_seqs(self) -> list[int]:
        """The events of the period and those the package's records refer to (only those:
        a completion of a backup the package does not hold is not cited)."""
        seqs = set(self.period_seqs)
        for data in self.envelope_files().values():
            seq = self.attestation_seq.get(sha256_hex(data))
            if seq is not None:
                seqs.add(seq)
        keys = [
            *(f"backup:{b.id}" for b in self.backups),
            *(f"verification:{v.id}" for v in self.verifications),
            *(f"drill:{d.id}" for d in self.drills),
        ]
        seqs.update(self.completed_seq[key] for key in keys if key in self.completed_seq)
        for b in self.backups:  # its deletion and holds, whenever they happened
            deleted = self.ledger.deleted.get(b.id)
            seqs.update(e.seq for e in (deleted, *self.ledger.holds.get(b.id, ())) if e)
        for f in self.findings:
            seqs.update(s.seq for s in f.trail if s.seq is not None)
        for x in self.exceptions:
            seqs.update(x["seqs"])
        for p in self.policy_versions:
            seqs.update(s for s in (p["proposal_seq"], p["approval_seq"]) if s is not None)
        seqs.update(r["seq"] for r in self.check_runs if r["seq"] is not None)
        seqs.update(k["seq"] for k in self.key_rotations)
        seqs.update(self.exports.seqs)
        return sorted(s for s in seqs if 0 <= s < self.size)

    def content(
        self,
        *,
        now: datetime,
        period: Period,
        framework: str | None,
        origin: str,
        checkpoint: Checkpoint,
        events: int,
    ) -> EvidenceContent:
        envelopes = self.envelope_files()
        return EvidenceContent(
            generated_at=now,
            period_start=period.start,
            period_end=period.end,
            framework=framework,
            origin=origin,
            checkpoint_size=checkpoint.size,
            checkpoint_root=checkpoint.root.hex(),
            event_count=events,
            controls=[c.to_json() for c in list_controls(framework)],
            results=self.results,
            check_runs=self.check_runs,
            backups=[_backup_record(b, envelopes, self.ledger) for b in self.backups],
            verifications=[
                _verification_record(v, envelopes, self.completed_seq) for v in self.verifications
            ],
            drills=[_drill_record(d, envelopes, self.completed_seq) for d in self.drills],
            findings=[f.to_json() for f in self.findings],
            exceptions=self.exceptions,
            key_rotations=self.key_rotations,
            policy_versions=self.policy_versions,
        )


def _gather(uow: UnitOfWork, period: Period, size: int) -> _Gathered:
    """Everything of the period: the events whose time lies in it (up to the checkpoint's
    ``size``) and a record for each of those that stands for one (a ``backup.completed`` in the
    period brings its backup, even one started earlier), plus the records that were active in
    the period by their own times.

    Every event is read from its entry, never from the catalog's query columns (``time``,
    ``action``: copies that someone without the key can edit to move an event out of the
    period); a backup's status, deletion and holds are the ledger's (``backup.completed``,
    ``backup.deleted``, ``hold.added`` / ``hold.released``), not its row's."""
    scan = _scan_ledger(uow, period, size)
    period_events, records = scan.period_events, scan.records
    in_period = {e.seq for e in period_events}
    completed = {
        **{f"backup:{key}": e.seq for key, e in records.completed.items()},
        **{f"verification:{key}": e.seq for key, e in records.verifications.items()},
        **{f"drill:{key}": e.seq for key, e in records.drills.items()},
    }
    exception_seqs = scan.exception_seqs

    def completed_in_period(key: str) -> bool:
        return completed.get(key) in in_period

    def backup_in_period(b: Backup) -> bool:
        # started (by its row or its event), completed, failed, deleted or held in the period
        return _in(period, b.started_at) or any(
            e.seq in in_period for e in _lifecycle(records, b.id)
        )

    backups = [b for b in uow.backups.list() if backup_in_period(b)]
    backups.sort(key=lambda b: (b.started_at, b.id))
    verifications = sorted(
        (
            v
            for v in uow.checks.verifications()
            if _in(period, v.finished_at) or completed_in_period(f"verification:{v.id}")
        ),
        key=lambda v: (v.finished_at, v.id),
    )
    drills = sorted(
        (
            d
            for d in uow.checks.drills()
            if _in(period, d.finished_at) or completed_in_period(f"drill:{d.id}")
        ),
        key=lambda d: (d.finished_at, d.id),
    )
    gov = uow.governance

    def finding_in_period(f: ControlFinding) -> bool:
        if any(step.seq in in_period for step in f.trail):
            return True
        if f.opened_at >= period.end:
            return False
        return f.status is not FindingStatus.RESOLVED or any(s.at >= period.start for s in f.trail)

    findings = [f for f in gov.findings() if finding_in_period(f)]
    exceptions = [
        {**x.to_json(), "seqs": sorted(exception_seqs.get(x.id, []))}
        for x in gov.exceptions()
        if (x.requested_at < period.end and x.expires_at > period.start)
        or any(seq in in_period for seq in exception_seqs.get(x.id, []))
    ]
    versions = [
        {
            "version": v.version, "sha256": v.sha256, "text": v.text,
            "proposed_by": v.proposed_by, "proposed_at": v.proposed_at.isoformat(),
            "proposal_seq": v.proposal_seq, "approved_by": v.approved_by,
            "approved_at": v.approved_at.isoformat() if v.approved_at else None,
            "approval_seq": v.approval_seq,
        }
        for v in gov.policy_versions()
        if v.proposed_at < period.end
    ]  # fmt: skip
    runs = _check_runs(uow, period, period_events, size)
    run_records = [
        {
            "id": r.id, "at": r.at.isoformat(), "actor": r.actor, "ok": r.ok,
            "policy_version": r.policy_version, "seq": r.seq,
            "results_sha256": sha256_hex(rfc8785.dumps(list(r.results))),
        }
        for r in runs
    ]  # fmt: skip
    rotations = [
        {
            "seq": event.seq, "time": event.time, "actor": event.actor,
            "kek": event.subject.removeprefix("kek:"),
            "old_version": event.details.get("old_version"),
            "new_version": event.details.get("new_version"),
        }
        for event in period_events
        if event.action == "keys.rotated"
    ]  # fmt: skip
    return _Gathered(
        backups=backups,
        verifications=verifications,
        drills=drills,
        findings=findings,
        exceptions=exceptions,
        policy_versions=versions,
        check_runs=run_records,
        # the newest run is the one the ledger recorded last (its time may be back-dated)
        results=list(max(runs, key=lambda r: r.seq or 0).results) if runs else [],
        key_rotations=rotations,
        period_seqs=sorted(in_period),
        attestation_seq=scan.attestation_seq,
        completed_seq=completed,
        ledger=records,
        size=size,
        disagreeing=[b.id for b in backups if _row_disagrees(b, records)],
        exports=gather_export_evidence(uow, period_events, scan.attestation_seq),
    )


@dataclass(slots=True)
class _Scan:
    """What one pass over the ledger's entries (up to the checkpoint) gives the builder."""

    period_events: list[Event] = field(default_factory=list)  # by the entry's own time
    records: LedgerRecords = field(default_factory=LedgerRecords)
    attestation_seq: dict[str, int] = field(default_factory=dict)  # envelope sha256 -> seq
    exception_seqs: dict[str, list[int]] = field(default_factory=dict)  # exception id ->


_EXCEPTION_ACTIONS = frozenset({"exception.requested", "exception.approved", "exception.revoked"})


def _scan_ledger(uow: UnitOfWork, period: Period, size: int) -> _Scan:
    """Every entry below ``size``, parsed: the events whose own time lies in the period, and
    the ones records refer to. The query columns are not used: they are copies. An entry that
    holds no event is skipped (the build has verified the ledger before, which names it)."""
    scan = _Scan()
    for stored in uow.ledger.entries(0, size):
        event = parse_entry(stored.entry)
        if event is None or event.seq != stored.seq:
            continue
        at = signed_time(event.time)
        if at is not None and at in period:
            scan.period_events.append(event)
        action = event.action
        if action in VOUCHED_ACTIONS:
            scan.records.add(event)
        elif action == "attestation.created":
            scan.attestation_seq[str(event.details.get("envelope_sha256"))] = event.seq
        elif action in _EXCEPTION_ACTIONS:
            exception_id = event.subject.removeprefix("exception:")
            scan.exception_seqs.setdefault(exception_id, []).append(event.seq)
    return scan


def _lifecycle(records: LedgerRecords, backup_id: str) -> list[Event]:
    """The events of a backup's lifecycle and holds that the ledger holds."""
    single = (records.started, records.completed, records.failed, records.deleted)
    found = [events[backup_id] for events in single if backup_id in events]
    return [*found, *records.holds.get(backup_id, ())]


def _ledger_status(b: Backup, records: LedgerRecords) -> str:
    """The status the ledger gives: deleted or complete only by their events; a backup
    without either is failed by its ``backup.failed``, else running or failed as its row says
    (a run found dead is failed without one: neither state is signed)."""
    if b.id in records.deleted:
        return "deleted"
    if b.id in records.completed:
        return "complete"
    if b.id in records.failed:
        return "failed"
    row = b.status.value
    return row if row in ("running", "failed") else "running"


def _row_disagrees(b: Backup, records: LedgerRecords) -> bool:
    """Whether the row's status, deletion or holds differ from the ledger's."""
    if b.status.value != _ledger_status(b, records):
        return True
    if (b.deleted_at is None) != (b.id not in records.deleted):
        return True
    signed = sorted((h["case"], h["released"] is None) for h in _holds(records, b.id))
    return signed != sorted((h.case_id, h.released_at is None) for h in b.holds)


def _holds(records: LedgerRecords, backup_id: str) -> list[dict[str, Any]]:
    """Each hold the ledger records on the backup, oldest first: its ``hold.added`` and the
    ``hold.released`` of the same case that ended it (the first release after it)."""
    out: list[dict[str, Any]] = []
    open_: dict[str, list[dict[str, Any]]] = {}  # case -> holds not yet released
    for event in sorted(records.holds.get(backup_id, ()), key=lambda e: e.seq):
        case = event.details.get("case")
        key = json.dumps(case)
        if event.action == "hold.added":
            hold = {"case": case, "placed": _iso(event.time), "released": None,
                    "seq": event.seq, "released_seq": None}  # fmt: skip
            out.append(hold)
            open_.setdefault(key, []).append(hold)
        elif open_.get(key):
            hold = open_[key].pop(0)
            hold["released"], hold["released_seq"] = _iso(event.time), event.seq
    return out


def _iso(text: str) -> str:
    """An event's time with a UTC offset, as record times are written."""
    moment = signed_time(text)
    return moment.isoformat() if moment is not None else text


def _check_runs(
    uow: UnitOfWork, period: Period, period_events: Sequence[Event], size: int
) -> list[CheckRun]:
    """The policy checks recorded (``policy.checked``) in the period, and those whose own time
    lies in it, in ledger order; only runs proven by the checkpoint."""
    recorded = {
        e.subject.removeprefix("check:") for e in period_events if e.action == "policy.checked"
    }
    # a run's time is taken before its facts are gathered, so it precedes its event
    runs = uow.governance.check_runs(since=period.start - timedelta(days=1), until=period.end)
    if not recorded <= {r.id for r in runs}:
        runs = uow.governance.check_runs()  # a back-dated run: look at them all
    chosen = [
        r
        for r in runs
        if r.seq is not None and r.seq < size and (r.id in recorded or r.at in period)
    ]
    return sorted(chosen, key=lambda r: r.seq or 0)


def _proof_lines(
    uow: UnitOfWork, seqs: Sequence[int], checkpoint: Checkpoint, reporter: Reporter | None
) -> list[bytes]:
    log = LedgerLog(uow.ledger)
    wanted = set(seqs)
    lines = []
    for run_start, run_stop in _runs(seqs):
        for stored in uow.ledger.entries(run_start, run_stop):
            if stored.seq not in wanted:
                continue
            proof = log.inclusion_proof(stored.seq, checkpoint.size)
            try:  # never sign a package whose proofs do not verify
                merkle.verify_inclusion(
                    merkle.leaf_hash(stored.entry), stored.seq, checkpoint.size, proof,
                    checkpoint.root,
                )  # fmt: skip
            except IntegrityError as exc:
                raise IntegrityError(
                    f"refusing to sign the package: the inclusion proof of seq {stored.seq} "
                    f"does not lead to the signed root ({exc.message})",
                    hint="the catalog's entries or stored subtree hashes were altered; run "
                    "`affidavit ledger verify`; nothing was written",
                ) from exc
            try:
                text = stored.entry.decode("utf-8")
            except UnicodeDecodeError as exc:  # proven, yet not an event: never signed
                raise IntegrityError(
                    f"refusing to sign the package: ledger seq {stored.seq} is not UTF-8",
                    hint="run `affidavit ledger verify`; nothing was written",
                ) from exc
            line = {"seq": stored.seq, "entry": text, "proof": [h.hex() for h in proof]}
            lines.append(json.dumps(line, ensure_ascii=False, separators=(",", ":")).encode())
            if reporter is not None:
                reporter.advance(1)
    return lines


def _runs(seqs: Iterable[int]) -> list[tuple[int, int]]:
    """Contiguous ``[start, stop)`` ranges covering ``seqs`` (sorted)."""
    out: list[tuple[int, int]] = []
    for seq in sorted(seqs):
        if out and seq == out[-1][1]:
            out[-1] = (out[-1][0], seq + 1)
        else:
            out.append((seq, seq + 1))
    return out


# -- records ----------------------------------------------------------------------------------


def _attestation_path(kind: str, item_id: str, envelopes: Mapping[str, bytes]) -> str | None:
    path = f"attestations/{kind}/{item_id}.json"
    return path if path in envelopes else None


def _backup_record(
    b: Backup, envelopes: Mapping[str, bytes], records: LedgerRecords
) -> dict[str, Any]:
    """The backup's record: its status, deletion and holds as the ledger records them (the
    row's copies may have been edited), each citing its event; the rest from the row, checked
    by the verifier against ``backup.completed`` and the signed manifest."""
    completed, deleted = records.completed.get(b.id), records.deleted.get(b.id)
    return {
        "id": b.id, "source": b.source, "vault": b.vault, "kind": b.kind, "format": b.format,
        "status": _ledger_status(b, records), "started_at": b.started_at.isoformat(),
        "finished_at": b.finished_at.isoformat() if b.finished_at else None,
        "retain_until": b.retain_until.isoformat(),
        "deleted_at": _iso(deleted.time) if deleted else None,
        "deleted_seq": deleted.seq if deleted else None,
        "datasets": [
            {"name": d.name, "records": d.records, "fingerprint": d.fingerprint,
             "classification": d.classification}
            for d in b.datasets
        ],
        "artifacts": [
            {"path": a.path, "role": a.role.value, "dataset": a.dataset, "size": a.size,
             "sha256": a.sha256, "plain_size": a.plain_size, "plain_sha256": a.plain_sha256}
            for a in b.artifacts
        ],
        "manifest_sha256": b.manifest_sha256,
        "holds": _holds(records, b.id),
        "error": b.error,
        "attestation": _attestation_path("backup", b.id, envelopes),
        "seq": completed.seq if completed else None,
    }  # fmt: skip


def _verification_record(
    v: Verification, envelopes: Mapping[str, bytes], completed: Mapping[str, int]
) -> dict[str, Any]:
    return {
        "id": v.id, "backup_id": v.backup_id, "kind": v.kind,
        "started_at": v.started_at.isoformat(), "finished_at": v.finished_at.isoformat(),
        "ok": v.ok, "sample_percent": v.sample_percent,
        "findings": [{"code": f.code, "message": f.message, "subject": f.subject}
                     for f in v.findings],
        "attestation": _attestation_path("verification", v.id, envelopes),
        "seq": completed.get(f"verification:{v.id}"),
    }  # fmt: skip


def _drill_record(
    d: Drill, envelopes: Mapping[str, bytes], completed: Mapping[str, int]
) -> dict[str, Any]:
    return {
        "id": d.id, "backup_id": d.backup_id, "target": d.target,
        "started_at": d.started_at.isoformat(), "finished_at": d.finished_at.isoformat(),
        "ok": d.ok, "rto_seconds": d.rto_seconds, "restore_seconds": d.restore_seconds,
        "fingerprint_match": d.fingerprint_match, "phases": d.phases,
        "findings": [{"code": f.code, "message": f.message, "subject": f.subject}
                     for f in d.findings],
        "attestation": _attestation_path("drill", d.id, envelopes),
        "seq": completed.get(f"drill:{d.id}"),
    }  # fmt: skip


def _json(value: Any) -> bytes:
    return (json.dumps(value, indent=1, ensure_ascii=False, sort_keys=True) + "\n").encode()


def _files(
    content: EvidenceContent, gathered: _Gathered, note: str, lines: list[bytes]
) -> dict[str, bytes]:
    # imported here: jinja2 loads only when a package is built
    from affidavit.evidence.oscal import assessment_results
    from affidavit.evidence.report import render_report

    files = dict(gathered.envelope_files())
    files.update(gathered.exports.files)
    files[CHECKPOINT] = note.encode("utf-8")
    files[EVENTS] = b"".join(line + b"\n" for line in lines)
    for name, path in RECORDS.items():
        files[path] = _json(getattr(content, name))
    files[OSCAL] = _json(assessment_results(content))
    files[REPORT] = render_report(content).encode("utf-8")
    return files
