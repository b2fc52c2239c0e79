"""Repository of governed exports: recipients, export spec versions and export runs (tables
``export_recipients``, ``export_specs``, ``export_runs``)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session as OrmSession

from affidavit.catalog.rows import aware
from affidavit.catalog.schema import ExportRecipientRow, ExportRunRow, ExportSpecRow
from affidavit.errors import AlreadyExists, NotFound
from affidavit.models.export import (
    ExportRun,
    ExportStatus,
    Recipient,
    SpecVersion,
)


@dataclass(frozen=True, slots=True, kw_only=True)
class WrappedKey:
    """A recipient's pseudonymisation key as stored: wrapped by a KEK version."""

    kek_id: str
    kek_version: int
    ciphertext: bytes


def _opt_time(value: datetime | None) -> datetime | None:
    return aware(value) if value is not None else None


def _recipient(row: ExportRecipientRow) -> Recipient:
    return Recipient(
        name=row.name,
        organisation=row.organisation,
        contact=row.contact,
        public_key=row.public_key,
        dpa=row.dpa,
        added_by=row.added_by,
        added_at=aware(row.added_at),
        challenge_sha256=row.challenge_sha256,
        verified_at=_opt_time(row.verified_at),
        verified_seq=row.verified_seq,
    )


def _spec(row: ExportSpecRow) -> SpecVersion:
    return SpecVersion(
        name=row.name,
        version=row.version,
        sha256=row.sha256,
        text=row.text,
        proposed_by=row.proposed_by,
        proposed_at=aware(row.proposed_at),
        proposal_seq=row.proposal_seq,
        approved_by=row.approved_by,
        approved_at=_opt_time(row.approved_at),
        approval_seq=row.approval_seq,
    )


def _run(row: ExportRunRow) -> ExportRun:
    return ExportRun(
        id=row.id,
        spec=row.spec,
        version=row.version,
        backup_id=row.backup_id,
        recipient=row.recipient,
        status=ExportStatus(row.status),
        started_at=aware(row.started_at),
        started_by=row.started_by,
        finished_at=_opt_time(row.finished_at),
        output_path=row.output_path,
        output_sha256=row.output_sha256,
        records_out=row.records_out,
        error=row.error,
    )


