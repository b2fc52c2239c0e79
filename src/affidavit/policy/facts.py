"""Facts: a frozen snapshot of the inventory, its history and its live configuration, which
the rules evaluate. The service that gathers them does all the I/O; the rules do none."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from affidavit.constants import Classification


@dataclass(frozen=True, slots=True, kw_only=True)
class SourceFacts:
    """A registered source and (when it could be read) its live security configuration."""

    name: str
    engine: str
    classification: Classification
    region: str | None
    owner: str | None


@dataclass(frozen=True, slots=True, kw_only=True)
class DatasetFacts:
    """A dataset of a source, with its effective classification."""

    source: str
    name: str
    classification: Classification
    explicit: bool  # classified on its own rather than inherited from the source

    @property
    def subject(self) -> str:
        """``dataset:SOURCE/NAME``."""
        return f"dataset:{self.source}/{self.name}"


@dataclass(frozen=True, slots=True, kw_only=True)
class VaultFacts:
    """A registered vault."""

    name: str
    kind: str
    region: str | None
    object_lock: bool | None  # the storage enforces retention (S3 Object Lock); None: not read


@dataclass(frozen=True, slots=True, kw_only=True)
class BackupFacts:
    """A backup as the ledger vouches for it, with the catalog row's values where they agree
    (services.policy_vouch)."""

    id: str
    source: str | None
    vault: str
    status: str  # running | complete | failed | deleted
    started_at: datetime
    finished_at: datetime | None
    retain_until: datetime
    datasets: tuple[str, ...]
    classification: Classification  # the highest level of its datasets
    encrypted: bool
    deleted_at: datetime | None = None
    holds: tuple[tuple[datetime, datetime | None], ...] = ()  # (placed, released)
    seq: int | None = None  # ledger event of its completion

    @property
    def complete(self) -> bool:
        """Complete and not deleted."""
        return self.status == "complete"

    @property
    def subject(self) -> str:
        """``backup:ID``."""
        return f"backup:{self.id}"


@dataclass(frozen=True, slots=True, kw_only=True)
class AbandonedRunFacts:
    """A backup run recorded abandoned (its process died mid-run), as the ledger says."""

    backup_id: str
    source: str | None
    at: datetime  # when it was found dead and recorded failed
    why: str
    seq: int  # its ``backup.abandoned`` event
    leftovers: tuple[str, ...] = ()  # unfinished writes the vault still holds

    @property
    def subject(self) -> str:
        """``backup:ID``."""
        return f"backup:{self.backup_id}"


@dataclass(frozen=True, slots=True, kw_only=True)
class CheckFacts:
    """A verification or a drill of a backup."""

    id: str
    kind: str  # verification kinds (full, sample, against-source) or "drill"
    backup_id: str
    at: datetime  # when it finished
    ok: bool
    restore_seconds: float | None = None  # drills
    fingerprint_match: bool | None = None  # drills


@dataclass(frozen=True, slots=True, kw_only=True)
class CatalogMismatch:
    """A catalog row that disagrees with the ledger event that vouches for it, a row no event
    vouches for, or an event whose row is gone: the rules used the ledger's version (or
    nothing), and ``ledger.integrity`` reports the row."""

    subject: str  # backup:ID, verification:ID, drill:ID, policy:vN, baseline:ID (or baseline)
    message: str  # every difference, "; "-separated
    seq: int | None = None  # the ledger event, when there is one


@dataclass(frozen=True, slots=True, kw_only=True)
class LedgerFacts:
    """The ledger's verification and checkpoint publication."""

    ok: bool
    size: int
    problems: tuple[str, ...] = ()
    last_published_at: datetime | None = None
    last_published_seq: int | None = None
    mismatches: tuple[CatalogMismatch, ...] = ()  # catalog rows the ledger does not vouch for
    recoveries: tuple[LedgerRecovery, ...] = ()  # `ledger recover` runs: forks and repairs


@dataclass(frozen=True, slots=True, kw_only=True)
class LedgerRecovery:
    """A recorded ``ledger recover``: where, what kind, how many entries were lost, why."""

    seq: int
    kind: str
    lost: int
    reason: str
    published_since: bool  # a checkpoint covering it was published to a witness since


@dataclass(frozen=True, slots=True, kw_only=True)
class KeyFacts:
    """The key-encryption key in use."""

    kek_id: str | None
    version: int | None
    created_at: datetime | None  # of the current version: the last rotation
    error: str | None = None  # the keystore could not be read


@dataclass(frozen=True, slots=True, kw_only=True)
class PolicyFacts:
    """The policy version in effect: the newest one the ledger records approved (by its
    events' actors), with the text those events' SHA-256 vouches for."""

    version: int
    proposed_by: str
    approved_by: str | None
    seq: int | None
    text: str | None = None  # the approved text (its SHA-256 checked); None: not usable
    problem: str | None = None  # why it cannot be applied: text altered, gone or not a policy


@dataclass(frozen=True, slots=True, kw_only=True)
class Facts:
    """Everything the rules look at."""

    now: datetime
    policy: PolicyFacts | None
    sources: tuple[SourceFacts, ...]
    datasets: tuple[DatasetFacts, ...]
    vaults: tuple[VaultFacts, ...]
    backups: tuple[BackupFacts, ...]
    verifications: tuple[CheckFacts, ...]
    drills: tuple[CheckFacts, ...]
    ledger: LedgerFacts
    keys: KeyFacts
    default_retention_days: int
    # configuration: {"sources": {name: {...}}, "vaults": {name: {...}}, "policy_version": N}
    config: Mapping[str, Any] = field(default_factory=dict)
    config_errors: Mapping[str, str] = field(default_factory=dict)  # "source:x" -> why unread
    baseline: Mapping[str, Any] | None = None
    baseline_id: int | None = None
    # the newest approved baseline cannot be used (its row gone, its content not the one its
    # baseline.approved event recorded): config.baseline fails with this
    baseline_problem: str | None = None
    baseline_seq: int | None = None  # the newest baseline.approved
    live: bool = True  # False: sources and vaults were not contacted (offline check)
    abandoned_runs: tuple[AbandonedRunFacts, ...] = ()  # from the ledger's backup.abandoned
