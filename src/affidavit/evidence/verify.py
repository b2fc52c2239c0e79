"""The offline verifier of evidence packages: nothing but the package's bytes and the ledger's
verifier key (``<origin>+<key id>+<base64>``). No catalog, no network.

It checks, collecting every problem rather than stopping at the first:

1. the archive itself (regular files, safe paths, no duplicates, not truncated);
2. ``manifest.sig``: a DSSE envelope over exactly ``manifest.json``, signed by the key;
3. every file listed with its size and SHA-256, and nothing unlisted;
4. ``checkpoint.note`` signed by the key for the key's origin, equal to the manifest's;
5. every cited ledger event's inclusion proof against that checkpoint;
6. every attestation's signature, and that a cited ``attestation.created`` event carries
   its digest (an attestation lifted from another package is not cited here);
7. cross-references: each record's ledger events exist with the right action and subject,
   attestations agree with the records they back, policy texts match their approved digests,
   and the control results match the digest the ``policy.checked`` event committed to;
8. the OSCAL document and the report are present and well-formed.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import rfc8785

from affidavit.crypto.digest import sha256_hex
from affidavit.crypto.dsse import Envelope, verify_envelope
from affidavit.crypto.note import NoteVerifier
from affidavit.crypto.signing import VerifyingKey
from affidavit.errors import Error
from affidavit.evidence.content import FORMAT
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
    VERIFICATION_PREDICATE_TYPE,
    Statement,
    verify_attestation,
)
from affidavit.ledger.checkpoint import Checkpoint, open_checkpoint
from affidavit.models.checks import Finding
from affidavit.models.ledger import Event

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
_STEP_ACTIONS = {
    "open": "finding.opened",
    "acknowledged": "finding.acknowledged",
    "resolved": "finding.resolved",
}


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
    statements = _attestations(files, keys, events, report)
    records = _records(files, report)
    _cross_references(records, events, statements, report)
    _renderings(files, report)
    report.summary.update(
        {
            "files": len(files),
            "events": len(events),
            "attestations": len(statements),
            "origin": verifier.name,
            **{
                name: len(records.get(name, []))
                for name in ("backups", "verifications", "drills", "findings")
            },
        }
    )
    return report


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
                    f"signed payload type is {envelope.payload_type!r}",
                    SIGNATURE,
                )
            elif payload != raw:
                report.add(
                    "signature-invalid", "the signature covers a different manifest", SIGNATURE
                )
            else:
                report.summary["signature_verified"] = True
        except Error as exc:
            report.add(
                "signature-invalid",
                f"the manifest signature does not verify: {exc.message}",
                SIGNATURE,
            )
    try:
        manifest = json.loads(raw)
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
            raise ValueError(f"not an {FORMAT} manifest")
        if not isinstance(manifest.get("files"), list):
            raise ValueError("no file list")
    except ValueError as exc:
        report.add("manifest-malformed", f"manifest.json is malformed: {exc}", MANIFEST)
        return {}
    if manifest.get("origin") != verifier.name:
        report.add(
            "origin-mismatch",
            f"the package is for log {manifest.get('origin')!r}, the key for {verifier.name!r}",
            MANIFEST,
        )
    report.summary["period"] = manifest.get("period")
    report.summary["framework"] = manifest.get("framework")
    return manifest


def _files(files: Mapping[str, bytes], manifest: Mapping[str, Any], report: EvidenceReport) -> None:
    listed: dict[str, Mapping[str, Any]] = {}
    for item in manifest.get("files", []):
        if not isinstance(item, dict) or not isinstance(item.get("path"), str):
            report.add("manifest-malformed", "a file entry is malformed", MANIFEST)
            continue
        listed[item["path"]] = item
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
    claimed = manifest.get("checkpoint") or {}
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
    for number, line in enumerate(raw.splitlines(), start=1):
        where = f"{EVENTS}:{number}"
        try:
            obj = json.loads(line)
            seq, entry = obj["seq"], obj["entry"].encode("utf-8")
            proof = [bytes.fromhex(h) for h in obj["proof"]]
            if not isinstance(seq, int) or isinstance(seq, bool):
                raise TypeError("seq is not an integer")
            event = Event.from_canonical(entry)
        except (ValueError, KeyError, TypeError, AttributeError, Error) as exc:
            msg = exc.message if isinstance(exc, Error) else str(exc)
            report.add("event-malformed", f"line {number} is not a cited event: {msg}", where)
            continue
        if event.seq != seq:
            report.add(
                "event-malformed", f"line {number} says seq {seq}, its entry {event.seq}", where
            )
            continue
        if seq in events:
            report.add("event-duplicate", f"seq {seq} is cited twice", where)
            continue
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


def _attestations(
    files: Mapping[str, bytes],
    keys: Mapping[str, VerifyingKey],
    events: Mapping[int, Event],
    report: EvidenceReport,
) -> dict[str, Statement]:
    cited = {
        str(e.details.get("envelope_sha256")): e.seq
        for e in events.values()
        if e.action == "attestation.created"
    }
    statements: dict[str, Statement] = {}
    for path, data in sorted(files.items()):
        if not path.startswith("attestations/"):
            continue
        try:
            statement = verify_attestation(Envelope.from_json(data), keys)
        except Error as exc:
            report.add("attestation-invalid", f"does not verify: {exc.message}", path)
            continue
        if sha256_hex(data) not in cited:
            report.add(
                "attestation-uncited",
                "no cited attestation.created event carries this envelope's digest",
                path,
            )
            continue
        statements[path] = statement
    return statements


# -- records and cross-references ---------------------------------------------------------------


def _records(files: Mapping[str, bytes], report: EvidenceReport) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for name, path in RECORDS.items():
        raw = files.get(path)
        if raw is None:
            report.add("file-missing", "a record file is missing", path)
            continue
        try:
            value = json.loads(raw)
            if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
                raise ValueError("not a list of objects")
        except ValueError as exc:
            report.add("record-malformed", f"{exc}", path)
            continue
        out[name] = value
    return out


class _Refs:
    """Cross-reference checks with the report at hand."""

    def __init__(
        self,
        events: Mapping[int, Event],
        statements: Mapping[str, Statement],
        report: EvidenceReport,
    ) -> None:
        self.events, self.statements, self.report = events, statements, report

    def event(
        self, seq: Any, action: str | Iterable[str], subject: str, where: str
    ) -> Event | None:
        actions = {action} if isinstance(action, str) else set(action)
        if seq is None:
            self.report.add(
                "reference-missing", f"cites no ledger event ({'/'.join(sorted(actions))})", where
            )
            return None
        event = self.events.get(seq) if isinstance(seq, int) else None
        if event is None:
            self.report.add(
                "reference-missing", f"cites ledger seq {seq}, which is not proven here", where
            )
            return None
        if event.action not in actions or event.subject != subject:
            self.report.add(
                "reference-mismatch",
                f"ledger seq {seq} is {event.action} on {event.subject}, expected "
                f"{'/'.join(sorted(actions))} on {subject}",
                where,
            )
            return None
        return event

    def statement(self, path: Any, predicate_type: str, where: str) -> dict[str, Any] | None:
        if path is None:
            self.report.add("reference-missing", "has no attestation", where)
            return None
        statement = self.statements.get(str(path))
        if statement is None:
            self.report.add(
                "reference-missing", f"its attestation {path} is missing or invalid", where
            )
            return None
        if statement.predicate_type != predicate_type:
            self.report.add("reference-mismatch", f"{path} is a {statement.predicate_type}", where)
            return None
        return dict(statement.predicate)

    def same(self, where: str, what: str, record: Any, signed: Any) -> None:
        if record != signed:
            self.report.add(
                "record-mismatch",
                f"{what} is {record!r} in the record but {signed!r} in its attestation",
                where,
            )


def _cross_references(
    records: Mapping[str, list[dict[str, Any]]],
    events: Mapping[int, Event],
    statements: Mapping[str, Statement],
    report: EvidenceReport,
) -> None:
    refs = _Refs(events, statements, report)
    _check_backups(refs, records.get("backups", []))
    _check_verifications(refs, records.get("verifications", []))
    _check_drills(refs, records.get("drills", []))
    _check_trails(refs, records)
    _check_policy(refs, records.get("policy_versions", []))
    _check_controls(refs, records.get("check_runs", []), records.get("results"))


def _check_backups(refs: _Refs, backups: list[dict[str, Any]]) -> None:
    for b in backups:
        where = f"{RECORDS['backups']}#{b.get('id')}"
        if b.get("status") not in ("complete", "deleted"):
            continue
        refs.event(b.get("seq"), "backup.completed", f"backup:{b.get('id')}", where)
        pred = refs.statement(b.get("attestation"), BACKUP_PREDICATE_TYPE, where)
        if pred is not None:
            signed = sorted(
                (d.get("name"), d.get("records"), d.get("fingerprint"))
                for d in pred.get("datasets", [])
            )
            mine = sorted(
                (d.get("name"), d.get("records"), d.get("fingerprint"))
                for d in b.get("datasets", [])
            )
            refs.same(where, "the datasets", mine, signed)


def _check_verifications(refs: _Refs, verifications: list[dict[str, Any]]) -> None:
    for v in verifications:
        where = f"{RECORDS['verifications']}#{v.get('id')}"
        event = refs.event(
            v.get("seq"), "verification.completed", f"backup:{v.get('backup_id')}", where
        )
        if event is not None:
            refs.same(
                where, "the verification id", v.get("id"), event.details.get("verification_id")
            )
        pred = refs.statement(v.get("attestation"), VERIFICATION_PREDICATE_TYPE, where)
        if pred is not None:
            refs.same(where, "the verification id", v.get("id"), pred.get("verification_id"))
            refs.same(where, "the backup", v.get("backup_id"), pred.get("backup_id"))
            refs.same(where, "the result", v.get("ok"), pred.get("ok"))


def _check_drills(refs: _Refs, drills: list[dict[str, Any]]) -> None:
    for d in drills:
        where = f"{RECORDS['drills']}#{d.get('id')}"
        event = refs.event(d.get("seq"), "drill.completed", f"backup:{d.get('backup_id')}", where)
        if event is not None:
            refs.same(where, "the drill id", d.get("id"), event.details.get("drill_id"))
        pred = refs.statement(d.get("attestation"), DRILL_PREDICATE_TYPE, where)
        if pred is not None:
            refs.same(where, "the drill id", d.get("id"), pred.get("drill_id"))
            refs.same(where, "the result", d.get("ok"), pred.get("ok"))
            refs.same(
                where, "the restore time", d.get("restore_seconds"), pred.get("restore_seconds")
            )
            refs.same(where, "the RTO", d.get("rto_seconds"), pred.get("rto_seconds"))


def _check_trails(refs: _Refs, records: Mapping[str, list[dict[str, Any]]]) -> None:
    for f in records.get("findings", []):
        where = f"{RECORDS['findings']}#{f.get('id')}"
        for step in f.get("trail", []):
            action = _STEP_ACTIONS.get(str(step.get("status")), "finding.?")
            refs.event(step.get("seq"), action, f"finding:{f.get('id')}", where)
    for x in records.get("exceptions", []):
        where = f"{RECORDS['exceptions']}#{x.get('id')}"
        for seq in x.get("seqs", []):
            refs.event(seq, ("exception.requested", "exception.approved", "exception.revoked"),
                       f"exception:{x.get('id')}", where)  # fmt: skip
    for k in records.get("key_rotations", []):
        where = f"{RECORDS['key_rotations']}#{k.get('seq')}"
        refs.event(k.get("seq"), "keys.rotated", f"kek:{k.get('kek')}", where)


def _check_policy(refs: _Refs, versions: list[dict[str, Any]]) -> None:
    for p in versions:
        where = f"{RECORDS['policy_versions']}#v{p.get('version')}"
        text = p.get("text")
        if not isinstance(text, str) or sha256_hex(text.encode("utf-8")) != p.get("sha256"):
            refs.report.add("record-mismatch", "the policy text does not match its SHA-256", where)
        subject = f"policy:v{p.get('version')}"
        steps = [("proposal_seq", "policy.proposed")]
        if p.get("approved_by") is not None:
            steps.append(("approval_seq", "policy.approved"))
        for key, action in steps:
            event = refs.event(p.get(key), action, subject, where)
            if event is not None and event.details.get("sha256") != p.get("sha256"):
                refs.report.add("record-mismatch", f"{action} names another policy text", where)


def _check_controls(
    refs: _Refs, runs: list[dict[str, Any]], results: list[dict[str, Any]] | None
) -> None:
    for run in runs:
        where = f"{RECORDS['check_runs']}#{run.get('id')}"
        event = refs.event(run.get("seq"), "policy.checked", f"check:{run.get('id')}", where)
        if event is not None:
            refs.same(where, "the results digest", run.get("results_sha256"),
                      event.details.get("results_sha256"))  # fmt: skip
    if runs and results is not None:
        if sha256_hex(rfc8785.dumps(results)) != runs[-1].get("results_sha256"):
            refs.report.add(
                "record-mismatch",
                "the control results differ from what the newest policy check committed to",
                RECORDS["results"],
            )
    elif results:
        refs.report.add(
            "reference-missing", "control results without a policy check", RECORDS["results"]
        )


def _renderings(files: Mapping[str, bytes], report: EvidenceReport) -> None:
    raw = files.get(OSCAL)
    if raw is None:
        report.add("file-missing", "the package has no OSCAL document", OSCAL)
    else:
        try:
            doc = json.loads(raw)
            if not isinstance(doc, dict) or not isinstance(doc.get("assessment-results"), dict):
                raise ValueError("no assessment-results object")
        except ValueError as exc:
            report.add("oscal-malformed", f"the OSCAL document is malformed: {exc}", OSCAL)
    if REPORT not in files:
        report.add("file-missing", "the package has no HTML report", REPORT)
