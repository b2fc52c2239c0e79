"""The offline verifier of evidence packages: nothing but the package's bytes and the ledger's
verifier key (``<origin>+<key id>+<base64>``). No catalog, no network.

It checks, collecting every problem rather than stopping at the first:

1. the archive itself (regular files, safe paths, no duplicates, not truncated, not a bomb);
2. ``manifest.sig``: a DSSE envelope over exactly ``manifest.json``, signed by the key;
3. every file listed once with its size and SHA-256, and nothing unlisted;
4. ``checkpoint.note`` signed by the key for the key's origin, equal to the manifest's;
5. every cited ledger event's inclusion proof against that checkpoint, in ``seq`` order;
6. every attestation's signature, that its predicate is one of its type (a backup's through
   the one signed-manifest check, :mod:`affidavit.ledger.manifest_check`; a verification's
   and a drill's by :mod:`affidavit.models.predicates`), and that a cited
   ``attestation.created`` event carries its digest (an attestation lifted from another
   package is not cited here);
7. cross-references: each record's ledger events exist with the right action and subject and
   say what the record says (actors, notes, digests, results), attestations agree with the
   records they back, policy texts match their approved digests, approvals are by someone
   other than the requester, and the control results match the digest the newest
   ``policy.checked`` event committed to; a backup is ``deleted`` exactly when its record
   cites its ``backup.deleted``, and its holds are exactly the ``hold.added`` /
   ``hold.released`` events cited on it (``affidavit-evidence/2``; a package of the first
   format is held to that format's rules, which do not cover deletion and holds);
8. exports (``records/exports.json``): each record's ``export.completed`` says what it says
   (the output's file name included) and lies in the package's period; its manifest
   (``exports/<id>.manifest.dsse.json``) is in the package, verifies under the key and is
   the one its cited ``attestation.created`` recorded, and the signed predicate agrees with
   the record and the event; a record without its manifest is a finding, and so is a
   passing ``export.*`` control for an export that does not hold up here;
9. completeness: every cited event that a record stands for has its record (an
   ``export.completed`` included), every attestation backs exactly one record, every export
   manifest is a record's, and the package holds control results;
10. the OSCAL document and the report are present and well-formed.

Record files are written by the catalog, which an attacker may control without holding the
key: every value is treated as hostile JSON. A malformed record is reported
(``record-malformed``) and the others are still checked; nothing in a package makes the
verifier crash.
"""

from __future__ import annotations

import json
import reprlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import rfc8785

from affidavit.crypto.digest import sha256_hex
from affidavit.crypto.dsse import Envelope, verify_envelope
from affidavit.crypto.note import NoteVerifier
from affidavit.crypto.signing import VerifyingKey
from affidavit.errors import Error
from affidavit.evidence.content import FORMAT_1, FORMATS
from affidavit.evidence.package import (
    CHECKPOINT,
    EVENTS,
    MANIFEST,
    MANIFEST_PAYLOAD_TYPE,
    OSCAL,
    REPORT,
    SIGNATURE,
    ReadPackage,
)
from affidavit.ledger import merkle
from affidavit.ledger.attestation import (
    BACKUP_PREDICATE_TYPE,
    DRILL_PREDICATE_TYPE,
    EXPORT_PREDICATE_TYPE,
    VERIFICATION_PREDICATE_TYPE,
    Statement,
    verify_attestation,
)
from affidavit.ledger.checkpoint import Checkpoint, open_checkpoint
from affidavit.ledger.manifest_check import check_signed_manifest
from affidavit.models.checks import Finding
from affidavit.models.governance import same_person
from affidavit.models.ledger import Event
from affidavit.models.manifest import BackupManifest, PredicateError
from affidavit.models.predicates import DrillPredicate, VerificationPredicate

RECORDS = {
    "backups": "records/backups.json",
    "verifications": "records/verifications.json",
    "drills": "records/drills.json",
    "findings": "records/findings.json",
    "exceptions": "records/exceptions.json",
    "key_rotations": "records/key-rotations.json",
    "policy_versions": "records/policy-versions.json",
    "check_runs": "records/check-runs.json",
    "results": "records/control-results.json",
    "controls": "records/controls.json",
}
EXPORT_RECORDS = "records/exports.json"
"""The period's exports (only in a package whose period has one)."""
EXPORT_MANIFESTS = "exports/"
RECORD_ACTIONS = frozenset(
    {
        "backup.completed",
        "verification.completed",
        "drill.completed",
        "finding.opened",
        "finding.acknowledged",
        "finding.resolved",
        "exception.requested",
        "exception.approved",
        "exception.revoked",
        "policy.proposed",
        "policy.approved",
        "policy.checked",
        "keys.rotated",
        "backup.deleted",
        "hold.added",
        "hold.released",
        "export.completed",
    }
)
"""Ledger actions that stand for a record: each cited one must be referenced by a record."""
_LIFECYCLE_ACTIONS = frozenset({"backup.deleted", "hold.added", "hold.released"})
"""What a backup record cites beyond its completion since ``affidavit-evidence/2``."""
RECORD_ACTIONS_1 = RECORD_ACTIONS - _LIFECYCLE_ACTIONS
"""The actions that stand for a record in an ``affidavit-evidence/1`` package."""

_STEP_ACTIONS = {
    "open": "finding.opened",
    "acknowledged": "finding.acknowledged",
    "resolved": "finding.resolved",
}
_EXCEPTION_ACTIONS = ("exception.requested", "exception.approved", "exception.revoked")
_ATTESTATION_KINDS = {
    BACKUP_PREDICATE_TYPE: "backup",
    VERIFICATION_PREDICATE_TYPE: "verification",
    DRILL_PREDICATE_TYPE: "drill",
}
_SHOW = reprlib.Repr()
_SHOW.maxstring = _SHOW.maxother = 80
_SHOW.maxlevel = 3


class _Malformed(Exception):
    """A record value of the wrong shape."""


# what hostile JSON can make a check raise; each becomes a finding, never a crash
_BROKEN = (_Malformed, RecursionError, TypeError, AttributeError, ValueError, KeyError)


@dataclass(slots=True)
class EvidenceReport:
    """What the verifier found."""

    findings: list[Finding] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """Fails closed: ok only with no finding and a verified checkpoint."""
        return not self.findings and bool(self.summary.get("checkpoint_verified"))

    def add(self, code: str, message: str, subject: str = "", **details: Any) -> None:
        """Record one problem."""
        self.findings.append(Finding(code=code, message=message, subject=subject, details=details))

    def to_json(self) -> dict[str, Any]:
        """``{"ok", "findings", "summary"}``."""
        return {
            "ok": self.ok,
            "findings": [f.to_json() for f in self.findings],
            "summary": self.summary,
        }


