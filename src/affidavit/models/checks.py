"""Results of checks: verifications and restore drills, and the alerts they raise."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any


class CheckCode(StrEnum):
    """Stable finding codes of verifications and drills (tests, policies and alerts match on
    them; docs/verification.md and docs/drills.md say what each means)."""

    NO_ARTIFACTS = "no-artifacts"
    BACKUP_INCOMPLETE = "backup-incomplete"
    MANIFEST_MISSING = "manifest-missing"
    MANIFEST_SIGNATURE_INVALID = "manifest-signature-invalid"
    MANIFEST_MISMATCH = "manifest-mismatch"
    SUBJECTS_MISMATCH = "subjects-mismatch"
    MANIFEST_COPY_MISSING = "manifest-copy-missing"
    MANIFEST_COPY_MISMATCH = "manifest-copy-mismatch"
    ARTIFACT_MISSING = "artifact-missing"
    ARTIFACT_NOT_A_FILE = "artifact-not-a-file"
    ARTIFACT_UNEXPECTED = "artifact-unexpected"
    ARTIFACT_LOCK_WEAKENED = "artifact-lock-weakened"
    ARTIFACT_SIZE_MISMATCH = "artifact-size-mismatch"
    ARTIFACT_HASH_MISMATCH = "artifact-hash-mismatch"
    ARTIFACT_FROM_OTHER_BACKUP = "artifact-from-other-backup"
    KEY_UNWRAP_FAILED = "key-unwrap-failed"
    ARTIFACT_UNDECRYPTABLE = "artifact-undecryptable"
    ARTIFACT_PLAINTEXT_MISMATCH = "artifact-plaintext-mismatch"
    CONTENT_UNREADABLE = "content-unreadable"
    FINGERPRINT_MISMATCH = "fingerprint-mismatch"
    INDEX_UNUSABLE = "index-unusable"
    SEGMENT_MISMATCH = "segment-mismatch"  # segments whose bytes differ from the signed table
    SEGMENT_TABLE_INVALID = "segment-table-invalid"  # the signed table does not fit the file
    DRIFT = "drift"
    SOURCE_DIFFERS = "source-differs"
    SOURCE_MISMATCH = "source-mismatch"
    # drills: a phase that could not complete, a probe that failed, the time against the RTO
    FETCH_FAILED = "fetch-failed"
    DECRYPT_FAILED = "decrypt-failed"
    LOAD_FAILED = "load-failed"
    VERIFY_FAILED = "verify-failed"
    PROBES_FAILED = "probes-failed"
    PROBE_FAILED = "probe-failed"
    RTO_EXCEEDED = "rto-exceeded"

    @classmethod
    def phase_failed(cls, phase: str) -> CheckCode:
        """The code of a drill phase (fetch, decrypt, load, verify, probes) that failed."""
        return cls(f"{phase}-failed")


NON_FAILING = frozenset({CheckCode.DRIFT})
"""Codes that are reported but do not fail a verification (expected change at the source)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Finding:
    """One discrepancy a check found. ``code`` is stable (tests and policy match on it)."""

    code: str
    message: str
    subject: str = ""  # artifact path, dataset, key, probe name, ...
    details: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """JSON-ready."""
        return {
            "code": self.code,
            "message": self.message,
            "subject": self.subject,
            "details": self.details,
        }

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> Finding:
        """Inverse of :meth:`to_json`."""
        return cls(
            code=str(obj["code"]),
            message=str(obj["message"]),
            subject=str(obj.get("subject", "")),
            details=dict(obj.get("details", {})),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class Verification:
    """A recorded verification of a backup."""

    id: str
    backup_id: str
    kind: str  # full | sample | against-source
    started_at: datetime
    finished_at: datetime
    ok: bool
    findings: tuple[Finding, ...]
    sample_percent: float | None = None
    sample_seed: str | None = None
    coverage: dict[str, Any] | None = None
    envelope: str | None = None

    @property
    def seconds(self) -> float:
        """How long it took."""
        return (self.finished_at - self.started_at).total_seconds()

    @property
    def mode(self) -> str:
        """``deep`` or ``fast`` (docs/verification.md), as its coverage records it;
        verifications recorded before the mode existed were deep."""
        mode = (self.coverage or {}).get("mode")
        return mode if mode in ("deep", "fast") else "deep"

    @property
    def vouched_by(self) -> int | None:
        """A fast verification's vouching ledger entry (its seq): a deep verification, or
        the backup's completion whose writer proved the segment tables."""
        seq = (self.coverage or {}).get("vouched_by")
        return seq if isinstance(seq, int) and not isinstance(seq, bool) else None

    @property
    def vouched_by_action(self) -> str | None:
        """The vouching entry's action (``verification.completed`` or ``backup.completed``;
        None in verifications recorded before it was: then a deep verification)."""
        action = (self.coverage or {}).get("vouched_by_action")
        return action if isinstance(action, str) else None


@dataclass(frozen=True, slots=True, kw_only=True)
class Drill:
    """A recorded restore drill."""

    id: str
    backup_id: str
    target: str
    started_at: datetime
    finished_at: datetime
    ok: bool
    rto_seconds: float | None
    restore_seconds: float
    fingerprint_match: bool
    phases: dict[str, float]
    probes: tuple[dict[str, Any], ...]
    findings: tuple[Finding, ...]
    envelope: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Alert:
    """An alert and its delivery attempts."""

    id: int
    created_at: datetime
    kind: str
    subject: str
    payload: dict[str, Any]
    deliveries: tuple[dict[str, Any], ...] = ()
