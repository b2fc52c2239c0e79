"""Facts: a frozen snapshot of the inventory, its history and its live configuration, which
the rules evaluate. The service that gathers them does all the I/O; the rules do none."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from affidavit.constants import Classification
from affidavit.models.access_review import AccessReview
from affidavit.models.audit import EvidenceRequest


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


LOCAL_MODE_GATED_ACTIONS: frozenset[str] = frozenset(
    {
        "backup.deleted",
        "hold.released",
        "keys.rotated",
        "keys.identity_exported",
        "source.removed",
        "policy.approved",
        "exception.approved",
    }
)
"""The events of the gated operations that can also be run in local mode (by the OS user,
without any approval): done without an authenticated identity they are reported by
``access.segregation_of_duties`` as not authenticated."""

CRITICAL_ACTIONS: frozenset[str] = LOCAL_MODE_GATED_ACTIONS | frozenset(
    {
        "role.granted",
        "role.revoked",
        "account.disabled",
        "approval.rule_changed",
        "token.created",
        "request.approved",
        "request.vetoed",
        "request.executed",
        "access_review.decided",
        "access_review.closed",
    }
)
"""Gated and critical actions: done by an identity that logged in with a password alone
(``details.auth`` = ``password``) they fail ``access.mfa_enforced``."""


@dataclass(frozen=True, slots=True, kw_only=True)
class AccountFacts:
    """An account as the ledger tells it: created (or bootstrapped, or made by break-glass),
    maybe disabled, its roles (the newest grant or revocation event of each), and whether it
    can pass an MFA check (TOTP enrolled and not reset since, or linked to an OpenID
    subject)."""

    name: str
    id: str
    human: bool
    disabled: bool
    roles: frozenset[str]
    totp: bool
    oidc: bool
    seq: int  # the event that created it

    @property
    def subject(self) -> str:
        """``account:NAME``."""
        return f"account:{self.name}"


@dataclass(frozen=True, slots=True, kw_only=True)
class AccessEventFacts:
    """One ledger event the access controls look at: a waived approval, a gated operation
    done in local mode or with a password alone, a break-glass."""

    seq: int
    at: datetime
    action: str
    actor: str
    subject: str
    auth: str | None  # details.auth; None: local mode (no authenticated identity)
    note: str = ""  # the waiver, the break-glass reason and OS user

    @property
    def ref(self) -> str:
        """``ledger:SEQ``: the subject of its result."""
        return f"ledger:{self.seq}"


@dataclass(frozen=True, slots=True, kw_only=True)
class AccessFacts:
    """Identities, roles, access reviews and the events the access controls report, all from
    the ledger (services.access_facts)."""

    accounts: tuple[AccountFacts, ...] = ()
    reviews: tuple[AccessReview, ...] = ()  # oldest first
    waivers: tuple[AccessEventFacts, ...] = ()  # approval.waived
    local_gated: tuple[AccessEventFacts, ...] = ()  # LOCAL_MODE_GATED_ACTIONS without auth
    password_critical: tuple[AccessEventFacts, ...] = ()  # CRITICAL_ACTIONS with auth password
    break_glass: tuple[AccessEventFacts, ...] = ()  # identity.break_glass


@dataclass(frozen=True, slots=True, kw_only=True)
class ExportFacts:
    """One delivered export, as its ``export.completed`` event tells it (the ``export.*``
    controls), with the ``recipient.verified`` event that proved the recipient's key."""

    id: str
    seq: int
    at: datetime
    actor: str
    spec: str
    version: int
    approval: str | None  # the run's standing (approved, waived, not-required); None: local
    request: str | None
    spec_proposed_by: str | None
    spec_approved_by: str | None
    purpose: str
    legal_basis: str
    consent_sha256: str | None
    fields_transformed: int  # allow-listed fields with a transform other than keep
    fields_dropped: int  # field values left behind (not allow-listed)
    contract_passed: bool
    contract_excluded: int  # records excluded under the tolerated threshold
    recipient: str
    public_key: str
    recipient_verified_seq: int | None  # the proof of this key before the export
    classification: str
    dpa: str | None
    slo_missed: tuple[str, ...] | None = None  # export.slo: None when no SLO was declared
    performance: str = ""  # the run's figures, for people (export.slo)

    @property
    def subject(self) -> str:
        """``export:ID``."""
        return f"export:{self.id}"


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
    access: AccessFacts = field(default_factory=AccessFacts)  # identities and reviews
    exports: tuple[ExportFacts, ...] = ()  # from the ledger's export.completed (issue 17)
    # evidence requests of audit engagements, folded from the ledger's audit.* events
    audit_requests: tuple[EvidenceRequest, ...] = ()