def verify_package(package: ReadPackage, verifier: NoteVerifier) -> EvidenceReport:
    """Verify a read package with the ledger's verifier key."""
    report = EvidenceReport()
    for code, path, message in package.problems:
        report.add(code, message, path)
    files = package.files
    keys = {f"{verifier.key_id:08x}": verifier.key}
    manifest = _manifest(files, keys, verifier, report)
    _files(files, manifest, report)
    checkpoint = _checkpoint(files, manifest, verifier, report)
    events = _events(files, checkpoint, report)
    attestations = _attestations(files, keys, events, report)
    records = _records(files, report)
    # an unreadable manifest is already a failure: its records are held to the newest rules
    refs = _Refs(events, attestations, report, legacy=manifest.get("format") == FORMAT_1)
    _cross_references(refs, records)
    _check_exports(refs, files, keys, records.get("results"), period=manifest.get("period"))
    _completeness(refs, files)
    _renderings(files, report)
    report.summary.update(
        {
            "files": len(files),
            "events": len(events),
            "attestations": len(attestations),
            "origin": verifier.name,
            **{
                name: len(records.get(name, []))
                for name in ("backups", "verifications", "drills", "findings")
            },
        }
    )
    return report


def _describe(exc: BaseException) -> str:
    if isinstance(exc, RecursionError):
        return "nested too deeply"
    if isinstance(exc, Error):
        return exc.message
    return _SHOW.repr(str(exc)).strip("'\"")


def _loads(raw: bytes) -> Any:
    """JSON from hostile bytes: ``ValueError`` for anything unparsable, too deep included."""
    try:
        return json.loads(raw)
    except RecursionError:
        raise ValueError("nested too deeply") from None


# -- manifest, files, checkpoint --------------------------------------------------------------


def _manifest(
    files: Mapping[str, bytes],
    keys: Mapping[str, VerifyingKey],
    verifier: NoteVerifier,
    report: EvidenceReport,
) -> dict[str, Any]:
    raw = files.get(MANIFEST)
    if raw is None:
        report.add("file-missing", "the package has no manifest.json", MANIFEST)
        return {}
    sig = files.get(SIGNATURE)
    if sig is None:
        report.add("signature-missing", "the package has no manifest.sig", SIGNATURE)
    else:
        try:
            envelope = Envelope.from_json(sig)
            payload = verify_envelope(envelope, keys)
            if envelope.payload_type != MANIFEST_PAYLOAD_TYPE:
                report.add(
                    "signature-invalid",
                    f"signed payload type is {_SHOW.repr(envelope.payload_type)}",
                    SIGNATURE,
                )
            elif payload != raw:
                report.add(
                    "signature-invalid", "the signature covers a different manifest", SIGNATURE
                )
            else:
                report.summary["signature_verified"] = True
        except (Error, RecursionError) as exc:
            report.add(
                "signature-invalid",
                f"the manifest signature does not verify: {_describe(exc)}",
                SIGNATURE,
            )
    try:
        manifest = _loads(raw)
        if not isinstance(manifest, dict) or manifest.get("format") not in FORMATS:
            raise ValueError(f"not an {' or '.join(FORMATS)} manifest")
        if not isinstance(manifest.get("files"), list):
            raise ValueError("no file list")
        if not isinstance(manifest.get("checkpoint"), dict):
            raise ValueError("no checkpoint object")
    except ValueError as exc:
        report.add("manifest-malformed", f"manifest.json is malformed: {exc}", MANIFEST)
        return {}
    if manifest.get("origin") != verifier.name:
        report.add(
            "origin-mismatch",
            f"the package is for log {_SHOW.repr(manifest.get('origin'))}, "
            f"the key for {verifier.name!r}",
            MANIFEST,
        )
    period = manifest.get("period")
    if isinstance(period, dict) and all(isinstance(v, str) for v in period.values()):
        report.summary["period"] = {str(k): v for k, v in period.items()}
    framework = manifest.get("framework")
    report.summary["framework"] = framework if isinstance(framework, str) else None
    report.summary["format"] = manifest["format"]
    return manifest


def _files(files: Mapping[str, bytes], manifest: Mapping[str, Any], report: EvidenceReport) -> None:
    listed: dict[str, Mapping[str, Any]] = {}
    for item in manifest.get("files", []):
        if not isinstance(item, dict) or not isinstance(item.get("path"), str):
            report.add("manifest-malformed", "a file entry is malformed", MANIFEST)
            continue
        path = item["path"]
        if path in listed:
            report.add("manifest-malformed", f"{_SHOW.repr(path)} is listed twice", MANIFEST)
            continue
        listed[path] = item
    for path, item in sorted(listed.items()):
        data = files.get(path)
        if data is None:
            report.add("file-missing", "listed in the manifest but not in the package", path)
        elif len(data) != item.get("size") or sha256_hex(data) != item.get("sha256"):
            report.add("file-altered", "size or SHA-256 differs from the manifest", path)
    for path in sorted(set(files) - set(listed) - {MANIFEST, SIGNATURE}):
        report.add("file-unlisted", "in the package but not in the manifest", path)


def _checkpoint(
    files: Mapping[str, bytes],
    manifest: Mapping[str, Any],
    verifier: NoteVerifier,
    report: EvidenceReport,
) -> Checkpoint | None:
    raw = files.get(CHECKPOINT)
    if raw is None:
        report.add("file-missing", "the package has no checkpoint", CHECKPOINT)
        return None
    try:
        checkpoint = open_checkpoint(raw.decode("utf-8"), verifier, verifier.name)
    except (Error, UnicodeDecodeError) as exc:
        msg = exc.message if isinstance(exc, Error) else "not UTF-8"
        report.add("checkpoint-invalid", f"the checkpoint does not verify: {msg}", CHECKPOINT)
        return None
    claimed = manifest.get("checkpoint")
    if not isinstance(claimed, dict):
        claimed = {}
    if claimed.get("size") != checkpoint.size or claimed.get("root") != checkpoint.root.hex():
        report.add("checkpoint-mismatch", "the manifest names another checkpoint", CHECKPOINT)
    report.summary["checkpoint_verified"] = True
    report.summary["checkpoint"] = {"size": checkpoint.size, "root": checkpoint.root.hex()}
    return checkpoint


# -- events and attestations ------------------------------------------------------------------


def _events(
    files: Mapping[str, bytes], checkpoint: Checkpoint | None, report: EvidenceReport
) -> dict[int, Event]:
    raw = files.get(EVENTS)
    if raw is None:
        report.add("file-missing", "the package has no ledger events", EVENTS)
        return {}
    events: dict[int, Event] = {}
    last: int | None = None
    for number, line in enumerate(raw.splitlines(), start=1):
        where = f"{EVENTS}:{number}"
        try:
            obj = _loads(line)
            seq, entry = obj["seq"], obj["entry"].encode("utf-8")
            proof = [bytes.fromhex(h) for h in obj["proof"]]
            if not isinstance(seq, int) or isinstance(seq, bool):
                raise TypeError("seq is not an integer")
            event = Event.from_canonical(entry)
        except (ValueError, KeyError, TypeError, AttributeError, RecursionError, Error) as exc:
            report.add(
                "event-malformed", f"line {number} is not a cited event: {_describe(exc)}", where
            )
            continue
        if event.seq != seq:
            report.add(
                "event-malformed", f"line {number} says seq {seq}, its entry {event.seq}", where
            )
            continue
        if seq in events:
            report.add("event-duplicate", f"seq {seq} is cited twice", where)
            continue
        if last is not None and seq < last:
            report.add("event-out-of-order", f"seq {seq} comes after seq {last}", where, seq=seq)
        last = seq if last is None else max(last, seq)
        if checkpoint is not None:
            try:
                merkle.verify_inclusion(
                    merkle.leaf_hash(entry), seq, checkpoint.size, proof, checkpoint.root
                )
            except Error as exc:
                report.add(
                    "proof-invalid",
                    f"seq {seq} is not proven in the checkpoint: {exc.message}",
                    where,
                    seq=seq,
                )
                continue
        events[seq] = event
    return events


