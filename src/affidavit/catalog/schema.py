"""SQLAlchemy table definitions of the catalog (schema version: see migrations/versions)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    """Declarative base with deterministic constraint names (for migrations)."""

    metadata = MetaData(naming_convention=NAMING)


class SourceRow(Base):
    """A registered database endpoint. ``uri`` never holds a password."""

    __tablename__ = "sources"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    engine: Mapped[str] = mapped_column(String(16))
    uri: Mapped[str] = mapped_column(Text)
    secret_kind: Mapped[str | None] = mapped_column(String(8))
    secret_locator: Mapped[str | None] = mapped_column(Text)
    classification: Mapped[str] = mapped_column(String(16))
    region: Mapped[str | None] = mapped_column(String(64))
    owner: Mapped[str | None] = mapped_column(String(254))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class DatasetRow(Base):
    """A dataset of a source; ``classification`` is NULL while it inherits its source's."""

    __tablename__ = "datasets"
    __table_args__ = (UniqueConstraint("source_id", "name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    source_id: Mapped[int] = mapped_column(ForeignKey("sources.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(512))
    classification: Mapped[str | None] = mapped_column(String(16))
    classification_reason: Mapped[str | None] = mapped_column(Text)
    records: Mapped[int | None] = mapped_column(BigInteger)
    discovered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class VaultRow(Base):
    """Where backup artifacts live."""

    __tablename__ = "vaults"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    kind: Mapped[str] = mapped_column(String(8))
    url: Mapped[str] = mapped_column(Text)
    region: Mapped[str | None] = mapped_column(String(64))
    immutable_days: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


# SQLite makes a column declared exactly ``INTEGER PRIMARY KEY`` the table's rowid: the table
# is then one B-tree instead of a rowid tree plus a primary-key index (other databases keep
# BIGINT)
_ROWID = BigInteger().with_variant(Integer(), "sqlite")


class LedgerEntryRow(Base):
    """One ledger event. ``entry`` is the RFC 8785 canonical JSON that is hashed;
    the other columns are copies for querying and are never trusted by the verifier.

    ``nodes`` holds the hashes of the complete Merkle subtrees this leaf closes, smallest
    first: the subtree of ``2**level`` leaves ending at this entry for ``level`` = 1, 2, ...
    (as many as ``seq + 1`` has trailing zero bits), 32 bytes each. With ``leaf_hash`` as
    level 0, every complete subtree's hash lives in the row of its last leaf, so a proof is
    O(log n) row reads and an append writes one row."""

    __tablename__ = "ledger_entries"
    # the newest entry of an action is one index seek (services.principals reads it per request)
    __table_args__ = (Index("ix_ledger_entries_action_seq", "action", "seq"),)

    seq: Mapped[int] = mapped_column(_ROWID, primary_key=True, autoincrement=False)
    time: Mapped[str] = mapped_column(String(32))
    actor: Mapped[str] = mapped_column(Text)
    action: Mapped[str] = mapped_column(String(64))
    subject: Mapped[str] = mapped_column(Text)
    entry: Mapped[bytes] = mapped_column(LargeBinary)
    leaf_hash: Mapped[bytes] = mapped_column(LargeBinary(32))
    nodes: Mapped[bytes] = mapped_column(LargeBinary)


class CheckpointRow(Base):
    """A signed checkpoint (C2SP signed note) of the ledger, one per tree size (a signature
    over the same origin, size and root is the same note: Ed25519 is deterministic)."""

    __tablename__ = "ledger_checkpoints"

    size: Mapped[int] = mapped_column(_ROWID, primary_key=True, autoincrement=False)
    root: Mapped[bytes] = mapped_column(LargeBinary(32))
    note: Mapped[str] = mapped_column(Text)
    created_at: Mapped[str] = mapped_column(String(32))


class BackupRow(Base):
    """One backup (taken or ingested): its state, manifest and wrapped key."""

    __tablename__ = "backups"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    source: Mapped[str | None] = mapped_column(String(64), index=True)
    vault: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(8))  # run | ingest
    format: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16), index=True)  # running|complete|failed|deleted
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    retain_until: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    consistency: Mapped[str | None] = mapped_column(Text)  # JSON
    manifest: Mapped[bytes | None] = mapped_column(LargeBinary)  # canonical JSON
    manifest_sha256: Mapped[str | None] = mapped_column(String(64))
    envelope: Mapped[str | None] = mapped_column(Text)  # DSSE JSON
    recipient: Mapped[str | None] = mapped_column(String(128))
    wrapped_identity: Mapped[bytes | None] = mapped_column(LargeBinary)
    kek_id: Mapped[str | None] = mapped_column(String(256))
    kek_version: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text)
    deleted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class BackupLeaseRow(Base):
    """The lease of a backup run: which process holds it and when it last said so. Written
    with the backup's ``running`` row; ``heartbeat_at`` is refreshed while the run goes on,
    without a ledger event (a heartbeat changes no state; the abandonment it may lead to
    does)."""

    __tablename__ = "backup_leases"

    backup_id: Mapped[str] = mapped_column(
        ForeignKey("backups.id", ondelete="CASCADE"), primary_key=True
    )
    host: Mapped[str] = mapped_column(String(255))
    boot_id: Mapped[str | None] = mapped_column(String(64))
    pid_namespace: Mapped[str | None] = mapped_column(String(64))
    pid: Mapped[int] = mapped_column(Integer)
    process_start: Mapped[int | None] = mapped_column(BigInteger)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    heartbeat_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class BackupArtifactRow(Base):
    """One stored file of a backup."""

    __tablename__ = "backup_artifacts"
    __table_args__ = (UniqueConstraint("backup_id", "path"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    backup_id: Mapped[str] = mapped_column(ForeignKey("backups.id", ondelete="CASCADE"))
    path: Mapped[str] = mapped_column(Text)
    role: Mapped[str] = mapped_column(String(16))  # data | metadata | index | manifest
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    plain_size: Mapped[int | None] = mapped_column(BigInteger)
    plain_sha256: Mapped[str | None] = mapped_column(String(64))
    dataset: Mapped[str | None] = mapped_column(String(512))
    deleted: Mapped[bool] = mapped_column(default=False)


class BackupDatasetRow(Base):
    """A dataset captured in a backup, with its fingerprint."""

    __tablename__ = "backup_datasets"
    __table_args__ = (UniqueConstraint("backup_id", "name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    backup_id: Mapped[str] = mapped_column(ForeignKey("backups.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(512))
    records: Mapped[int] = mapped_column(BigInteger)
    fingerprint: Mapped[str] = mapped_column(String(128))
    classification: Mapped[str] = mapped_column(String(16))


class HoldRow(Base):
    """A legal hold on a backup."""

    __tablename__ = "holds"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    backup_id: Mapped[str] = mapped_column(ForeignKey("backups.id", ondelete="CASCADE"), index=True)
    case_id: Mapped[str] = mapped_column(String(128))
    reason: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    created_by: Mapped[str] = mapped_column(Text)
    released_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    released_by: Mapped[str | None] = mapped_column(Text)
    release_reason: Mapped[str | None] = mapped_column(Text)


class VerificationRow(Base):
    """One verification of a backup."""

    __tablename__ = "verifications"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    backup_id: Mapped[str] = mapped_column(ForeignKey("backups.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(16))  # full | sample | against-source
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    ok: Mapped[bool] = mapped_column()
    sample_percent: Mapped[float | None] = mapped_column(Float)
    sample_seed: Mapped[str | None] = mapped_column(String(64))
    coverage: Mapped[str | None] = mapped_column(Text)  # JSON: what was checked
    findings: Mapped[str] = mapped_column(Text)  # JSON list
    envelope: Mapped[str | None] = mapped_column(Text)


class DrillRow(Base):
    """One restore drill of a backup."""

    __tablename__ = "drills"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    backup_id: Mapped[str] = mapped_column(ForeignKey("backups.id", ondelete="CASCADE"), index=True)
    target: Mapped[str] = mapped_column(Text)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    ok: Mapped[bool] = mapped_column()
    rto_seconds: Mapped[float | None] = mapped_column(Float)
    restore_seconds: Mapped[float] = mapped_column(Float)
    fingerprint_match: Mapped[bool] = mapped_column()
    phases: Mapped[str] = mapped_column(Text)  # JSON {phase: seconds}
    probes: Mapped[str] = mapped_column(Text)  # JSON list
    findings: Mapped[str] = mapped_column(Text)  # JSON list
    envelope: Mapped[str | None] = mapped_column(Text)


class AlertRow(Base):
    """An alert raised by a failed or overdue check, and its delivery to webhooks."""

    __tablename__ = "alerts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    kind: Mapped[str] = mapped_column(String(32))
    subject: Mapped[str] = mapped_column(Text)
    payload: Mapped[str] = mapped_column(Text)  # JSON
    deliveries: Mapped[str] = mapped_column(Text, default="[]")  # JSON list of attempts


class PolicyVersionRow(Base):
    """One proposed version of the policy file and, once given, its approval."""

    __tablename__ = "policy_versions"

    version: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    sha256: Mapped[str] = mapped_column(String(64))
    text: Mapped[str] = mapped_column(Text)
    proposed_by: Mapped[str] = mapped_column(Text)
    proposed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    proposal_seq: Mapped[int | None] = mapped_column(BigInteger)
    approved_by: Mapped[str | None] = mapped_column(Text)
    approved_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    approval_seq: Mapped[int | None] = mapped_column(BigInteger)


class FindingRow(Base):
    """A control that a subject fails (one row per occurrence, kept after resolution)."""

    __tablename__ = "findings"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    control: Mapped[str] = mapped_column(String(64), index=True)
    subject: Mapped[str] = mapped_column(Text)
    severity: Mapped[str] = mapped_column(String(16))
    owner: Mapped[str] = mapped_column(Text)
    message: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), index=True)
    opened_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    last_seen_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    due_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    evidence: Mapped[str] = mapped_column(Text)  # JSON list of links


class FindingStepRow(Base):
    """One step of a finding's remediation trail (opened, acknowledged, resolved)."""

    __tablename__ = "finding_steps"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    finding_id: Mapped[str] = mapped_column(
        ForeignKey("findings.id", ondelete="CASCADE"), index=True
    )
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    actor: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16))
    note: Mapped[str] = mapped_column(Text)
    seq: Mapped[int | None] = mapped_column(BigInteger)


class PolicyExceptionRow(Base):
    """A time-limited permission for a subject to fail a control."""

    __tablename__ = "policy_exceptions"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    control: Mapped[str] = mapped_column(String(64))
    subject: Mapped[str] = mapped_column(Text)
    reason: Mapped[str] = mapped_column(Text)
    requested_by: Mapped[str] = mapped_column(Text)
    requested_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    status: Mapped[str] = mapped_column(String(16))
    approved_by: Mapped[str | None] = mapped_column(Text)
    approved_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class BaselineRow(Base):
    """An approved configuration baseline (canonical JSON)."""

    __tablename__ = "baselines"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    approved_by: Mapped[str] = mapped_column(Text)
    approved_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    sha256: Mapped[str] = mapped_column(String(64))
    content: Mapped[bytes] = mapped_column(LargeBinary)
    seq: Mapped[int | None] = mapped_column(BigInteger)


class CheckRunRow(Base):
    """The results of one policy check."""

    __tablename__ = "check_runs"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    actor: Mapped[str] = mapped_column(Text)
    policy_version: Mapped[int | None] = mapped_column(Integer)
    ok: Mapped[bool] = mapped_column()
    results: Mapped[str] = mapped_column(Text)  # JSON list
    seq: Mapped[int | None] = mapped_column(BigInteger)


# -- identities (0007): accounts, roles, credentials ------------------------------------------


class AccountRow(Base):
    """A local account. ``password_hash`` is an argon2id PHC string (NULL for a service
    account, which authenticates with tokens only). Accounts are disabled, never deleted:
    the ledger names them."""

    __tablename__ = "accounts"

    id: Mapped[str] = mapped_column(String(16), primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    kind: Mapped[str] = mapped_column(String(8))  # human | service
    display_name: Mapped[str | None] = mapped_column(Text)
    email: Mapped[str | None] = mapped_column(String(254))
    password_hash: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    created_by: Mapped[str] = mapped_column(Text)
    disabled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    disabled_reason: Mapped[str | None] = mapped_column(Text)
    oidc_issuer: Mapped[str | None] = mapped_column(Text)
    oidc_subject: Mapped[str | None] = mapped_column(Text)


class RoleGrantRow(Base):
    """A role held by an account (a revocation deletes the row; the ledger keeps both)."""

    __tablename__ = "role_grants"
    __table_args__ = (UniqueConstraint("account_id", "role"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    role: Mapped[str] = mapped_column(String(32))
    granted_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    granted_by: Mapped[str] = mapped_column(Text)
    seq: Mapped[int | None] = mapped_column(BigInteger)


class ApiTokenRow(Base):
    """An API token of a service account: only the SHA-256 of its secret is kept."""

    __tablename__ = "api_tokens"

    id: Mapped[str] = mapped_column(String(16), primary_key=True)
    account_id: Mapped[str] = mapped_column(
        ForeignKey("accounts.id", ondelete="CASCADE"), index=True
    )
    secret_sha256: Mapped[str] = mapped_column(String(64))
    scopes: Mapped[str] = mapped_column(Text)  # JSON list of permissions
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    created_by: Mapped[str] = mapped_column(Text)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    revoked_by: Mapped[str | None] = mapped_column(Text)
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class LoginSessionRow(Base):
    """A login session: only the SHA-256 of its secret is kept."""

    __tablename__ = "sessions"

    id: Mapped[str] = mapped_column(String(16), primary_key=True)
    account_id: Mapped[str] = mapped_column(
        ForeignKey("accounts.id", ondelete="CASCADE"), index=True
    )
    secret_sha256: Mapped[str] = mapped_column(String(64))
    method: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    last_seen_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    idle_expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    absolute_expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    mfa_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    ended_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    client_address: Mapped[str | None] = mapped_column(Text)
    client_agent: Mapped[str | None] = mapped_column(Text)


class RecoveryCodeRow(Base):
    """A one-time recovery code of an account (its SHA-256), and when it was used."""

    __tablename__ = "recovery_codes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    account_id: Mapped[str] = mapped_column(
        ForeignKey("accounts.id", ondelete="CASCADE"), index=True
    )
    code_sha256: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class TotpCredentialRow(Base):
    """An account's TOTP secret, wrapped by a key-encryption key and bound to the account's
    id; ``confirmed_at`` NULL while the enrolment waits for its first code; ``last_step`` the
    newest time step accepted (older or equal ones are replays)."""

    __tablename__ = "totp_credentials"

    account_id: Mapped[str] = mapped_column(
        ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True
    )
    wrapped_secret: Mapped[bytes] = mapped_column(LargeBinary)
    kek_id: Mapped[str] = mapped_column(String(256))
    kek_version: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    confirmed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_step: Mapped[int | None] = mapped_column(BigInteger)


class LoginFailureRow(Base):
    """The failed-login counter of an account (``key`` its id), or of every unknown name
    together (``key`` ``*unknown*``): consecutive failures, consecutive lockouts, and the
    lockout in force."""

    __tablename__ = "login_failures"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    failures: Mapped[int] = mapped_column(Integer)
    lockouts: Mapped[int] = mapped_column(Integer)
    last_failure_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    locked_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class AccessLogEntryRow(Base):
    """One access-log entry (``docs/formats/access-log.md``): a leaf of the access log's own
    Merkle tree, stored as the ledger stores its entries (``nodes`` as in
    :class:`LedgerEntryRow`). ``entry`` is the RFC 8785 JSON that was hashed, NULL once the
    entry expired (``expired_at`` then says when); ``leaf_hash`` stays, so the tree still
    verifies. ``time``, ``identity``, ``action`` (``METHOD route``), ``subject`` and
    ``outcome`` are copies for querying (``identity`` and ``subject`` are cleared on
    expiry), never trusted by the verifier."""

    __tablename__ = "access_log_entries"

    seq: Mapped[int] = mapped_column(_ROWID, primary_key=True, autoincrement=False)
    time: Mapped[str] = mapped_column(String(32), index=True)
    identity: Mapped[str | None] = mapped_column(Text, index=True)
    action: Mapped[str] = mapped_column(Text)
    subject: Mapped[str | None] = mapped_column(Text)
    outcome: Mapped[str] = mapped_column(String(16))
    entry: Mapped[bytes | None] = mapped_column(LargeBinary)
    leaf_hash: Mapped[bytes] = mapped_column(LargeBinary(32))
    nodes: Mapped[bytes] = mapped_column(LargeBinary)
    expired_at: Mapped[str | None] = mapped_column(String(32))


class AccessLogCheckpointRow(Base):
    """A signed checkpoint of the access log (origin ``<ledger origin>/access-log``), one
    per tree size, as :class:`CheckpointRow` is for the ledger."""

    __tablename__ = "access_log_checkpoints"

    size: Mapped[int] = mapped_column(_ROWID, primary_key=True, autoincrement=False)
    root: Mapped[bytes] = mapped_column(LargeBinary(32))
    note: Mapped[str] = mapped_column(Text)
    created_at: Mapped[str] = mapped_column(String(32))


class OidcLoginRow(Base):
    """A single sign-on login under way (:mod:`affidavit.services.oidc`): ``key`` is
    ``state:<SHA-256 of the state>`` for an authorization request waiting for the provider's
    answer, ``flow:<flow id>`` for a CLI login waiting for its one-time code. What it holds
    is sealed (wrapped by the identity key-encryption key, bound to ``key``): the catalog
    keeps it between the server's processes but can neither read nor forge it."""

    __tablename__ = "oidc_logins"

    key: Mapped[str] = mapped_column(String(96), primary_key=True)
    kek_id: Mapped[str] = mapped_column(String(256))
    kek_version: Mapped[int] = mapped_column(Integer)
    sealed: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)


class ExportRecipientRow(Base):
    """A recipient of governed exports (:mod:`affidavit.services.exports`): its age X25519
    key, the digest of the challenge it must answer (until it does), and its pseudonymisation
    key, wrapped by the keystore's KEK (bound to ``recipient:<name>``)."""

    __tablename__ = "export_recipients"

    name: Mapped[str] = mapped_column(String(63), primary_key=True)
    organisation: Mapped[str] = mapped_column(String(200))
    contact: Mapped[str] = mapped_column(String(200))
    public_key: Mapped[str] = mapped_column(String(128))
    dpa: Mapped[str | None] = mapped_column(String(200))
    added_by: Mapped[str] = mapped_column(String(200))
    added_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    challenge_sha256: Mapped[str | None] = mapped_column(String(64))
    verified_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    verified_seq: Mapped[int | None] = mapped_column(BigInteger)
    kek_id: Mapped[str] = mapped_column(String(256))
    kek_version: Mapped[int] = mapped_column(Integer)
    pseudonym_key: Mapped[bytes] = mapped_column(LargeBinary)


class ExportSpecRow(Base):
    """One version of an export spec (its TOML text), proposed by one person and approved
    by another before its first run."""

    __tablename__ = "export_specs"

    name: Mapped[str] = mapped_column(String(63), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    sha256: Mapped[str] = mapped_column(String(64))
    text: Mapped[str] = mapped_column(Text)
    proposed_by: Mapped[str] = mapped_column(String(200))
    proposed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    proposal_seq: Mapped[int] = mapped_column(BigInteger)
    approved_by: Mapped[str | None] = mapped_column(String(200))
    approved_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    approval_seq: Mapped[int | None] = mapped_column(BigInteger)


class ExportRunRow(Base):
    """One run of an export spec version and, once completed, its signed manifest."""

    __tablename__ = "export_runs"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    spec: Mapped[str] = mapped_column(String(63), index=True)
    version: Mapped[int] = mapped_column(Integer)
    backup_id: Mapped[str] = mapped_column(String(64))
    recipient: Mapped[str] = mapped_column(String(63))
    status: Mapped[str] = mapped_column(String(16))
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    started_by: Mapped[str] = mapped_column(String(200))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    output_path: Mapped[str | None] = mapped_column(Text)
    output_sha256: Mapped[str | None] = mapped_column(String(64))
    records_out: Mapped[int | None] = mapped_column(BigInteger)
    error: Mapped[str | None] = mapped_column(Text)
    envelope: Mapped[str | None] = mapped_column(Text)
