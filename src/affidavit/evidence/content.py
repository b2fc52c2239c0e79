"""What an evidence package says, as plain JSON-ready data.

The builder (``affidavit.services.evidence``) fills an :class:`EvidenceContent` from the
catalog; the package writer stores each list as a file under ``records/``; the OSCAL document
and the HTML report are renderings of the same content. Every record names the ledger events
(``seq``) that prove it and, for backups, verifications and drills, the attestation file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

FORMAT = "affidavit-evidence/2"
"""The format the builder writes: a backup record's status, deletion and holds are the
ledger's and cite their events (``deleted_seq``; each hold's ``seq`` and ``released_seq``)."""
FORMAT_1 = "affidavit-evidence/1"
"""The first format (still verified): a backup record's deletion and holds were the catalog
row's and cited nothing, so a package of this format does not prove them."""
FORMATS = (FORMAT_1, FORMAT)


@dataclass(frozen=True, slots=True, kw_only=True)
class EvidenceContent:
    """The facts of one package. Each list holds JSON-ready dicts (see docs/formats/evidence.md
    for every key).

    - ``controls``: the controls catalog ``{"id", "title", "severity", "frequency",
      "rationale", "parameters", "mappings": {framework: [ids]}}``;
    - ``results``: the newest policy check in the period, one per control and subject
      ``{"control", "subject", "status" (pass|fail|excepted|not-applicable|not-evaluated),
      "message", "severity", "owner", "evidence", "exception"}``;
    - ``check_runs``: ``{"id", "at", "actor", "ok", "policy_version", "seq", "results_sha256"}``;
    - ``backups``: ``{"id", "source", "vault", "kind", "format", "status", "started_at",
      "finished_at", "retain_until", "deleted_at", "deleted_seq", "datasets": [{"name",
      "records", "fingerprint", "classification"}], "artifacts": [{"path", "role", "dataset",
      "size", "sha256", "plain_size", "plain_sha256"}], "holds": [{"case", "placed",
      "released", "seq", "released_seq"}], "error",
      "manifest_sha256", "attestation" (path in the package or null), "seq"}``;
    - ``verifications``: ``{"id", "backup_id", "kind", "started_at", "finished_at", "ok",
      "findings": [{"code", "message", "subject"}], "attestation", "seq"}``;
    - ``drills``: ``{"id", "backup_id", "target", "started_at", "finished_at", "ok",
      "rto_seconds", "restore_seconds", "fingerprint_match", "phases": {phase: seconds},
      "attestation", "seq"}``;
    - ``findings``: ``{"id", "control", "subject", "severity", "owner", "message", "status",
      "opened_at", "last_seen_at", "due_at", "evidence", "trail": [{"at", "actor", "status",
      "note", "seq"}]}``;
    - ``exceptions``: ``{"id", "control", "subject", "reason", "requested_by",
      "requested_at", "expires_at", "status", "approved_by", "approved_at"}``;
    - ``key_rotations``: ``{"seq", "time", "actor", "kek", "old_version", "new_version"}``;
    - ``policy_versions``: ``{"version", "sha256", "text", "proposed_by", "proposed_at",
      "proposal_seq", "approved_by", "approved_at", "approval_seq"}``.

    Times are ISO 8601 strings with a UTC offset.
    """

    generated_at: datetime
    period_start: datetime
    period_end: datetime
    framework: str | None  # only controls mapped to it are assessed, when given
    origin: str  # the ledger's origin (also the signing key's name)
    checkpoint_size: int
    checkpoint_root: str  # hex
    event_count: int  # ledger events cited (with inclusion proofs)
    controls: list[dict[str, Any]] = field(default_factory=list)
    results: list[dict[str, Any]] = field(default_factory=list)
    check_runs: list[dict[str, Any]] = field(default_factory=list)
    backups: list[dict[str, Any]] = field(default_factory=list)
    verifications: list[dict[str, Any]] = field(default_factory=list)
    drills: list[dict[str, Any]] = field(default_factory=list)
    findings: list[dict[str, Any]] = field(default_factory=list)
    exceptions: list[dict[str, Any]] = field(default_factory=list)
    key_rotations: list[dict[str, Any]] = field(default_factory=list)
    policy_versions: list[dict[str, Any]] = field(default_factory=list)