_Predicate = BackupManifest | VerificationPredicate | DrillPredicate
_PREDICATE_TYPES: dict[str, type[VerificationPredicate] | type[DrillPredicate]] = {
    VERIFICATION_PREDICATE_TYPE: VerificationPredicate,
    DRILL_PREDICATE_TYPE: DrillPredicate,
}


@dataclass(frozen=True, slots=True)
class _Attestation:
    """A verified attestation file: its statement, the digests that name it, and its
    predicate as its type (None for a predicate type the package does not back records
    with)."""

    statement: Statement
    file_sha256: str  # of the envelope file (attestation.created's envelope_sha256)
    payload_sha256: str  # of the signed statement (a backup's manifest_sha256)
    predicate: _Predicate | None = None


def _typed_predicate(
    data: bytes, statement: Statement, keys: Mapping[str, VerifyingKey]
) -> tuple[_Predicate | None, list[str]]:
    """A verified attestation's predicate as its type, or what is wrong with it. A backup's
    goes through the one signed-manifest check
    (:func:`~affidavit.ledger.manifest_check.check_signed_manifest`: its predicate is a
    manifest of this version and its subjects are the manifest's artifacts); the record
    citing it is compared with it in :func:`_check_backup`, its backup id included."""
    kind = statement.predicate_type
    if kind == BACKUP_PREDICATE_TYPE:
        checked = check_signed_manifest(data, keys, backup_id=None)
        return checked.manifest, [issue.message for issue in checked.issues]
    reader = _PREDICATE_TYPES.get(kind)
    if reader is None:
        return None, []
    try:
        return reader.from_predicate(statement.predicate), []
    except PredicateError as exc:
        return None, [f"the signed {_ATTESTATION_KINDS[kind]} is malformed: {exc.message}"]


def _attestations(
    files: Mapping[str, bytes],
    keys: Mapping[str, VerifyingKey],
    events: Mapping[int, Event],
    report: EvidenceReport,
) -> dict[str, _Attestation]:
    cited = {
        str(e.details.get("envelope_sha256")): e.seq
        for e in events.values()
        if e.action == "attestation.created"
    }
    found: dict[str, _Attestation] = {}
    for path, data in sorted(files.items()):
        if not path.startswith("attestations/"):
            continue
        try:
            envelope = Envelope.from_json(data)
            statement = verify_attestation(envelope, keys)
        except (Error, RecursionError) as exc:
            report.add("attestation-invalid", f"does not verify: {_describe(exc)}", path)
            continue
        predicate, problems = _typed_predicate(data, statement, keys)
        for problem in problems:
            report.add("attestation-invalid", problem, path)
        if problems:
            continue
        digest = sha256_hex(data)
        if digest not in cited:
            report.add(
                "attestation-uncited",
                "no cited attestation.created event carries this envelope's digest",
                path,
            )
            continue
        found[path] = _Attestation(statement, digest, sha256_hex(envelope.payload), predicate)
    return found


# -- records and cross-references ---------------------------------------------------------------


def _records(files: Mapping[str, bytes], report: EvidenceReport) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for name, path in RECORDS.items():
        raw = files.get(path)
        if raw is None:
            report.add("file-missing", "a record file is missing", path)
            continue
        try:
            value = _loads(raw)
            if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
                raise ValueError("not a list of objects")
        except ValueError as exc:
            report.add("record-malformed", f"{exc}", path)
            continue
        out[name] = value
    return out


def _objects(value: Any, what: str) -> list[dict[str, Any]]:
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise _Malformed(f"{what} is not a list of objects")
    return value


def _seq_list(value: Any, what: str) -> list[int]:
    if not isinstance(value, list) or not all(
        isinstance(v, int) and not isinstance(v, bool) for v in value
    ):
        raise _Malformed(f"{what} is not a list of ledger seqs")
    return value


def _label(value: Any) -> str:
    if isinstance(value, str | int) and not isinstance(value, bool):
        return str(value)[:200]
    return "?"


def _canonical_sort(items: Iterable[Any]) -> list[Any]:
    """Items in a stable order whatever their types (a multiset comparison)."""
    return sorted(items, key=lambda item: json.dumps(item, sort_keys=True, default=str))


def _moment(value: Any) -> Any:
    """A time string as a comparable instant (equal instants compare equal however written);
    anything else as is."""
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return value
        if parsed.tzinfo is not None:
            return parsed
    return value


def _equal(a: Any, b: Any) -> bool:
    return isinstance(a, bool) == isinstance(b, bool) and _moment(a) == _moment(b)


class _Refs:
    """Cross-reference checks with the report at hand; remembers which events and attestations
    the records referred to (for the completeness checks)."""

    def __init__(
        self,
        events: Mapping[int, Event],
        attestations: Mapping[str, _Attestation],
        report: EvidenceReport,
        *,
        legacy: bool = False,
    ) -> None:
        self.events, self.attestations, self.report = events, attestations, report
        self.referenced: dict[int, str] = {}  # seq -> the record that cites it
        self.attestation_uses: dict[str, int] = {}
        # an affidavit-evidence/1 package: its backup records neither prove nor cite their
        # deletion and holds, and are held to that format's rules
        self.legacy = legacy
        self._by_subject: dict[str, list[Event]] | None = None

    @property
    def record_actions(self) -> frozenset[str]:
        """The actions whose cited events must each be referenced by a record."""
        return RECORD_ACTIONS_1 if self.legacy else RECORD_ACTIONS

    def on_subject(self, subject: str) -> list[Event]:
        """The cited events on ``subject``, in ``seq`` order."""
        if self._by_subject is None:
            self._by_subject = {}
            for seq in sorted(self.events):
                event = self.events[seq]
                self._by_subject.setdefault(event.subject, []).append(event)
        return self._by_subject.get(subject, [])

    def event(
        self, seq: Any, action: str | Iterable[str], subject: str, where: str
    ) -> Event | None:
        actions = {action} if isinstance(action, str) else set(action)
        if seq is None:
            self.report.add(
                "reference-missing", f"cites no ledger event ({'/'.join(sorted(actions))})", where
            )
            return None
        event = self.events.get(seq) if isinstance(seq, int) and not isinstance(seq, bool) else None
        if event is None:
            self.report.add(
                "reference-missing",
                f"cites ledger seq {_SHOW.repr(seq)}, which is not proven here",
                where,
            )
            return None
        if event.action not in actions or event.subject != subject:
            self.report.add(
                "reference-mismatch",
                f"ledger seq {seq} is {event.action} on {event.subject}, expected "
                f"{'/'.join(sorted(actions))} on {_SHOW.repr(subject)}",
                where,
            )
            return None
        other = self.referenced.setdefault(event.seq, where)
        if other != where:
            self.report.add(
                "reference-mismatch", f"ledger seq {seq} is also cited by {other}", where
            )
        return event

    def attestation(self, path: Any, predicate_type: str, where: str) -> _Attestation | None:
        if path is None:
            self.report.add("reference-missing", "has no attestation", where)
            return None
        key = path if isinstance(path, str) else _SHOW.repr(path)
        self.attestation_uses[key] = self.attestation_uses.get(key, 0) + 1
        found = self.attestations.get(key)
        if found is None:
            self.report.add(
                "reference-missing", f"its attestation {key} is missing or invalid", where
            )
            return None
        statement = found.statement
        kind = _ATTESTATION_KINDS[predicate_type]
        if statement.predicate_type != predicate_type or not key.startswith(
            f"attestations/{kind}/"
        ):
            self.report.add(
                "reference-mismatch", f"{key} is a {statement.predicate_type}, not a {kind}", where
            )
            return None
        return found

    def same(self, where: str, what: str, record: Any, signed: Any, source: str) -> None:
        """Report ``record-mismatch`` unless the record's value equals what ``source`` says
        (times compare as instants; ``true`` is not ``1``)."""
        if not _equal(record, signed):
            self.report.add(
                "record-mismatch",
                f"{what} is {_SHOW.repr(record)} in the record but {_SHOW.repr(signed)} in "
                f"{source}",
                where,
            )

    def mismatch(self, where: str, message: str) -> None:
        self.report.add("record-mismatch", message, where)


