"""Backups, their artifacts and datasets, and legal holds."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from affidavit.models.segments import SegmentTable


class BackupStatus(StrEnum):
    """Where a backup is in its life."""

    RUNNING = "running"
    COMPLETE = "complete"
    FAILED = "failed"
    DELETED = "deleted"


class ArtifactRole(StrEnum):
    """What an artifact holds."""

    DATA = "data"  # records (a .bson, an RDB, an archive)
    METADATA = "metadata"  # collection options and indexes
    INDEX = "index"  # a fingerprint index
    MANIFEST = "manifest"  # the signed manifest and its envelope


@dataclass(frozen=True, slots=True, kw_only=True)
class BackupArtifact:
    """One stored file of a backup: ciphertext digest (what the vault holds) and plaintext
    digest (what the tool wrote), both SHA-256 hex."""

    path: str
    role: ArtifactRole
    size: int
    sha256: str
    plain_size: int | None = None
    plain_sha256: str | None = None
    dataset: str | None = None
    deleted: bool = False
    segments: SegmentTable | None = None
    """The segment table written with the artifact (signed in the manifest; catalog rows do
    not keep it)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class BackupDataset:
    """A dataset in a backup with its record count and exact fingerprint."""

    name: str
    records: int
    fingerprint: str
    classification: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Hold:
    """A legal hold on a backup."""

    id: int
    backup_id: str
    case_id: str
    reason: str
    created_at: datetime
    created_by: str
    released_at: datetime | None = None
    released_by: str | None = None
    release_reason: str | None = None

    @property
    def active(self) -> bool:
        """True until released."""
        return self.released_at is None


@dataclass(frozen=True, slots=True, kw_only=True)
class Lease:
    """Who holds a running backup: the process that records it, so that a later command can
    tell a run that is still going from one whose process died (SIGKILL, OOM, a lost host).

    ``boot_id`` and ``pid_namespace`` say which process table ``pid`` belongs to: only a
    process that sees the same host, boot and PID namespace may look the pid up (and then
    ``process_start``, the kernel's start time of the process in clock ticks after boot,
    tells the run's process from a later one that reuses its pid); anyone else judges the
    run by the age of ``heartbeat_at``."""

    backup_id: str
    host: str
    boot_id: str | None
    pid_namespace: str | None
    pid: int
    process_start: int | None
    started_at: datetime
    heartbeat_at: datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class Backup:
    """A backup as the catalog records it."""

    id: str
    source: str | None
    vault: str
    kind: str  # run | ingest
    format: str
    status: BackupStatus
    started_at: datetime
    finished_at: datetime | None
    retain_until: datetime
    consistency: dict[str, Any] | None = None
    manifest: bytes | None = None
    manifest_sha256: str | None = None
    envelope: str | None = None
    recipient: str | None = None
    wrapped_identity: bytes | None = None
    kek_id: str | None = None
    kek_version: int | None = None
    error: str | None = None
    deleted_at: datetime | None = None
    artifacts: tuple[BackupArtifact, ...] = field(default=())
    datasets: tuple[BackupDataset, ...] = field(default=())
    holds: tuple[Hold, ...] = field(default=())
