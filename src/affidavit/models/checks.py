"""Results of checks: verifications and restore drills, and the alerts they raise."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


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