_Check = Callable[[_Refs, dict[str, Any], str], None]


def _each(
    refs: _Refs,
    records: Mapping[str, list[dict[str, Any]]],
    name: str,
    check: _Check,
    label: Callable[[dict[str, Any]], str],
) -> None:
    """Run ``check`` on every record of ``name``; a record that breaks it is reported as
    malformed and the others are still checked."""
    path = RECORDS[name]
    seen: set[str] = set()
    for record in records.get(name, []):
        where = f"{path}#?"
        try:
            where = f"{path}#{label(record)}"
            if where in seen:
                refs.report.add("record-duplicate", "appears more than once", where)
                continue
            seen.add(where)
            check(refs, record, where)
        except _BROKEN as exc:
            refs.report.add("record-malformed", f"the record is malformed: {_describe(exc)}", where)


def _cross_references(refs: _Refs, records: Mapping[str, list[dict[str, Any]]]) -> None:
    def by_id(r: dict[str, Any]) -> str:
        return _label(r.get("id"))

    _each(refs, records, "backups", _check_backup, by_id)
    _each(refs, records, "verifications", _check_verification, by_id)
    _each(refs, records, "drills", _check_drill, by_id)
    _each(refs, records, "findings", _check_finding, by_id)
    _each(refs, records, "exceptions", _check_exception, by_id)
    _each(refs, records, "key_rotations", _check_rotation, lambda r: _label(r.get("seq")))
    _each(refs, records, "policy_versions", _check_policy, lambda r: f"v{_label(r.get('version'))}")
    _check_controls(refs, records)


# -- backups, verifications, drills -----------------------------------------------------------


def _check_backup(refs: _Refs, b: dict[str, Any], where: str) -> None:
    backup_id, status = b.get("id"), b.get("status")
    unsigned = b.get("seq") is None and b.get("attestation") is None
    if not refs.legacy:
        if status not in ("running", "failed", "complete", "deleted"):
            refs.mismatch(where, f"the status {_SHOW.repr(status)} is not one a backup has")
        _check_deletion(refs, b, where)
        _check_holds(refs, b, where)
        _check_lifecycle_cited(refs, b, where)
        if status == "deleted" and unsigned:
            return  # deleted without ever completing: its deletion is all that was signed
    if status not in ("complete", "deleted"):
        if unsigned:
            return  # running or failed: nothing was signed
        refs.mismatch(where, f"the backup is {_SHOW.repr(status)} but cites a signed completion")
    datasets = _objects(b.get("datasets"), "datasets")
    artifacts = _objects(b.get("artifacts"), "artifacts")
    event = refs.event(b.get("seq"), "backup.completed", f"backup:{backup_id}", where)
    if event is not None:
        source = f"backup.completed (seq {event.seq})"
        fingerprints = {d.get("name"): d.get("fingerprint") for d in datasets}
        refs.same(where, "the manifest digest", b.get("manifest_sha256"),
                  event.details.get("manifest_sha256"), source)  # fmt: skip
        refs.same(where, "the dataset fingerprints", fingerprints,
                  event.details.get("datasets"), source)  # fmt: skip
    found = refs.attestation(b.get("attestation"), BACKUP_PREDICATE_TYPE, where)
    if found is None or not isinstance(found.predicate, BackupManifest):
        return
    signed, source = found.predicate, f"its attestation {b.get('attestation')}"
    refs.same(where, "the manifest digest", b.get("manifest_sha256"), found.payload_sha256, source)
    refs.same(where, "the backup id", backup_id, signed.backup_id, source)
    for key, value in (("kind", signed.kind), ("format", signed.format),
                       ("retain_until", signed.retain_until.isoformat()),
                       ("started_at", signed.started_at.isoformat())):  # fmt: skip
        refs.same(where, key, b.get(key), value, source)
    refs.same(where, "the source", b.get("source"),
              signed.source.name if signed.source.engine is not None else None,
              source)  # fmt: skip
    refs.same(where, "the vault", b.get("vault"), signed.vault.name, source)
    fields = ("name", "records", "fingerprint", "classification")
    refs.same(where, "the datasets",
              _canonical_sort({k: d.get(k) for k in fields} for d in datasets),
              _canonical_sort(d.to_predicate() for d in signed.datasets),
              source)  # fmt: skip
    _check_artifacts(refs, where, artifacts, signed=signed, found=found, source=source)


def _check_deletion(refs: _Refs, b: dict[str, Any], where: str) -> None:
    """(Format 2) The status is ``deleted`` exactly when the record cites its backup's
    ``backup.deleted``, and ``deleted_at`` is that event's time."""
    status, seq, deleted_at = b.get("status"), b.get("deleted_seq"), b.get("deleted_at")
    if status == "deleted":
        event = refs.event(seq, "backup.deleted", f"backup:{b.get('id')}", where)
        if event is not None:
            refs.same(where, "deleted_at", deleted_at, event.time,
                      f"backup.deleted (seq {event.seq})")  # fmt: skip
    elif seq is not None or deleted_at is not None:
        named = f"deleted_at {_SHOW.repr(deleted_at)}, deleted_seq {_SHOW.repr(seq)}"
        refs.mismatch(where, f"the backup is {_SHOW.repr(status)} but names a deletion ({named})")


