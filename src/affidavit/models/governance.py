"""Governance values: policy versions and their approval, findings with their remediation
trail, exceptions, approved baselines and the recorded results of policy checks."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any


def same_person(a: object, b: object) -> bool:
    """Whether two recorded actors name the same person (case and surrounding spaces aside).
    Separation of duties compares actors with this, everywhere."""
    return (
        isinstance(a, str) and isinstance(b, str) and a.strip().casefold() == b.strip().casefold()
    )


class Severity(StrEnum):
    """How bad a failed control is; sets the default due date of its finding."""

    CRITICAL = "critical"
    HIGH = "high"
    MEDIUM = "medium"
    LOW = "low"

    @property
    def rank(self) -> int:
        """0 for critical ... 3 for low (sort key)."""
        return list(Severity).index(self)


class FindingStatus(StrEnum):
    """A finding's life: open -> acknowledged -> resolved (resolved is final)."""

    OPEN = "open"
    ACKNOWLEDGED = "acknowledged"
    RESOLVED = "resolved"


class ExceptionStatus(StrEnum):
    """An exception is requested, then approved by someone else, until it expires or is
    revoked."""

    REQUESTED = "requested"
    APPROVED = "approved"
    REVOKED = "revoked"


@dataclass(frozen=True, slots=True, kw_only=True)
class PolicyVersion:
    """One version of the policy file, as proposed, and its approval."""

    version: int
    sha256: str
    text: str
    proposed_by: str
    proposed_at: datetime
    proposal_seq: int | None = None  # ledger seq of policy.proposed
    approved_by: str | None = None
    approved_at: datetime | None = None
    approval_seq: int | None = None

    @property
    def approved(self) -> bool:
        """Whether someone other than the proposer approved it."""
        return self.approved_at is not None


@dataclass(frozen=True, slots=True, kw_only=True)
class FindingStep:
    """One step of a finding's remediation trail."""

    at: datetime
    actor: str
    status: FindingStatus
    note: str
    seq: int | None = None  # the ledger event of this step

    def to_json(self) -> dict[str, Any]:
        """JSON-ready."""
        return {
            "at": self.at.isoformat(),
            "actor": self.actor,
            "status": self.status.value,
            "note": self.note,
            "seq": self.seq,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class ControlFinding:
    """A control that a subject fails, and what has been done about it."""

    id: str
    control: str
    subject: str
    severity: Severity
    owner: str
    message: str
    status: FindingStatus
    opened_at: datetime
    last_seen_at: datetime
    due_at: datetime
    evidence: tuple[str, ...] = ()  # links: "ledger:SEQ", "backup:ID", "drill:ID", ...
    trail: tuple[FindingStep, ...] = field(default=())

    def to_json(self) -> dict[str, Any]:
        """JSON-ready."""
        return {
            "id": self.id,
            "control": self.control,
            "subject": self.subject,
            "severity": self.severity.value,
            "owner": self.owner,
            "message": self.message,
            "status": self.status.value,
            "opened_at": self.opened_at.isoformat(),
            "last_seen_at": self.last_seen_at.isoformat(),
            "due_at": self.due_at.isoformat(),
            "evidence": list(self.evidence),
            "trail": [step.to_json() for step in self.trail],
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class PolicyException:
    """A time-limited, approved permission for one subject to fail one control."""

    id: str
    control: str
    subject: str  # an exact subject, or "*" for every subject of the control
    reason: str
    requested_by: str
    requested_at: datetime
    expires_at: datetime
    status: ExceptionStatus
    approved_by: str | None = None
    approved_at: datetime | None = None

    def active(self, at: datetime) -> bool:
        """Approved and not expired at ``at``."""
        return self.status is ExceptionStatus.APPROVED and at < self.expires_at

    def covers(self, control: str, subject: str, at: datetime) -> bool:
        """Whether this exception excuses ``control`` failing for ``subject`` at ``at``."""
        return self.active(at) and self.control == control and self.subject in ("*", subject)

    def to_json(self) -> dict[str, Any]:
        """JSON-ready."""
        return {
            "id": self.id,
            "control": self.control,
            "subject": self.subject,
            "reason": self.reason,
            "requested_by": self.requested_by,
            "requested_at": self.requested_at.isoformat(),
            "expires_at": self.expires_at.isoformat(),
            "status": self.status.value,
            "approved_by": self.approved_by,
            "approved_at": self.approved_at.isoformat() if self.approved_at else None,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class Baseline:
    """An approved configuration: what each source and vault must look like."""

    id: int
    approved_by: str
    approved_at: datetime
    sha256: str
    content: dict[str, Any]  # {"policy_version", "sources": {...}, "vaults": {...}}
    seq: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class CheckRun:
    """The recorded result of one ``policy check``."""

    id: str
    at: datetime
    actor: str
    policy_version: int | None
    ok: bool
    results: tuple[dict[str, Any], ...]  # one per (control, subject)
    seq: int | None = None
