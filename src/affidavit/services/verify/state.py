"""What one verification shares: the values it checks against and the findings it collects.

The expectations are the *signed* manifest's (:func:`read_signed`): the catalog's envelope is
checked against the ledger key and the catalog rows against the manifest it signs
(:func:`~affidavit.ledger.manifest_check.check_backup_manifest`); a backup without a signed
manifest that verifies is checked against its catalog rows, already reported as
untrustworthy. :class:`Run` is the small state every part of a verification reads those
values from and adds its findings to.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from affidavit.ledger.manifest_check import check_backup_manifest
from affidavit.models.backup import ArtifactRole, Backup, BackupArtifact, BackupStatus
from affidavit.models.checks import CheckCode, Finding
from affidavit.models.manifest import ManifestArtifact, ManifestSource
from affidavit.models.progress import Reporter
from affidavit.models.segments import SegmentTable
from affidavit.services.context import App
from affidavit.services.ledger import _identity
from affidavit.services.verify.segments import SegmentJob, SegmentPart
from affidavit.vaults.base import VaultBackend

CHUNK = 1 << 20
"""Bytes read from the vault, or copied to a spool, at a time."""


def now() -> datetime:
    """The time now, in UTC."""
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True, kw_only=True)
class Expected:
    """What the (signed) manifest says about one artifact."""

    path: str
    role: str
    dataset: str | None
    size: int
    sha256: str
    plain_size: int | None
    plain_sha256: str | None
    segments: SegmentTable | None = None  # signed segment table (issue 18), if any

    @classmethod
    def of(cls, artifact: ManifestArtifact | BackupArtifact) -> Expected:
        """The expectation a manifest's artifact (or a catalog row) states."""
        return cls(
            path=artifact.path,
            role=artifact.role.value,
            dataset=artifact.dataset,
            size=artifact.size,
            sha256=artifact.sha256,
            plain_size=artifact.plain_size,
            plain_sha256=artifact.plain_sha256,
            segments=artifact.segments,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class Signed:
    """The values a verification checks the backup against."""

    artifacts: tuple[Expected, ...]
    fingerprints: Mapping[str, str]  # dataset name -> signed fingerprint text
    retain_until: datetime | None  # what every artifact's lock must hold until
    source: ManifestSource | None  # the source the signed manifest names (None: unsigned)
    # the SHA-256 of the signed statement, when it verified with no defect (what a deep
    # verification's proof of self-consistency is keyed by: docs/verification.md)
    manifest_sha256: str | None = None


def read_signed(app: App, backup: Backup) -> tuple[Signed, list[Finding]]:
    """The catalog's envelope against the ledger key and the catalog against the signed
    manifest; the signed manifest's values become the expectations. Returns them with the
    findings so far (an incomplete backup, every manifest defect, no artifacts)."""
    identity = _identity(app)
    findings: list[Finding] = []
    if backup.status is not BackupStatus.COMPLETE:
        findings.append(
            Finding(
                code=CheckCode.BACKUP_INCOMPLETE.value,
                message=f"backup {backup.id} is {backup.status.value}, not complete",
                subject=backup.id,
                details={"status": backup.status.value, "error": backup.error},
            )
        )
    checked = check_backup_manifest(backup, {identity.keyid: identity.signer.key.public_key})
    findings.extend(checked.findings(backup.id))
    manifest = checked.manifest
    if manifest is not None:  # the signed values are the expectations
        signed = Signed(
            artifacts=tuple(Expected.of(a) for a in manifest.artifacts),
            fingerprints=manifest.fingerprints,
            retain_until=manifest.retain_until,
            source=manifest.source,
            manifest_sha256=checked.payload_sha256 if not findings else None,
        )
    else:  # unsigned: the catalog rows, already reported as untrustworthy
        rows = [a for a in backup.artifacts if a.role is not ArtifactRole.MANIFEST]
        signed = Signed(
            artifacts=tuple(Expected.of(a) for a in rows),
            fingerprints={d.name: d.fingerprint for d in backup.datasets},
            retain_until=backup.retain_until,
            source=None,
        )
    if not signed.artifacts:
        findings.append(
            Finding(
                code=CheckCode.NO_ARTIFACTS.value,
                message="the backup has no artifacts to verify",
                subject=backup.id,
            )
        )
    return signed, findings


@dataclass(slots=True, kw_only=True)
class Run:
    """One verification in progress: what its parts share."""

    app: App
    backup: Backup
    vault: VaultBackend
    rep: Reporter
    tmp: Path  # private folder: plaintext spools, stored and computed indexes
    signed: Signed
    workers: int = 1  # segments of an artifact with a segment table checked at a time
    # where segments run instead of local threads (``verify --cluster``): jobs in, parts out
    cluster: Callable[[Sequence[SegmentJob]], Iterator[SegmentPart]] | None = None
    findings: list[Finding] = field(default_factory=list)
    # deep (the whole-file and plaintext digests of segmented artifacts computed) unless the
    # ledger vouches a passed deep verification of the same signed manifest: its seq
    # (:mod:`.vouch`; docs/verification.md, "Fast verification after a deep one")
    vouched_by: int | None = None
    vouched_by_action: str | None = None  # the vouching entry's: a deep run, or the writer

    @property
    def deep(self) -> bool:
        """Whether this run proves the segment tables' self-consistency itself."""
        return self.vouched_by is None

    def find(self, code: CheckCode, message: str, subject: str = "", **details: Any) -> None:
        """Add a finding."""
        self.findings.append(
            Finding(code=code.value, message=message, subject=subject, details=details)
        )