def _check_holds(refs: _Refs, b: dict[str, Any], where: str) -> None:
    """(Format 2) Each hold cites its ``hold.added`` (case, placement time) and, when it is
    released, the ``hold.released`` of the same case that came after it (release time)."""
    subject = f"backup:{b.get('id')}"
    cited: set[int] = set()
    for number, hold in enumerate(_objects(b.get("holds"), "holds"), start=1):
        what, case = f"hold {number}", hold.get("case")
        for key in ("seq", "released_seq"):
            seq = hold.get(key)
            if isinstance(seq, int) and not isinstance(seq, bool):
                if seq in cited:
                    refs.mismatch(where, f"{what} cites ledger seq {seq} a second time")
                cited.add(seq)
        added = refs.event(hold.get("seq"), "hold.added", subject, where)
        if added is not None:
            source = f"hold.added (seq {added.seq})"
            refs.same(where, f"{what}'s case", case, added.details.get("case"), source)
            refs.same(where, f"{what}'s placement", hold.get("placed"), added.time, source)
        if hold.get("released_seq") is None:
            if hold.get("released") is not None:
                refs.report.add(
                    "reference-missing", f"{what} is released, but cites no hold.released", where
                )
            continue
        released = refs.event(hold.get("released_seq"), "hold.released", subject, where)
        if released is None:
            continue
        source = f"hold.released (seq {released.seq})"
        refs.same(where, f"{what}'s case", case, released.details.get("case"), source)
        refs.same(where, f"{what}'s release", hold.get("released"), released.time, source)
        if added is not None and released.seq < added.seq:
            refs.mismatch(where, f"{what} is released (seq {released.seq}) before it was "
                          f"placed (seq {added.seq})")  # fmt: skip


def _check_lifecycle_cited(refs: _Refs, b: dict[str, Any], where: str) -> None:
    """(Format 2) Every cited deletion or hold event of the backup is one its record cites:
    a record that leaves out a deletion or a hold the package proves says something else."""
    for event in refs.on_subject(f"backup:{b.get('id')}"):
        if event.action not in _LIFECYCLE_ACTIONS or event.seq in refs.referenced:
            continue
        refs.referenced[event.seq] = where  # reported here, not again as record-missing
        if event.action == "backup.deleted":
            status = _SHOW.repr(b.get("status"))
            refs.mismatch(where, f"the status is {status} in the record but backup.deleted "
                          f"(seq {event.seq}) deleted it at {event.time}")  # fmt: skip
        else:
            case = _SHOW.repr(event.details.get("case"))
            refs.mismatch(where, f"the holds leave out {event.action} (seq {event.seq}, case "
                          f"{case} at {event.time})")  # fmt: skip


def _check_artifacts(
    refs: _Refs,
    where: str,
    artifacts: list[dict[str, Any]],
    *,
    signed: BackupManifest,
    found: _Attestation,
    source: str,
) -> None:
    """Every signed artifact is in the record with the same values; the only unsigned one
    allowed is the clear-text copy of the signed manifest (its SHA-256 is the envelope's)."""
    by_path = {a.path: a.to_predicate() for a in signed.artifacts}
    seen: set[Any] = set()
    for a in artifacts:
        path = a.get("path")
        if not isinstance(path, str) or path in seen:
            refs.mismatch(where, f"artifact {_SHOW.repr(path)} is listed twice or has no path")
            continue
        seen.add(path)
        s = by_path.get(path)
        if s is None:
            if a.get("role") != "manifest" or a.get("sha256") != found.file_sha256:
                refs.mismatch(where, f"artifact {_SHOW.repr(path)} is not in {source}")
            continue
        for key in ("role", "dataset", "size", "sha256", "plain_size", "plain_sha256"):
            refs.same(where, f"artifact {path}: {key}", a.get(key), s[key], source)
    for path in by_path:
        if path not in seen:
            refs.mismatch(where, f"the signed artifact {_SHOW.repr(path)} is not in the record")


def _finding_triples(items: list[dict[str, Any]]) -> list[Any]:
    return _canonical_sort([f.get("code"), f.get("message"), f.get("subject")] for f in items)


def _signed_triples(findings: Iterable[Finding]) -> list[Any]:
    return _canonical_sort([f.code, f.message, f.subject] for f in findings)


def _codes(items: list[dict[str, Any]]) -> list[Any]:
    return _canonical_sort({json.dumps(f.get("code")): f.get("code") for f in items}.values())


def _check_verification(refs: _Refs, v: dict[str, Any], where: str) -> None:
    findings = _objects(v.get("findings"), "findings")
    event = refs.event(
        v.get("seq"), "verification.completed", f"backup:{v.get('backup_id')}", where
    )
    if event is not None:
        source, d = f"verification.completed (seq {event.seq})", event.details
        refs.same(where, "the verification id", v.get("id"), d.get("verification_id"), source)
        refs.same(where, "the kind", v.get("kind"), d.get("kind"), source)
        refs.same(where, "the result", v.get("ok"), d.get("ok"), source)
        refs.same(where, "the finding codes", _codes(findings), d.get("findings"), source)
    found = refs.attestation(v.get("attestation"), VERIFICATION_PREDICATE_TYPE, where)
    if found is None or not isinstance(found.predicate, VerificationPredicate):
        return
    signed, source = found.predicate, f"its attestation {v.get('attestation')}"
    refs.same(where, "the verification id", v.get("id"), signed.verification_id, source)
    refs.same(where, "the backup", v.get("backup_id"), signed.backup_id, source)
    for key, value in (("kind", signed.kind), ("ok", signed.ok),
                       ("started_at", signed.started_at.isoformat()),
                       ("finished_at", signed.finished_at.isoformat())):  # fmt: skip
        refs.same(where, key, v.get(key), value, source)
    refs.same(where, "the sample", v.get("sample_percent"),
              None if signed.sample is None else signed.sample.percent, source)  # fmt: skip
    refs.same(where, "the findings", _finding_triples(findings),
              _signed_triples(signed.findings), source)  # fmt: skip


def _check_drill(refs: _Refs, d: dict[str, Any], where: str) -> None:
    findings = _objects(d.get("findings"), "findings")
    event = refs.event(d.get("seq"), "drill.completed", f"backup:{d.get('backup_id')}", where)
    if event is not None:
        source, details = f"drill.completed (seq {event.seq})", event.details
        refs.same(where, "the drill id", d.get("id"), details.get("drill_id"), source)
        for key in ("ok", "target", "rto_seconds", "restore_seconds", "phases",
                    "fingerprint_match"):  # fmt: skip
            refs.same(where, key, d.get(key), details.get(key), source)
        refs.same(where, "the finding codes", _codes(findings), details.get("findings"), source)
    found = refs.attestation(d.get("attestation"), DRILL_PREDICATE_TYPE, where)
    if found is None or not isinstance(found.predicate, DrillPredicate):
        return
    signed, source = found.predicate, f"its attestation {d.get('attestation')}"
    refs.same(where, "the drill id", d.get("id"), signed.drill_id, source)
    refs.same(where, "the backup", d.get("backup_id"), signed.backup_id, source)
    for key, value in (("ok", signed.ok), ("target", signed.target),
                       ("rto_seconds", signed.rto_seconds),
                       ("restore_seconds", signed.restore_seconds),
                       ("phases", dict(signed.phases)),
                       ("fingerprint_match", signed.fingerprint_match),
                       ("started_at", signed.started_at.isoformat()),
                       ("finished_at", signed.finished_at.isoformat())):  # fmt: skip
        refs.same(where, key, d.get(key), value, source)
    refs.same(where, "the findings", _finding_triples(findings),
              _signed_triples(signed.findings), source)  # fmt: skip


