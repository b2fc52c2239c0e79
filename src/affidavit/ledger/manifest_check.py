"""The one check of a backup's signed manifest, shared by ``verify``, drills and the offline
evidence verifier.

:func:`check_signed_manifest` takes the DSSE envelope's bytes, the ledger key(s) and what the
caller knows the manifest must match, and returns the parsed
:class:`~affidavit.models.manifest.BackupManifest` with every discrepancy it found, as
:class:`ManifestIssue` values. It collects and never raises: a missing, forged or malformed
envelope, a valid signature over something that is not a manifest, or a manifest that
disagrees with the catalog or the ledger is an issue, never a traceback. Each issue carries
its :class:`~affidavit.models.checks.CheckCode` and what was checked
(:class:`ManifestDefect`), so that each caller turns it into its own finding.

What is checked, in order (a failure of the first three stops the check, for nothing signed
can be read):

1. there is an envelope (``manifest-missing``);
2. its bytes are the ones the ledger recorded (``attestation.created``'s ``envelope_sha256``,
   when given; ``manifest-mismatch``);
3. it verifies with a ledger key, has the in-toto payload type, holds an in-toto statement
   of the backup predicate type, and its predicate is a manifest of this version
   (``manifest-signature-invalid``);
4. the manifest is for the expected backup (``manifest-mismatch``);
5. the statement's subjects are the manifest's artifacts (``subjects-mismatch``);
6. the statement's SHA-256 is the one the ledger recorded (``backup.completed``'s
   ``manifest_sha256``, when given; ``manifest-mismatch``);
7. the catalog's copy agrees (when given, :class:`CatalogManifest`): its statement bytes and
   their digest (``manifest-missing``, ``manifest-mismatch``), its artifact rows
   (``subjects-mismatch``) and its dataset fingerprints (``manifest-mismatch``).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from affidavit.crypto.digest import constant_time_equal, sha256_hex
from affidavit.crypto.dsse import Envelope
from affidavit.crypto.signing import VerifyingKey
from affidavit.errors import Error
from affidavit.ledger.attestation import BACKUP_PREDICATE_TYPE, Statement, verify_attestation
from affidavit.models.backup import ArtifactRole, Backup
from affidavit.models.checks import CheckCode, Finding
from affidavit.models.manifest import BackupManifest, PredicateError

__all__ = [
    "CatalogManifest",
    "ManifestCheck",
    "ManifestDefect",
    "ManifestIssue",
    "check_backup_manifest",
    "check_signed_manifest",
]


class ManifestDefect(StrEnum):
    """What a :class:`ManifestIssue` is about (callers map issues by it)."""

    MISSING = "missing"  # no envelope, or the catalog holds no statement beside it
    ENVELOPE_DIGEST = "envelope-digest"  # not the envelope the ledger recorded
    SIGNATURE = "signature"  # does not verify, not in-toto, not a backup statement
    MALFORMED = "malformed"  # signed, but the predicate is not a manifest of this version
    BACKUP_ID = "backup-id"  # the manifest of another backup
    SUBJECTS = "subjects"  # the statement's subjects are not the manifest's artifacts
    PAYLOAD_DIGEST = "payload-digest"  # not the statement the ledger recorded
    STATEMENT = "statement"  # the catalog's statement bytes or digest differ
    ARTIFACTS = "artifacts"  # the catalog's artifact rows differ
    DATASETS = "datasets"  # the catalog's dataset fingerprints differ


@dataclass(frozen=True, slots=True, kw_only=True)
class ManifestIssue:
    """One discrepancy of a signed manifest. ``reason`` is the underlying error's message
    (signature, malformed predicate), for callers that phrase their own finding."""

    defect: ManifestDefect
    code: CheckCode
    message: str
    reason: str = ""
    details: Mapping[str, Any] = field(default_factory=dict)

    def finding(self, subject: str) -> Finding:
        """This issue as a finding about ``subject`` (a backup id)."""
        return Finding(
            code=self.code.value, message=self.message, subject=subject, details=dict(self.details)
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class CatalogManifest:
    """What the catalog holds of a backup's manifest, to be checked against the signed one:
    the statement's bytes (``backups.manifest``) and SHA-256 (``manifest_sha256``), the
    artifact rows as ``(path, ciphertext sha256)`` (the manifest's own copy excluded) and
    the datasets' fingerprints."""

    statement: bytes | None
    statement_sha256: str | None
    artifacts: Collection[tuple[str, str]]
    datasets: Mapping[str, str]

    @classmethod
    def of(cls, backup: Backup) -> CatalogManifest:
        """What the catalog row ``backup`` says."""
        return cls(
            statement=backup.manifest,
            statement_sha256=backup.manifest_sha256,
            artifacts=[
                (a.path, a.sha256) for a in backup.artifacts if a.role is not ArtifactRole.MANIFEST
            ],
            datasets={d.name: d.fingerprint for d in backup.datasets},
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class ManifestCheck:
    """The outcome: the signed manifest (None when nothing signed could be read: no envelope,
    a bad signature, a malformed predicate), its statement and the statement's SHA-256, and
    every issue found. A manifest is returned even when it disagrees with the catalog or the
    ledger: the caller decides whether to take its expectations from it."""

    manifest: BackupManifest | None
    statement: Statement | None
    payload_sha256: str | None
    issues: tuple[ManifestIssue, ...]

    @property
    def ok(self) -> bool:
        """No issue at all."""
        return self.manifest is not None and not self.issues

    def findings(self, subject: str) -> list[Finding]:
        """Every issue as a finding about ``subject``."""
        return [issue.finding(subject) for issue in self.issues]


def _keyid(keys: Mapping[str, VerifyingKey]) -> dict[str, Any]:
    if len(keys) == 1:
        return {"keyid": next(iter(keys))}
    return {"keyids": sorted(keys)}


def _describe(exc: BaseException) -> str:
    if isinstance(exc, RecursionError):
        return "the envelope is nested too deeply"
    return exc.message if isinstance(exc, Error) else str(exc)


def _issue(defect: ManifestDefect, code: CheckCode, message: str, **details: Any) -> ManifestIssue:
    return ManifestIssue(defect=defect, code=code, message=message, details=details)


def check_signed_manifest(
    envelope: bytes | str | None,
    keys: Mapping[str, VerifyingKey],
    *,
    backup_id: str | None,
    envelope_sha256: str | None = None,
    manifest_sha256: str | None = None,
    catalog: CatalogManifest | None = None,
) -> ManifestCheck:
    """Check a backup's signed manifest (the module docstring lists the checks).

    ``envelope``: the DSSE envelope's JSON (None: there is none). ``keys``: the ledger's
    verifying key(s) by key ID. ``backup_id``: the backup it must describe (None: the caller
    compares the id itself). ``envelope_sha256`` / ``manifest_sha256``: the digests of the
    envelope and of the signed statement that the ledger recorded, when the caller has them.
    ``catalog``: the catalog's copy, when there is one. Never raises for any input.
    """
    if envelope is None:
        missing = _issue(
            ManifestDefect.MISSING,
            CheckCode.MANIFEST_MISSING,
            "the catalog holds no signed manifest",
        )
        return ManifestCheck(manifest=None, statement=None, payload_sha256=None, issues=(missing,))
    issues: list[ManifestIssue] = []
    data = envelope.encode("utf-8", "surrogatepass") if isinstance(envelope, str) else envelope
    if envelope_sha256 is not None and sha256_hex(data) != envelope_sha256:
        issues.append(
            _issue(
                ManifestDefect.ENVELOPE_DIGEST,
                CheckCode.MANIFEST_MISMATCH,
                "the manifest's envelope is not the one the ledger recorded",
                envelope_sha256=sha256_hex(data),
                recorded_sha256=envelope_sha256,
            )
        )
    try:
        parsed = Envelope.from_json(data)
        statement = verify_attestation(parsed, keys, predicate_type=BACKUP_PREDICATE_TYPE)
    except (Error, RecursionError) as exc:
        reason = _describe(exc)
        issues.append(
            ManifestIssue(
                defect=ManifestDefect.SIGNATURE,
                code=CheckCode.MANIFEST_SIGNATURE_INVALID,
                message=f"the manifest's signature does not verify with the ledger key: {reason}",
                reason=reason,
                details=_keyid(keys),
            )
        )
        return ManifestCheck(manifest=None, statement=None, payload_sha256=None, issues=(*issues,))
    payload_sha256 = sha256_hex(parsed.payload)
    try:
        manifest = BackupManifest.from_predicate(statement.predicate)
    except PredicateError as exc:
        issues.append(
            ManifestIssue(
                defect=ManifestDefect.MALFORMED,
                code=CheckCode.MANIFEST_SIGNATURE_INVALID,
                message=f"the signed manifest is malformed: {exc.message}",
                reason=exc.message,
                details={"signed_sha256": payload_sha256},
            )
        )
        return ManifestCheck(
            manifest=None, statement=statement, payload_sha256=payload_sha256, issues=(*issues,)
        )
    if backup_id is not None and manifest.backup_id != backup_id:
        issues.append(
            _issue(
                ManifestDefect.BACKUP_ID,
                CheckCode.MANIFEST_MISMATCH,
                f"the signed manifest is the one of backup {manifest.backup_id!r}, "
                f"not of {backup_id!r}",
                signed_backup_id=manifest.backup_id,
            )
        )
    issues.extend(_subject_issues(statement, manifest))
    if manifest_sha256 is not None and payload_sha256 != manifest_sha256:
        issues.append(
            _issue(
                ManifestDefect.PAYLOAD_DIGEST,
                CheckCode.MANIFEST_MISMATCH,
                "the signed statement is not the one whose SHA-256 the ledger recorded",
                signed_sha256=payload_sha256,
                recorded_sha256=manifest_sha256,
            )
        )
    if catalog is not None:
        issues.extend(_catalog_issues(catalog, parsed.payload, manifest))
    return ManifestCheck(
        manifest=manifest, statement=statement, payload_sha256=payload_sha256, issues=(*issues,)
    )


def check_backup_manifest(backup: Backup, keys: Mapping[str, VerifyingKey]) -> ManifestCheck:
    """The catalog row's envelope checked against the ledger key, and the row against the
    signed manifest (what ``verify`` and drills run)."""
    return check_signed_manifest(
        backup.envelope, keys, backup_id=backup.id, catalog=CatalogManifest.of(backup)
    )


def _subject_issues(statement: Statement, manifest: BackupManifest) -> list[ManifestIssue]:
    signed = sorted((s.name, s.sha256) for s in statement.subjects)
    listed = sorted(manifest.subjects())
    if signed == listed:
        return []
    return [
        _issue(
            ManifestDefect.SUBJECTS,
            CheckCode.SUBJECTS_MISMATCH,
            "the statement's subjects are not the artifacts its manifest lists",
            only_subjects=sorted({n for n, _ in set(signed) - set(listed)}),
            only_artifacts=sorted({n for n, _ in set(listed) - set(signed)}),
        )
    ]


def _catalog_issues(
    catalog: CatalogManifest, payload: bytes, manifest: BackupManifest
) -> list[ManifestIssue]:
    out: list[ManifestIssue] = []
    if catalog.statement is None:
        out.append(
            _issue(
                ManifestDefect.MISSING,
                CheckCode.MANIFEST_MISSING,
                "the catalog holds the manifest's envelope but not its statement",
            )
        )
    elif not (
        constant_time_equal(payload, catalog.statement)
        and catalog.statement_sha256 == sha256_hex(catalog.statement)
    ):
        out.append(
            _issue(
                ManifestDefect.STATEMENT,
                CheckCode.MANIFEST_MISMATCH,
                "the catalog's manifest differs from the signed statement",
                signed_sha256=sha256_hex(payload),
                catalog_sha256=sha256_hex(catalog.statement),
            )
        )
    signed = {(a.path, a.sha256) for a in manifest.artifacts}
    recorded = set(catalog.artifacts)
    if signed != recorded:
        out.append(
            _issue(
                ManifestDefect.ARTIFACTS,
                CheckCode.SUBJECTS_MISMATCH,
                "the signed subjects differ from the catalog's artifact list",
                only_signed=sorted(n for n, _ in signed - recorded),
                only_in_catalog=sorted(n for n, _ in recorded - signed),
            )
        )
    fingerprints, listed = manifest.fingerprints, dict(catalog.datasets)
    if fingerprints != listed:
        out.append(
            _issue(
                ManifestDefect.DATASETS,
                CheckCode.MANIFEST_MISMATCH,
                "the catalog's datasets or fingerprints differ from the signed manifest",
                only_signed=sorted(set(fingerprints) - set(listed)),
                only_in_catalog=sorted(set(listed) - set(fingerprints)),
                differ=sorted(n for n, fp in fingerprints.items() if listed.get(n, fp) != fp),
            )
        )
    return out