class ExportRepository:
    """Recipients, spec versions and runs."""

    def __init__(self, session: OrmSession) -> None:
        self._s = session

    # -- recipients ---------------------------------------------------------------------

    def add_recipient(self, recipient: Recipient, key: WrappedKey) -> None:
        """Insert a recipient; raises :class:`AlreadyExists`."""
        if self._s.get(ExportRecipientRow, recipient.name) is not None:
            raise AlreadyExists(
                f"recipient {recipient.name!r} already exists",
                hint="`affidavit recipient list` shows them",
            )
        self._s.add(
            ExportRecipientRow(
                name=recipient.name,
                organisation=recipient.organisation,
                contact=recipient.contact,
                public_key=recipient.public_key,
                dpa=recipient.dpa,
                added_by=recipient.added_by,
                added_at=recipient.added_at,
                challenge_sha256=recipient.challenge_sha256,
                kek_id=key.kek_id,
                kek_version=key.kek_version,
                pseudonym_key=key.ciphertext,
            )
        )
        self._s.flush()

    def _recipient_row(self, name: str) -> ExportRecipientRow:
        row = self._s.get(ExportRecipientRow, name)
        if row is None:
            raise NotFound(
                f"no recipient {name[:63]!r}", hint="`affidavit recipient list` shows them"
            )
        return row

    def recipient(self, name: str) -> Recipient:
        """The recipient ``name``; raises :class:`NotFound`."""
        return _recipient(self._recipient_row(name))

    def recipients(self) -> list[Recipient]:
        """Every recipient, by name."""
        rows = self._s.scalars(select(ExportRecipientRow).order_by(ExportRecipientRow.name))
        return [_recipient(r) for r in rows]

    def pseudonym_key(self, name: str) -> WrappedKey:
        """The wrapped pseudonymisation key of recipient ``name``."""
        row = self._recipient_row(name)
        return WrappedKey(
            kek_id=row.kek_id, kek_version=row.kek_version, ciphertext=bytes(row.pseudonym_key)
        )

    def pseudonym_keys_wrapped_by(self, kek_id: str) -> dict[str, WrappedKey]:
        """Every recipient's pseudonymisation key wrapped by a version of ``kek_id``, by name."""
        rows = self._s.scalars(
            select(ExportRecipientRow).where(ExportRecipientRow.kek_id == kek_id)
        )
        return {
            row.name: WrappedKey(
                kek_id=row.kek_id, kek_version=row.kek_version, ciphertext=bytes(row.pseudonym_key)
            )
            for row in rows
        }

    def rewrap_pseudonym_key(self, name: str, key: WrappedKey) -> None:
        """Replace the recipient's wrapped pseudonymisation key (a key rotation)."""
        row = self._recipient_row(name)
        row.kek_id, row.kek_version, row.pseudonym_key = key.kek_id, key.kek_version, key.ciphertext
        self._s.flush()

    def mark_verified(self, name: str, *, at: datetime, seq: int) -> None:
        """Record that recipient ``name`` proved possession of its key."""
        row = self._recipient_row(name)
        row.challenge_sha256 = None
        row.verified_at = at
        row.verified_seq = seq
        self._s.flush()

    # -- specs ----------------------------------------------------------------------------

    def next_spec_version(self, name: str) -> int:
        """The version a new proposal of spec ``name`` gets."""
        current = self._s.scalar(
            select(func.max(ExportSpecRow.version)).where(ExportSpecRow.name == name)
        )
        return int(current or 0) + 1

    def add_spec(self, spec: SpecVersion) -> None:
        """Insert a proposed spec version."""
        self._s.add(
            ExportSpecRow(
                name=spec.name,
                version=spec.version,
                sha256=spec.sha256,
                text=spec.text,
                proposed_by=spec.proposed_by,
                proposed_at=spec.proposed_at,
                proposal_seq=spec.proposal_seq,
            )
        )
        self._s.flush()

    def spec(self, name: str, version: int | None = None) -> SpecVersion:
        """Version ``version`` of spec ``name`` (None: the newest approved one); raises
        :class:`NotFound`."""
        query = select(ExportSpecRow).where(ExportSpecRow.name == name)
        if version is not None:
            query = query.where(ExportSpecRow.version == version)
        else:
            query = query.where(ExportSpecRow.approved_by.is_not(None))
        row = self._s.scalars(query.order_by(ExportSpecRow.version.desc()).limit(1)).first()
        if row is None:
            what = f"version {version}" if version is not None else "approved version"
            raise NotFound(
                f"there is no {what} of export spec {name[:63]!r}",
                hint="`affidavit export spec list` shows the versions",
            )
        return _spec(row)

    def specs(self) -> list[SpecVersion]:
        """Every spec version, by name and version."""
        rows = self._s.scalars(
            select(ExportSpecRow).order_by(ExportSpecRow.name, ExportSpecRow.version)
        )
        return [_spec(r) for r in rows]

    def approve_spec(self, name: str, version: int, *, by: str, at: datetime, seq: int) -> None:
        """Record the approval of a spec version."""
        row = self._s.get(ExportSpecRow, (name, version))
        if row is None:
            raise NotFound(f"there is no version {version} of export spec {name[:63]!r}")
        row.approved_by, row.approved_at, row.approval_seq = by, at, seq
        self._s.flush()

    # -- runs -----------------------------------------------------------------------------

    def add_run(self, run: ExportRun) -> None:
        """Insert a run (running)."""
        self._s.add(
            ExportRunRow(
                id=run.id,
                spec=run.spec,
                version=run.version,
                backup_id=run.backup_id,
                recipient=run.recipient,
                status=run.status.value,
                started_at=run.started_at,
                started_by=run.started_by,
            )
        )
        self._s.flush()

    def finish_run(
        self,
        run_id: str,
        *,
        status: ExportStatus,
        at: datetime,
        output_path: str | None = None,
        output_sha256: str | None = None,
        records_out: int | None = None,
        error: str | None = None,
        envelope: str | None = None,
    ) -> None:
        """Close a run."""
        row = self._s.get(ExportRunRow, run_id)
        if row is None:
            raise NotFound(f"no export run {run_id!r}")
        row.status, row.finished_at = status.value, at
        row.output_path, row.output_sha256 = output_path, output_sha256
        row.records_out, row.error, row.envelope = records_out, error, envelope
        self._s.flush()

    def runs(self, spec: str | None = None) -> list[ExportRun]:
        """Every run (of ``spec`` when given), oldest first."""
        query = select(ExportRunRow)
        if spec is not None:
            query = query.where(ExportRunRow.spec == spec)
        return [_run(r) for r in self._s.scalars(query.order_by(ExportRunRow.started_at))]

    def envelope(self, run_id: str) -> str | None:
        """The signed manifest of a completed run."""
        row = self._s.get(ExportRunRow, run_id)
        if row is None:
            raise NotFound(f"no export run {run_id!r}", hint="`affidavit export list`")
        return row.envelope