# -- findings, exceptions, key rotations, policy versions ---------------------------------------


def _check_finding(refs: _Refs, f: dict[str, Any], where: str) -> None:
    subject = f"finding:{f.get('id')}"
    trail = _objects(f.get("trail"), "trail")
    if not trail or trail[0].get("status") != "open":
        refs.report.add(
            "reference-missing", "the trail does not begin with its finding.opened", where
        )
    previous: int | None = None
    for number, step in enumerate(trail, start=1):
        status, seq = step.get("status"), step.get("seq")
        action = _STEP_ACTIONS.get(status) if isinstance(status, str) else None
        if action is None or (status == "open" and number > 1):
            refs.mismatch(where, f"trail step {number} has status {_SHOW.repr(status)}")
            continue
        if isinstance(seq, int) and previous is not None and seq <= previous:
            refs.mismatch(where, f"trail step {number} (seq {seq}) is out of order")
        previous = seq if isinstance(seq, int) else previous
        event = refs.event(seq, action, subject, where)
        if event is None:
            continue
        source = f"{action} (seq {event.seq})"
        refs.same(where, f"step {number}'s actor", step.get("actor"), event.actor, source)
        note = event.details.get("message" if action == "finding.opened" else "note")
        refs.same(where, f"step {number}'s note", step.get("note"), note, source)
        if action == "finding.opened":
            for key in ("control", "subject", "severity"):
                refs.same(where, key, f.get(key), event.details.get(key), source)
    if trail:
        refs.same(where, "the status", f.get("status"), trail[-1].get("status"),
                  "its trail's last step")  # fmt: skip


def _check_exception(refs: _Refs, x: dict[str, Any], where: str) -> None:
    subject = f"exception:{x.get('id')}"
    by_action: dict[str, list[Event]] = {action: [] for action in _EXCEPTION_ACTIONS}
    for seq in _seq_list(x.get("seqs"), "seqs"):
        event = refs.event(seq, _EXCEPTION_ACTIONS, subject, where)
        if event is not None:
            by_action[event.action].append(event)
    requests = by_action["exception.requested"]
    approvals = by_action["exception.approved"]
    revocations = by_action["exception.revoked"]
    for action, found in by_action.items():
        if len(found) > 1:
            refs.mismatch(where, f"cites {action} {len(found)} times")
    requester = x.get("requested_by")
    if not requests:
        refs.report.add("reference-missing", "cites no exception.requested", where)
    else:
        request = requests[0]
        source = f"exception.requested (seq {request.seq})"
        refs.same(where, "the requester", requester, request.actor, source)
        requester = request.actor
        for key in ("control", "subject", "reason"):
            refs.same(where, key, x.get(key), request.details.get(key), source)
        refs.same(where, "the expiry", x.get("expires_at"), request.details.get("expires"), source)
    status = x.get("status")
    if status == "requested":
        if approvals or revocations:
            refs.mismatch(where, "the status is 'requested' but it was approved or revoked")
    elif status == "approved":
        if not approvals:
            refs.report.add("reference-missing", "approved, but cites no exception.approved", where)
        if revocations:
            refs.mismatch(where, "the status is 'approved' but it was revoked")
    elif status == "revoked":
        if not revocations:
            refs.report.add("reference-missing", "revoked, but cites no exception.revoked", where)
    else:
        refs.mismatch(where, f"the status {_SHOW.repr(status)} is not one an exception has")
    approver = x.get("approved_by")
    if approvals:
        approval = approvals[0]
        source = f"exception.approved (seq {approval.seq})"
        refs.same(where, "the approver", approver, approval.actor, source)
        for key in ("control", "subject"):
            refs.same(where, key, x.get(key), approval.details.get(key), source)
        refs.same(where, "the requester", x.get("requested_by"),
                  approval.details.get("requested_by"), source)  # fmt: skip
        if same_person(approval.actor, requester):
            refs.mismatch(where, f"approved by its requester {approval.actor!r}")
    elif approver is not None:
        refs.report.add(
            "reference-missing", f"names approver {_SHOW.repr(approver)} but cites no approval",
            where,
        )  # fmt: skip


def _check_rotation(refs: _Refs, k: dict[str, Any], where: str) -> None:
    event = refs.event(k.get("seq"), "keys.rotated", f"kek:{k.get('kek')}", where)
    if event is None:
        return
    source = f"keys.rotated (seq {event.seq})"
    refs.same(where, "the time", k.get("time"), event.time, source)
    refs.same(where, "the actor", k.get("actor"), event.actor, source)
    for key in ("old_version", "new_version"):
        refs.same(where, key, k.get(key), event.details.get(key), source)


def _check_policy(refs: _Refs, p: dict[str, Any], where: str) -> None:
    text = p.get("text")
    if not isinstance(text, str) or sha256_hex(text.encode("utf-8")) != p.get("sha256"):
        refs.mismatch(where, "the policy text does not match its SHA-256")
    subject = f"policy:v{p.get('version')}"
    proposer, approver = p.get("proposed_by"), p.get("approved_by")
    proposal = refs.event(p.get("proposal_seq"), "policy.proposed", subject, where)
    if proposal is not None:
        source = f"policy.proposed (seq {proposal.seq})"
        refs.same(where, "the proposer", proposer, proposal.actor, source)
        refs.same(
            where, "the policy digest", p.get("sha256"), proposal.details.get("sha256"), source
        )
        proposer = proposal.actor
    if approver is None and p.get("approval_seq") is None:
        return
    approval = refs.event(p.get("approval_seq"), "policy.approved", subject, where)
    if approval is not None:
        source = f"policy.approved (seq {approval.seq})"
        refs.same(where, "the approver", approver, approval.actor, source)
        refs.same(
            where, "the policy digest", p.get("sha256"), approval.details.get("sha256"), source
        )
        refs.same(where, "the proposer", p.get("proposed_by"),
                  approval.details.get("proposed_by"), source)  # fmt: skip
        approver = approval.actor
    if same_person(proposer, approver):
        refs.mismatch(where, f"approved by its proposer {_SHOW.repr(approver)}")


# -- exports ----------------------------------------------------------------------------------


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, dict) else {}


def _file_name(output: Any) -> Any:
    """The file name a record's ``output`` shows (a file's name, or an ``s3://`` URL's last
    part); anything else as is. The folder or bucket is signed nowhere: only the name is."""
    if isinstance(output, str) and output and not output.endswith("/"):
        return output.rsplit("/", 1)[-1]
    return output


def _window(period: Any) -> tuple[datetime, datetime] | None:
    """The package's period ``[from, to)`` as instants (None when the manifest has none
    that reads: the manifest's own checks report that)."""
    if not isinstance(period, dict):
        return None
    start, end = _moment(period.get("from")), _moment(period.get("to"))
    if isinstance(start, datetime) and isinstance(end, datetime):
        return start, end
    return None


def _check_exports(
    refs: _Refs,
    files: Mapping[str, bytes],
    keys: Mapping[str, VerifyingKey],
    results: list[dict[str, Any]] | None,
    *,
    period: Any = None,
) -> None:
    """Each line of ``records/exports.json`` against its signed export manifest and the
    ledger events it cites (:func:`_check_export`), its ``export.completed`` inside the
    package's ``period`` (the signed manifest's); every file under ``exports/`` is the
    manifest of one record; and a passing ``export.*`` control result is for an export whose
    record and manifest hold up (:func:`_check_export_controls`)."""
    window = _window(period)
    manifests = {p for p in files if p.startswith(EXPORT_MANIFESTS)}
    raw = files.get(EXPORT_RECORDS)
    records: list[dict[str, Any]] = []
    if raw is not None:
        try:
            value = _loads(raw)
            if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
                raise ValueError("not a list of objects")
            records = value
        except ValueError as exc:
            refs.report.add("record-malformed", f"{exc}", EXPORT_RECORDS)
    refs.report.summary["exports"] = len(records)
    cited: set[str] = set()
    held: dict[str, _ExportCheck] = {}  # export id -> what its record proved
    for record in records:
        where, before = f"{EXPORT_RECORDS}#?", len(refs.report.findings)
        check = _ExportCheck()
        try:
            where = f"{EXPORT_RECORDS}#{_label(record.get('id'))}"
            if _label(record.get("id")) in held:
                refs.report.add("record-duplicate", "appears more than once", where)
                continue
            held[_label(record.get("id"))] = check
            _check_export(refs, record, where, files=files, keys=keys, check=check, window=window)
        except _BROKEN as exc:
            refs.report.add("record-malformed", f"the record is malformed: {_describe(exc)}", where)
        if check.manifest_path is not None:
            cited.add(check.manifest_path)
        check.sound = len(refs.report.findings) == before and check.predicate is not None
    for path in sorted(manifests - cited):
        refs.report.add(
            "export-manifest-unreferenced", "no export record cites this export manifest", path
        )
    _check_export_controls(refs, results, held)


@dataclass(slots=True)
class _ExportCheck:
    """What checking one export record established."""

    manifest_path: str | None = None  # the package file it cites, when present
    predicate: Mapping[str, Any] | None = None  # its manifest's, when the signature verified
    sound: bool = False  # no finding at all on the record, its manifest and its events


def _check_export(
    refs: _Refs,
    r: dict[str, Any],
    where: str,
    *,
    files: Mapping[str, bytes],
    keys: Mapping[str, VerifyingKey],
    check: _ExportCheck,
    window: tuple[datetime, datetime] | None = None,
) -> None:
    """One export record: its ``export.completed`` says what the record says and lies in
    the package's period; its manifest is in the package, verifies under the key, is the one
    its cited ``attestation.created`` recorded, and its predicate agrees with the record and
    the event."""
    export_id = r.get("id")
    if not isinstance(export_id, str) or not export_id:
        raise _Malformed("the export id is not a string")
    completed = refs.event(r.get("completed_seq"), "export.completed", f"export:{export_id}", where)
    if completed is not None:
        source = f"export.completed (seq {completed.seq})"
        for key in ("spec", "version", "backup_id", "recipient", "output_sha256", "records",
                    "manifest_sha256"):  # fmt: skip
            refs.same(where, key, r.get(key), completed.details.get(key), source)
        refs.same(where, "the output's name", _file_name(r.get("output")),
                  completed.details.get("output"), source)  # fmt: skip
        at = _moment(completed.time)
        if window is not None and not (isinstance(at, datetime) and window[0] <= at < window[1]):
            refs.mismatch(
                where,
                f"{source} was recorded at {_SHOW.repr(completed.time)}, outside the package's "
                f"period ({window[0].isoformat()} to {window[1].isoformat()})",
            )
    path, problem = r.get("manifest"), r.get("manifest_problem")
    if path is None or problem is not None:
        why = _SHOW.repr(problem) if problem is not None else "the record names none"
        refs.report.add(
            "export-manifest-missing",
            f"the export's signed manifest is not in the package ({why}): nothing here proves "
            "what was exported",
            where,
        )
        return
    expected = f"{EXPORT_MANIFESTS}{export_id}.manifest.dsse.json"
    if path != expected:
        refs.mismatch(where, f"the manifest is {_SHOW.repr(path)}, not {expected}")
        return
    data = files.get(path)
    if data is None:
        refs.report.add("reference-missing", f"its manifest {path} is not in the package", where)
        return
    check.manifest_path = path
    try:
        envelope = Envelope.from_json(data)
        statement = verify_attestation(envelope, keys, predicate_type=EXPORT_PREDICATE_TYPE)
    except (Error, RecursionError) as exc:
        refs.report.add(
            "attestation-invalid", f"the export manifest does not verify: {_describe(exc)}", path
        )
        return
    payload_sha256 = sha256_hex(envelope.payload)
    attested = refs.event(
        r.get("attestation_seq"), "attestation.created", f"attestation:{payload_sha256}", where
    )
    if attested is not None:
        source = f"attestation.created (seq {attested.seq})"
        d = attested.details
        refs.same(where, "the manifest file's SHA-256", sha256_hex(data),
                  d.get("envelope_sha256"), source)  # fmt: skip
        refs.same(where, "the predicate type", EXPORT_PREDICATE_TYPE, d.get("predicate_type"),
                  source)  # fmt: skip
        refs.same(where, "the subjects", [s.to_dict() for s in statement.subjects],
                  d.get("subjects"), source)  # fmt: skip
    check.predicate = statement.predicate
    _check_export_predicate(
        refs,
        r,
        where,
        statement=statement,
        payload_sha256=payload_sha256,
        completed=completed,
        path=path,
    )


def _check_export_predicate(
    refs: _Refs,
    r: dict[str, Any],
    where: str,
    *,
    statement: Statement,
    payload_sha256: str,
    completed: Event | None,
    path: str,
) -> None:
    """The signed predicate agrees with the record and with ``export.completed``."""
    p = statement.predicate
    spec, output = _mapping(p.get("spec")), _mapping(p.get("output"))
    recipient, approvals = _mapping(p.get("recipient")), _mapping(p.get("approvals"))
    source = f"its manifest {path}"
    shown_input = _mapping(p.get("input"))
    input_ref = "live" if shown_input.get("from") == "live" else shown_input.get("backup_id")
    for what, value, signed in (
        ("the export id", r.get("id"), p.get("export_id")),
        ("the spec", r.get("spec"), spec.get("name")),
        ("the spec version", r.get("version"), spec.get("version")),
        ("the input", r.get("backup_id"), input_ref),
        ("the records (in, out, excluded)", r.get("records"), p.get("records")),
        ("the output SHA-256", r.get("output_sha256"), output.get("sha256")),
        ("the output's name", _file_name(r.get("output")), output.get("file")),
        ("the recipient", r.get("recipient"), recipient.get("name")),
        ("the manifest digest", r.get("manifest_sha256"), payload_sha256),
    ):
        refs.same(where, what, value, signed, source)
    subjects = [(s.name, s.sha256) for s in statement.subjects]
    if subjects != [(output.get("file"), output.get("sha256"))]:
        refs.mismatch(where, f"{source} signs {_SHOW.repr(subjects)}, not its output file")
    if same_person(spec.get("proposed_by"), spec.get("approved_by")):
        refs.mismatch(where, f"{source}: the spec was approved by its proposer")
    if completed is None:
        return
    d, event = completed.details, f"export.completed (seq {completed.seq})"
    spec_approval = {"approved_by": spec.get("approved_by"), "seq": spec.get("approval_seq")}
    for what, signed, recorded in (
        ("the spec digest", spec.get("sha256"), d.get("spec_sha256")),
        ("the spec and its approval", dict(spec), d.get("spec_approval")),
        ("the spec approval", approvals.get("spec"), spec_approval),
        ("the run's approval", approvals.get("run"),
         d.get("approval", {"standing": "local-os-user"})),
        ("the records (in, out, excluded)", p.get("records"), d.get("records")),
        ("the output SHA-256", output.get("sha256"), d.get("output_sha256")),
        ("the output fingerprint", output.get("fingerprint"), d.get("fingerprint")),
        ("the plaintext SHA-256", output.get("plaintext_sha256"), d.get("plaintext_sha256")),
        ("the recipient key", recipient.get("public_key"), d.get("public_key")),
        ("the purpose", p.get("purpose"), d.get("purpose")),
        ("the legal basis", p.get("legal_basis"), d.get("legal_basis")),
    ):  # fmt: skip
        if not _equal(signed, recorded):
            refs.mismatch(
                where,
                f"{what} is {_SHOW.repr(signed)} in {source} but {_SHOW.repr(recorded)} in {event}",
            )


_RUN_APPROVED = frozenset({"approved", "not-required"})


def _check_export_controls(
    refs: _Refs, results: list[dict[str, Any]] | None, held: Mapping[str, _ExportCheck]
) -> None:
    """A passing ``export.*`` result is for an export this package backs: its record is
    here and holds up (manifest present and verified, events cited and agreeing); a passing
    ``export.approved`` needs a run approved through the multi-party path in the signed
    manifest."""
    if not results:
        return
    cited = {e.subject for e in refs.events.values() if e.action == "export.completed"}
    for result in results:
        control, subject = result.get("control"), result.get("subject")
        if not isinstance(control, str) or not control.startswith("export."):
            continue
        if result.get("status") != "pass" or not isinstance(subject, str):
            continue
        where = f"{RECORDS['results']}#{_label(control)}:{_label(subject)}"
        check = held.get(subject.removeprefix("export:"))
        if check is None:
            if subject in cited:
                refs.report.add(
                    "export-control-inconsistent",
                    f"{control} passed for {subject}, which has no export record here",
                    where,
                )
            continue
        if not check.sound or check.predicate is None:
            refs.report.add(
                "export-control-inconsistent",
                f"{control} passed for {subject}, whose export record or signed manifest does "
                "not hold up in this package",
                where,
            )
            continue
        p = check.predicate
        if control == "export.approved":
            run = _mapping(_mapping(p.get("approvals")).get("run"))
            if run.get("standing") not in _RUN_APPROVED:
                refs.report.add(
                    "export-control-inconsistent",
                    f"{control} passed, but the signed manifest says the run's approval was "
                    f"{_SHOW.repr(run.get('standing'))}",
                    where,
                )


# -- control results --------------------------------------------------------------------------


def _check_controls(refs: _Refs, records: Mapping[str, list[dict[str, Any]]]) -> None:
    """Each check run matches its ``policy.checked`` event; the control results are those the
    newest run (highest seq) committed to; a package without them fails (an empty rule set
    proves nothing)."""
    runs = records.get("check_runs", [])
    results = records.get("results")
    newest: list[tuple[int, dict[str, Any]]] = []

    def check(refs: _Refs, run: dict[str, Any], where: str) -> None:
        event = refs.event(run.get("seq"), "policy.checked", f"check:{run.get('id')}", where)
        if event is None:
            return
        source = f"policy.checked (seq {event.seq})"
        for key in ("results_sha256", "ok", "policy_version"):
            refs.same(where, key, run.get(key), event.details.get(key), source)
        refs.same(where, "the actor", run.get("actor"), event.actor, source)
        newest.append((event.seq, run))

    _each(refs, records, "check_runs", check, lambda r: _label(r.get("id")))
    where = RECORDS["results"]
    if not runs:
        refs.report.add(
            "control-results-missing", "no policy check ran in the period", RECORDS["check_runs"]
        )
        if results:
            refs.report.add("reference-missing", "control results without a policy check", where)
        return
    if results is None:
        return  # reported as missing or malformed
    if not results:
        refs.report.add(
            "control-results-missing", "the newest policy check evaluated no control", where
        )
    if not newest:
        return  # each run's broken reference is reported
    seq, run = max(newest, key=lambda item: item[0])
    try:
        digest = sha256_hex(rfc8785.dumps(results))
    except (rfc8785.CanonicalizationError, *_BROKEN) as exc:
        refs.report.add("record-malformed", f"not canonical JSON: {_describe(exc)}", where)
        return
    if digest != run.get("results_sha256"):
        refs.report.add(
            "record-mismatch",
            f"the control results differ from what the newest policy check (seq {seq}) "
            "committed to",
            where,
        )


# -- completeness and renderings --------------------------------------------------------------


def _completeness(refs: _Refs, files: Mapping[str, bytes]) -> None:
    """Every cited event that stands for a record has its record; every attestation backs
    exactly one record."""
    for seq, event in sorted(refs.events.items()):
        if event.action in refs.record_actions and seq not in refs.referenced:
            refs.report.add(
                "record-missing",
                f"ledger seq {seq} ({event.action} on {event.subject}) has no record",
                EVENTS,
                seq=seq,
            )
    for path in sorted(p for p in files if p.startswith("attestations/")):
        uses = refs.attestation_uses.get(path, 0)
        if uses != 1:
            refs.report.add(
                "attestation-unreferenced",
                "no record refers to it" if uses == 0 else f"{uses} records refer to it",
                path,
            )


def _renderings(files: Mapping[str, bytes], report: EvidenceReport) -> None:
    raw = files.get(OSCAL)
    if raw is None:
        report.add("file-missing", "the package has no OSCAL document", OSCAL)
    else:
        try:
            doc = _loads(raw)
            if not isinstance(doc, dict) or not isinstance(doc.get("assessment-results"), dict):
                raise ValueError("no assessment-results object")
        except ValueError as exc:
            report.add("oscal-malformed", f"the OSCAL document is malformed: {exc}", OSCAL)
    if REPORT not in files:
        report.add("file-missing", "the package has no HTML report", REPORT)
