"""Repositories: the catalog's rows in and frozen model values out.

Each repository works inside the session of one unit of work and never commits; the unit of
work does. Lookups that miss raise :class:`~affidavit.errors.NotFound` with a hint.
"""

from __future__ import annotations

import builtins
import json
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from affidavit.catalog.rows import aware, checked, column, json_list, json_object, optional
from affidavit.catalog.schema import (
    AlertRow,
    BackupArtifactRow,
    BackupDatasetRow,
    BackupLeaseRow,
    BackupRow,
    DatasetRow,
    DrillRow,
    HoldRow,
    SourceRow,
    VaultRow,
    VerificationRow,
)
from affidavit.constants import Classification, EngineName
from affidavit.errors import AlreadyExists, NotFound
from affidavit.models.backup import (
    ArtifactRole,
    Backup,
    BackupArtifact,
    BackupDataset,
    BackupStatus,
    Hold,
    Lease,
)
from affidavit.models.checks import Alert, Drill, Finding, Verification
from affidavit.models.inventory import (
    Dataset,
    SecretKind,
    SecretRef,
    Source,
    SourceName,
    Vault,
    VaultKind,
    VaultName,
)


class SourceRepository:
    """Registered sources."""

    def __init__(self, session: Session) -> None:
        self._s = session

    def add(self, source: Source) -> None:
        """Insert ``source``; raise :class:`AlreadyExists` when the name is taken."""
        if self._row(source.name, missing_ok=True) is not None:
            raise AlreadyExists(
                f"a source named {source.name!r} already exists",
                hint="pick another name, or `affidavit source remove` the old one first",
            )
        self._s.add(
            SourceRow(
                name=source.name,
                engine=source.engine.value,
                uri=source.uri,
                secret_kind=source.secret.kind.value if source.secret else None,
                secret_locator=source.secret.locator if source.secret else None,
                classification=source.classification.value,
                region=source.region,
                owner=source.owner,
                created_at=source.created_at,
            )
        )
        self._s.flush()

    def get(self, name: str) -> Source:
        """The source called ``name``; raise :class:`NotFound`."""
        row = self._row(name)
        assert row is not None
        return _source(row)

    def list(self) -> list[Source]:
        """Every source, by name."""
        return [_source(r) for r in self._s.scalars(select(SourceRow).order_by(SourceRow.name))]

    def remove(self, name: str) -> None:
        """Delete the source and its datasets; raise :class:`NotFound`."""
        row = self._row(name)
        assert row is not None
        self._s.execute(delete(DatasetRow).where(DatasetRow.source_id == row.id))
        self._s.delete(row)
        self._s.flush()

    def _row(self, name: str, *, missing_ok: bool = False) -> SourceRow | None:
        row = self._s.scalars(select(SourceRow).where(SourceRow.name == name)).one_or_none()
        if row is None and not missing_ok:
            raise NotFound(
                f"no source named {name!r}", hint="`affidavit source list` shows the sources"
            )
        return row


class DatasetRepository:
    """Datasets discovered on sources, with their classification."""

    def __init__(self, session: Session) -> None:
        self._s = session

    def list(self, source: str | None = None) -> list[Dataset]:
        """The datasets of ``source`` (or of every source), by source and name."""
        stmt = (
            select(DatasetRow, SourceRow)
            .join(SourceRow, DatasetRow.source_id == SourceRow.id)
            .order_by(SourceRow.name, DatasetRow.name)
        )
        if source is not None:
            stmt = stmt.where(SourceRow.name == source)
        return [_dataset(d, s) for d, s in self._s.execute(stmt)]

    def get(self, source: str, name: str) -> Dataset | None:
        """The dataset, or None when it was never discovered nor classified."""
        found = [d for d in self.list(source) if d.name == name]
        return found[0] if found else None

    def record_discovery(self, source: str, counts: Sequence[tuple[str, int]]) -> None:
        """Store the record counts seen now; datasets no longer present keep their rows."""
        src = self._source_row(source)
        now = datetime.now(UTC)
        rows = {
            r.name: r
            for r in self._s.scalars(select(DatasetRow).where(DatasetRow.source_id == src.id))
        }
        for name, records in counts:
            row = rows.get(name)
            if row is None:
                row = DatasetRow(source_id=src.id, name=name)
                self._s.add(row)
            row.records = records
            row.discovered_at = now
        self._s.flush()

    def classify(
        self, source: str, name: str, level: Classification, reason: str
    ) -> Classification:
        """Set the dataset's own classification; return the previous effective one."""
        src = self._source_row(source)
        row = self._s.scalars(
            select(DatasetRow).where(DatasetRow.source_id == src.id, DatasetRow.name == name)
        ).one_or_none()
        if row is None:
            row = DatasetRow(source_id=src.id, name=name)
            self._s.add(row)
        previous = _classification(row, src)
        row.classification = level.value
        row.classification_reason = reason
        self._s.flush()
        return previous

    def _source_row(self, source: str) -> SourceRow:
        row = self._s.scalars(select(SourceRow).where(SourceRow.name == source)).one_or_none()
        if row is None:
            raise NotFound(
                f"no source named {source!r}", hint="`affidavit source list` shows the sources"
            )
        return row


class VaultRepository:
    """Registered vaults."""

    def __init__(self, session: Session) -> None:
        self._s = session

    def add(self, vault: Vault) -> None:
        """Insert ``vault``; raise :class:`AlreadyExists` when the name is taken."""
        exists = self._s.scalars(select(VaultRow.id).where(VaultRow.name == vault.name)).first()
        if exists is not None:
            raise AlreadyExists(
                f"a vault named {vault.name!r} already exists", hint="pick another name"
            )
        self._s.add(
            VaultRow(
                name=vault.name,
                kind=vault.kind.value,
                url=vault.url,
                region=vault.region,
                immutable_days=vault.immutable_days,
                created_at=vault.created_at,
            )
        )
        self._s.flush()

    def get(self, name: str) -> Vault:
        """The vault called ``name``; raise :class:`NotFound`."""
        row = self._s.scalars(select(VaultRow).where(VaultRow.name == name)).one_or_none()
        if row is None:
            raise NotFound(
                f"no vault named {name!r}", hint="`affidavit vault list` shows the vaults"
            )
        return _vault(row)

    def list(self) -> list[Vault]:
        """Every vault, by name."""
        return [_vault(r) for r in self._s.scalars(select(VaultRow).order_by(VaultRow.name))]


@dataclass(frozen=True, slots=True)
class StoredEntry:
    """A ledger entry as stored: its canonical bytes and the leaf hash kept beside them."""

    seq: int
    entry: bytes
    leaf_hash: bytes


_AS_BLOB = re.compile(r"CAST\((\w+) AS BLOB\)")


class LedgerRepository:
    """Raw storage of the ledger: entries, complete-subtree hashes and checkpoints.

    This knows nothing of hashing; :mod:`affidavit.ledger.log` decides what is stored. Every
    statement is fixed SQL sent straight to the unit of work's DB-API connection (SQLAlchemy's
    per-statement work, and the ORM session's per-transaction bookkeeping, cost more than the
    hashing and signing of an event), so a ledger-only change never needs an ORM session.
    """

    def __init__(self, connection: Session | Callable[[], Any], *, qmark: bool = True) -> None:
        """``connection`` gives the transaction's DB-API connection (called once, on first
        use; it may begin the transaction); a :class:`Session` is asked for its own.
        ``qmark``: whether the driver takes ``?`` placeholders (else ``%s``)."""
        if isinstance(connection, Session):
            session = connection
            self._connect: Callable[[], Any] = lambda: session.connection().connection
            qmark = session.get_bind().dialect.paramstyle == "qmark"
        else:
            self._connect = connection
        self._qmark = qmark
        self._dbapi: Any = None
        # (size, root) of the newest checkpoint, once read or written in this transaction;
        # () when the ledger has none
        self._newest: tuple[int, bytes] | tuple[()] | None = None

    def _cursor(self) -> Any:
        if self._dbapi is None:
            self._dbapi = self._connect()
        return self._dbapi.cursor()

    def _sql(self, sql: str) -> str:
        # SQLite keeps whatever storage class a value was written with, so the hashed columns
        # are read as CAST(... AS BLOB) and seq as CAST(seq AS BIGINT): an entry rewritten as
        # TEXT reads as the same bytes instead of a str the verifier cannot hash, a seq stored
        # as text or real as the number (PostgreSQL's typed columns hold only those)
        if self._qmark:
            return sql
        return _AS_BLOB.sub(r"\1", sql).replace("?", "%s")

    def _raw(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        """Run ``sql`` (``?`` placeholders) and return its rows."""
        cursor = self._cursor()
        try:
            cursor.execute(self._sql(sql), tuple(params))
            return list(cursor.fetchall()) if cursor.description else []
        finally:
            cursor.close()

    def _stream(self, sql: str, params: Sequence[Any] = ()) -> Iterator[Any]:
        """The rows of ``sql``, fetched 10,000 at a time."""
        cursor = self._cursor()
        try:
            cursor.execute(self._sql(sql), tuple(params))
            while rows := cursor.fetchmany(10_000):
                yield from rows
        finally:
            cursor.close()

    def size(self) -> int:
        """Number of entries (sequence numbers are 0..size-1, dense)."""
        ((value,),) = self._raw("SELECT count(*) FROM ledger_entries")
        return int(value or 0)

    def last_seq(self) -> int | None:
        """The highest sequence number, or None for an empty ledger."""
        ((value,),) = self._raw("SELECT max(seq) FROM ledger_entries")
        return None if value is None else int(value)

    def head(self) -> tuple[int | None, tuple[int, bytes] | None]:
        """The highest sequence number (None for an empty ledger) and the size and root of the
        newest checkpoint (None when there is none), in one statement."""
        ((last, size, root),) = self._raw(
            "SELECT (SELECT max(seq) FROM ledger_entries), "
            "(SELECT max(size) FROM ledger_checkpoints), "
            "(SELECT CAST(root AS BLOB) FROM ledger_checkpoints ORDER BY size DESC LIMIT 1)"
        )
        newest = None if size is None else (int(size), bytes(root))
        self._newest = () if newest is None else newest
        return (None if last is None else int(last)), newest

    def newest_of(self, actions: Sequence[str]) -> tuple[int, bytes] | None:
        """The seq and leaf hash of the newest entry whose ``action`` column is one of
        ``actions`` (None when there is none), in one statement: one index seek per action
        (``ix_ledger_entries_action_seq``), whatever the size of the ledger."""
        if not actions:
            return None
        newest = " UNION ALL ".join(
            ["SELECT max(seq) AS m FROM ledger_entries WHERE action = ?"] * len(actions)
        )
        rows = self._raw(
            "SELECT CAST(seq AS BIGINT), CAST(leaf_hash AS BLOB) FROM ledger_entries "  # noqa: S608 - placeholders only
            f"WHERE seq = (SELECT max(m) FROM ({newest}) AS newest)",
            actions,
        )
        return (int(rows[0][0]), bytes(rows[0][1])) if rows else None

    def append(
        self,
        *,
        seq: int,
        time: str,
        actor: str,
        action: str,
        subject: str,
        entry: bytes,
        leaf_hash: bytes,
        nodes: bytes = b"",
    ) -> None:
        """Insert one entry row with the hashes of the complete subtrees its leaf closes
        (levels 1, 2, ... concatenated; see :class:`~affidavit.catalog.schema.LedgerEntryRow`)."""
        self._raw(
            "INSERT INTO ledger_entries "
            "(seq, time, actor, action, subject, entry, leaf_hash, nodes) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (seq, time, actor, action, subject, entry, leaf_hash, nodes),
        )

    def get_nodes(self, keys: Sequence[tuple[int, int]]) -> dict[tuple[int, int], bytes]:
        """The stored hashes of the given (level, index) subtrees, in one query: the subtree
        of ``2**level`` leaves from ``index * 2**level`` is stored in the row of its last leaf
        (``leaf_hash`` for level 0, else the ``level``-th hash of ``nodes``). A subtree whose
        hash is not stored is left out."""
        found: dict[tuple[int, int], bytes] = {}
        if not keys:
            return found
        by_seq: dict[int, list[tuple[int, int]]] = {}
        for level, index in dict.fromkeys(keys):
            if level < 0 or index < 0:
                continue
            by_seq.setdefault(((index + 1) << level) - 1, []).append((level, index))
        if not by_seq:
            return found
        marks = ", ".join("?" * len(by_seq))
        rows = self._raw(
            "SELECT seq, CAST(leaf_hash AS BLOB), CAST(nodes AS BLOB) FROM ledger_entries "  # noqa: S608 - placeholders only
            f"WHERE seq IN ({marks})",
            list(by_seq),
        )
        for seq, leaf, nodes in rows:
            for level, index in by_seq.get(int(seq), ()):
                if level == 0:
                    digest = bytes(leaf) if leaf is not None else b""
                else:
                    digest = bytes(nodes or b"")[(level - 1) * 32 : level * 32]
                if len(digest) == 32:
                    found[(level, index)] = digest
        return found

    def entries(self, start: int = 0, stop: int | None = None) -> Iterator[StoredEntry]:
        """Entries with ``start <= seq < stop`` in sequence order, streamed."""
        sql = (
            "SELECT CAST(seq AS BIGINT), CAST(entry AS BLOB), CAST(leaf_hash AS BLOB) "
            "FROM ledger_entries WHERE seq >= ?"
        )
        params = [start]
        if stop is not None:
            sql += " AND seq < ?"
            params.append(stop)
        for seq, entry, leaf in self._stream(sql + " ORDER BY seq", params):
            yield StoredEntry(seq=int(seq), entry=bytes(entry), leaf_hash=bytes(leaf))

    def entry_rows(self) -> Iterator[tuple[int, bytes, bytes | None]]:
        """``(seq, entry, leaf_hash)`` of every entry in seq order, straight from a DB-API
        cursor: verify and export read every row, and the ORM costs more per row than hashing."""
        cursor = self._cursor()
        try:  # not through _stream: one generator less per row, for a million rows
            cursor.execute(
                self._sql(
                    "SELECT CAST(seq AS BIGINT), CAST(entry AS BLOB), CAST(leaf_hash AS BLOB) "
                    "FROM ledger_entries ORDER BY seq"
                )
            )
            while rows := cursor.fetchmany(10_000):
                for seq, entry, leaf in rows:
                    yield int(seq), bytes(entry), None if leaf is None else bytes(leaf)
        finally:
            cursor.close()

    def entry_rows_with_nodes(self) -> Iterator[tuple[Any, ...]]:
        """``(seq, entry, leaf_hash, nodes, action, actor, subject, time)`` of every entry in
        seq order (``nodes``: the stored hashes of the complete subtrees the entry's leaf
        closes; the rest: the query copies of the entry's members), for the verifier."""
        cursor = self._cursor()
        try:
            cursor.execute(
                self._sql(
                    "SELECT CAST(seq AS BIGINT), CAST(entry AS BLOB), CAST(leaf_hash AS BLOB), "
                    "CAST(nodes AS BLOB), action, actor, subject, time "
                    "FROM ledger_entries ORDER BY seq"
                )
            )
            while rows := cursor.fetchmany(10_000):
                yield from rows
        finally:
            cursor.close()

    def find(
        self,
        *,
        action: str | None = None,
        since: str | None = None,
        limit: int | None = None,
        subject: str | None = None,
    ) -> list[StoredEntry]:
        """Entries filtered by action, subject and time (RFC 3339 strings compare in order).
        The subject filter reads the row's column: a caller that trusts what it finds still
        checks the entry itself."""
        where: list[str] = []
        params: list[Any] = []
        if action is not None:
            where.append("action = ?")
            params.append(action)
        if subject is not None:
            where.append("subject = ?")
            params.append(subject)
        if since is not None:
            where.append("time >= ?")
            params.append(since)
        sql = (
            "SELECT CAST(seq AS BIGINT), CAST(entry AS BLOB), CAST(leaf_hash AS BLOB) "
            "FROM ledger_entries"
        )
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY seq"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        return [
            StoredEntry(seq=int(s), entry=bytes(e), leaf_hash=bytes(h))
            for s, e, h in self._raw(sql, params)
        ]

    def add_checkpoint(self, *, size: int, root: bytes, note: str, created_at: str) -> None:
        """Store a signed checkpoint. One is kept per tree size: when that size already has
        one, the stored one stays (history is never overwritten; had it been altered, the
        verifier reports it)."""
        cursor = self._cursor()
        try:
            cursor.execute(
                self._sql(
                    "INSERT INTO ledger_checkpoints (size, root, note, created_at) "
                    "VALUES (?, ?, ?, ?) ON CONFLICT (size) DO NOTHING"
                ),
                (size, root, note, created_at),
            )
            inserted = cursor.rowcount == 1
        finally:
            cursor.close()
        # the newest is this one when it went in and nothing larger exists (checked on the
        # next read otherwise)
        known = self._newest
        newest = inserted and known is not None and (not known or known[0] < size)
        self._newest = (size, root) if newest else None

    def checkpoints(self) -> list[tuple[int, str]]:
        """Every stored checkpoint as (size, signed note), smallest (oldest) first."""
        rows = self._raw("SELECT size, note FROM ledger_checkpoints ORDER BY size")
        return [(int(size), str(note)) for size, note in rows]

    def latest_checkpoint(self) -> tuple[int, str] | None:
        """The newest (largest) stored checkpoint as (size, signed note), or None."""
        rows = self._raw("SELECT size, note FROM ledger_checkpoints ORDER BY size DESC LIMIT 1")
        return (int(rows[0][0]), str(rows[0][1])) if rows else None

    def latest_checkpoint_size(self) -> int | None:
        """The tree size of the newest stored checkpoint, or None; once :meth:`head` or
        :meth:`add_checkpoint` ran in this transaction, without reading again (the
        transaction holds the write lock, and every checkpoint goes through this class)."""
        if self._newest is None:
            ((size,),) = self._raw("SELECT max(size) FROM ledger_checkpoints")
            return None if size is None else int(size)
        return self._newest[0] if self._newest else None

    def checkpoint_of_size(self, size: int) -> str | None:
        """The newest stored signed checkpoint of tree size ``size``, or None."""
        rows = self._raw("SELECT note FROM ledger_checkpoints WHERE size = ?", (size,))
        return str(rows[0][0]) if rows else None

    def remove_checkpoint(self, size: int) -> None:
        """Remove the checkpoint row of ``size`` (only ``ledger recover`` does, for a row that
        does not hold the checkpoint the key signed for that size)."""
        self._raw("DELETE FROM ledger_checkpoints WHERE size = ?", (size,))
        self._newest = None


def _source(row: SourceRow) -> Source:
    secret = (
        SecretRef(kind=column(row, "secret_kind", SecretKind), locator=row.secret_locator or "")
        if row.secret_kind
        else None
    )
    return Source(
        name=SourceName(row.name),
        engine=column(row, "engine", EngineName),
        uri=row.uri,
        secret=secret,
        classification=column(row, "classification", Classification),
        region=row.region,
        owner=row.owner,
        created_at=column(row, "created_at", aware),
    )


def _classification(row: DatasetRow, src: SourceRow) -> Classification:
    """The dataset's own classification, else its source's."""
    if row.classification is None:
        return column(src, "classification", Classification)
    return column(row, "classification", Classification)


def _dataset(row: DatasetRow, src: SourceRow) -> Dataset:
    return Dataset(
        source=SourceName(src.name),
        name=row.name,
        classification=_classification(row, src),
        inherited=row.classification is None,
        reason=row.classification_reason,
        records=row.records,
        discovered_at=column(row, "discovered_at", optional(aware)),
    )


def _vault(row: VaultRow) -> Vault:
    return Vault(
        name=VaultName(row.name),
        kind=column(row, "kind", VaultKind),
        url=row.url,
        region=row.region,
        immutable_days=row.immutable_days,
        created_at=column(row, "created_at", aware),
    )


class BackupRepository:
    """Backups with their artifacts, datasets and holds."""

    def __init__(self, session: Session) -> None:
        self._s = session

    def add(self, backup: Backup) -> None:
        """Insert a backup row (normally in state ``running``)."""
        self._s.add(
            BackupRow(
                id=backup.id,
                source=backup.source,
                vault=backup.vault,
                kind=backup.kind,
                format=backup.format,
                status=backup.status.value,
                started_at=backup.started_at,
                finished_at=backup.finished_at,
                retain_until=backup.retain_until,
                consistency=json.dumps(backup.consistency) if backup.consistency else None,
                recipient=backup.recipient,
                wrapped_identity=backup.wrapped_identity,
                kek_id=backup.kek_id,
                kek_version=backup.kek_version,
            )
        )
        self._s.flush()

    def _row(self, backup_id: str) -> BackupRow:
        row = self._s.get(BackupRow, backup_id)
        if row is None:
            raise NotFound(
                f"no backup {backup_id!r}", hint="`affidavit backup list` shows the backups"
            )
        return row

    def get(self, backup_id: str) -> Backup:
        """The backup with everything recorded about it; raise :class:`NotFound`."""
        row = self._row(backup_id)
        (backup,) = self._backups([row], lambda column: column == backup_id)
        return backup

    def list(self, source: str | None = None) -> list[Backup]:
        """Backups (of ``source``), newest first, with everything recorded about them: four
        queries whatever their number (the backups, then all their artifacts, datasets and
        holds)."""
        stmt = select(BackupRow).order_by(BackupRow.started_at.desc(), BackupRow.id.desc())
        if source is None:
            return self._backups(list(self._s.scalars(stmt)), None)
        stmt = stmt.where(BackupRow.source == source)
        of_source = select(BackupRow.id).where(BackupRow.source == source)
        return self._backups(
            list(self._s.scalars(stmt)), lambda column: column.in_(of_source.scalar_subquery())
        )

    def complete(
        self,
        backup_id: str,
        *,
        finished_at: datetime,
        consistency: dict[str, Any] | None,
        manifest: bytes,
        manifest_sha256: str,
        envelope: str,
        datasets: Sequence[BackupDataset],
    ) -> None:
        """Record a finished backup: its datasets, manifest and envelope (its artifacts were
        recorded one by one as the vault took them)."""
        row = self._row(backup_id)
        row.status = BackupStatus.COMPLETE.value
        row.finished_at = finished_at
        row.consistency = json.dumps(consistency) if consistency else None
        row.manifest = manifest
        row.manifest_sha256 = manifest_sha256
        row.envelope = envelope
        for ds in datasets:
            self._s.add(
                BackupDatasetRow(
                    backup_id=backup_id,
                    name=ds.name,
                    records=ds.records,
                    fingerprint=ds.fingerprint,
                    classification=ds.classification,
                )
            )
        self._s.flush()

    def fail(self, backup_id: str, *, finished_at: datetime, error: str) -> None:
        """Record a failed backup (its artifacts are already recorded)."""
        row = self._row(backup_id)
        row.status = BackupStatus.FAILED.value
        row.finished_at = finished_at
        row.error = error
        self._s.flush()

    def status(self, backup_id: str) -> BackupStatus:
        """The backup's status alone (cheap: no artifacts, datasets or holds read)."""
        value = self._s.scalar(select(BackupRow.status).where(BackupRow.id == backup_id))
        if value is None:
            raise NotFound(
                f"no backup {backup_id!r}", hint="`affidavit backup list` shows the backups"
            )
        return checked(
            BackupStatus, value, table=BackupRow.__tablename__, row=backup_id, name="status"
        )

    def add_lease(self, lease: Lease) -> None:
        """Record who holds a new running backup (with its ``running`` row)."""
        self._row(lease.backup_id)
        self._s.add(
            BackupLeaseRow(
                backup_id=lease.backup_id,
                host=lease.host,
                boot_id=lease.boot_id,
                pid_namespace=lease.pid_namespace,
                pid=lease.pid,
                process_start=lease.process_start,
                started_at=lease.started_at,
                heartbeat_at=lease.heartbeat_at,
            )
        )
        self._s.flush()

    def lease(self, backup_id: str) -> Lease | None:
        """The backup's lease, or None (a run recorded before leases existed)."""
        row = self._s.get(BackupLeaseRow, backup_id)
        return _lease(row) if row is not None else None

    def heartbeat(self, backup_id: str, *, at: datetime) -> bool:
        """Refresh the lease of a running backup; False (nothing changed) once the backup is
        no longer running or has no lease."""
        row = self._s.get(BackupLeaseRow, backup_id)
        if row is None or self.status(backup_id) is not BackupStatus.RUNNING:
            return False
        row.heartbeat_at = at
        self._s.flush()
        return True

    def running(self) -> builtins.list[tuple[str, datetime, Lease | None]]:
        """``(backup id, started_at, lease)`` of every running backup, oldest first."""
        rows = self._s.execute(
            select(BackupRow.id, BackupRow.started_at, BackupLeaseRow)
            .outerjoin(BackupLeaseRow, BackupLeaseRow.backup_id == BackupRow.id)
            .where(BackupRow.status == BackupStatus.RUNNING.value)
            .order_by(BackupRow.started_at, BackupRow.id)
        )
        return [
            (str(bid), aware(started), _lease(lease) if lease is not None else None)
            for bid, started, lease in rows
        ]

    def add_artifact(self, backup_id: str, artifact: BackupArtifact) -> None:
        """Record one artifact the vault holds."""
        self._row(backup_id)
        self._add_artifacts(backup_id, [artifact])
        self._s.flush()

    def artifacts_with_digest(self, sha256: str) -> builtins.list[tuple[str, str]]:
        """``(backup id, path)`` of every recorded artifact whose stored bytes have this
        SHA-256 (verification names the backup a swapped-in artifact came from)."""
        rows = self._s.execute(
            select(BackupArtifactRow.backup_id, BackupArtifactRow.path)
            .where(BackupArtifactRow.sha256 == sha256)
            .order_by(BackupArtifactRow.backup_id, BackupArtifactRow.path)
        )
        return [(str(b), str(p)) for b, p in rows]

    def mark_deleted(self, backup_id: str, *, at: datetime) -> None:
        """Mark the backup deleted and its artifacts gone (manifest and fingerprints stay)."""
        row = self._row(backup_id)
        row.status = BackupStatus.DELETED.value
        row.deleted_at = at
        for art in self._s.scalars(
            select(BackupArtifactRow).where(BackupArtifactRow.backup_id == backup_id)
        ):
            art.deleted = True
        self._s.flush()

    def mark_artifacts_deleted(self, backup_id: str, paths: Sequence[str]) -> None:
        """Mark some artifacts gone (a deletion that stopped part-way)."""
        wanted = set(paths)
        for art in self._s.scalars(
            select(BackupArtifactRow).where(BackupArtifactRow.backup_id == backup_id)
        ):
            if art.path in wanted:
                art.deleted = True
        self._s.flush()

    def rewrap(self, backup_id: str, *, wrapped: bytes, kek_id: str, kek_version: int) -> None:
        """Replace the backup's wrapped identity (key rotation)."""
        row = self._row(backup_id)
        row.wrapped_identity = wrapped
        row.kek_id = kek_id
        row.kek_version = kek_version
        self._s.flush()

    def add_hold(self, backup_id: str, *, case_id: str, reason: str, by: str, at: datetime) -> Hold:
        """Place a legal hold."""
        self._row(backup_id)
        row = HoldRow(
            backup_id=backup_id, case_id=case_id, reason=reason, created_at=at, created_by=by
        )
        self._s.add(row)
        self._s.flush()
        return _hold(row)

    def release_hold(
        self, backup_id: str, case_id: str, *, reason: str, by: str, at: datetime
    ) -> Hold:
        """Release the active hold of ``case_id`` on the backup; raise :class:`NotFound`."""
        row = self._s.scalars(
            select(HoldRow).where(
                HoldRow.backup_id == backup_id,
                HoldRow.case_id == case_id,
                HoldRow.released_at.is_(None),
            )
        ).first()
        if row is None:
            raise NotFound(
                f"no active hold {case_id!r} on backup {backup_id}",
                hint="`affidavit hold list` shows the holds",
            )
        row.released_at, row.released_by, row.release_reason = at, by, reason
        self._s.flush()
        return _hold(row)

    def holds(
        self, backup_id: str | None = None, *, active_only: bool = False
    ) -> builtins.list[Hold]:
        """Holds (of one backup), oldest first."""
        stmt = select(HoldRow).order_by(HoldRow.id)
        if backup_id is not None:
            stmt = stmt.where(HoldRow.backup_id == backup_id)
        if active_only:
            stmt = stmt.where(HoldRow.released_at.is_(None))
        return [_hold(r) for r in self._s.scalars(stmt)]

    def _add_artifacts(self, backup_id: str, artifacts: Sequence[BackupArtifact]) -> None:
        for art in artifacts:
            self._s.add(
                BackupArtifactRow(
                    backup_id=backup_id,
                    path=art.path,
                    role=art.role.value,
                    size=art.size,
                    sha256=art.sha256,
                    plain_size=art.plain_size,
                    plain_sha256=art.plain_sha256,
                    dataset=art.dataset,
                    deleted=art.deleted,
                )
            )

    def _backups(
        self, rows: Sequence[BackupRow], scope: Callable[[Any], Any] | None
    ) -> builtins.list[Backup]:
        """``rows`` as backups, their artifacts, datasets and holds read with one query each
        for all of them: ``scope`` turns a table's ``backup_id`` column into the condition
        that selects the rows of these backups (None: every row, for a list of all backups).
        Each backup's artifacts come by path, datasets by name, holds oldest first."""
        if not rows:
            return []

        def by_backup(table: Any, *order: Any) -> dict[str, builtins.list[Any]]:
            stmt = select(table).order_by(table.backup_id, *order)
            if scope is not None:
                stmt = stmt.where(scope(table.backup_id))
            found: dict[str, builtins.list[Any]] = {}
            for child in self._s.scalars(stmt):
                found.setdefault(child.backup_id, []).append(child)
            return found

        arts = by_backup(BackupArtifactRow, BackupArtifactRow.path)
        dss = by_backup(BackupDatasetRow, BackupDatasetRow.name)
        holds = by_backup(HoldRow, HoldRow.id)
        return [
            self._backup(r, arts.get(r.id, ()), dss.get(r.id, ()), holds.get(r.id, ()))
            for r in rows
        ]

    def _backup(
        self,
        row: BackupRow,
        arts: Sequence[BackupArtifactRow],
        dss: Sequence[BackupDatasetRow],
        holds: Sequence[HoldRow],
    ) -> Backup:
        return Backup(
            id=row.id,
            source=row.source,
            vault=row.vault,
            kind=row.kind,
            format=row.format,
            status=column(row, "status", BackupStatus),
            started_at=column(row, "started_at", aware),
            finished_at=column(row, "finished_at", optional(aware)),
            retain_until=column(row, "retain_until", aware),
            consistency=column(row, "consistency", optional(json_object)),
            manifest=row.manifest,
            manifest_sha256=row.manifest_sha256,
            envelope=row.envelope,
            recipient=row.recipient,
            wrapped_identity=row.wrapped_identity,
            kek_id=row.kek_id,
            kek_version=row.kek_version,
            error=row.error,
            deleted_at=column(row, "deleted_at", optional(aware)),
            artifacts=tuple(
                BackupArtifact(
                    path=a.path,
                    role=column(a, "role", ArtifactRole),
                    size=a.size,
                    sha256=a.sha256,
                    plain_size=a.plain_size,
                    plain_sha256=a.plain_sha256,
                    dataset=a.dataset,
                    deleted=a.deleted,
                )
                for a in arts
            ),
            datasets=tuple(
                BackupDataset(
                    name=d.name,
                    records=d.records,
                    fingerprint=d.fingerprint,
                    classification=d.classification,
                )
                for d in dss
            ),
            holds=tuple(_hold(h) for h in holds),
        )


def _findings(text: str) -> tuple[Finding, ...]:
    """The findings of a verification or drill, stored as a JSON array."""
    return tuple(Finding.from_json(f) for f in json_list(text))


def _lease(row: BackupLeaseRow) -> Lease:
    return Lease(
        backup_id=row.backup_id,
        host=row.host,
        boot_id=row.boot_id,
        pid_namespace=row.pid_namespace,
        pid=row.pid,
        process_start=row.process_start,
        started_at=column(row, "started_at", aware),
        heartbeat_at=column(row, "heartbeat_at", aware),
    )


def _hold(row: HoldRow) -> Hold:
    return Hold(
        id=row.id,
        backup_id=row.backup_id,
        case_id=row.case_id,
        reason=row.reason,
        created_at=column(row, "created_at", aware),
        created_by=row.created_by,
        released_at=column(row, "released_at", optional(aware)),
        released_by=row.released_by,
        release_reason=row.release_reason,
    )


class CheckRepository:
    """Verifications, drills and alerts."""

    def __init__(self, session: Session) -> None:
        self._s = session

    def add_verification(self, v: Verification) -> None:
        """Record a verification (the backup must exist)."""
        if self._s.get(BackupRow, v.backup_id) is None:
            raise NotFound(f"no backup {v.backup_id!r}")
        self._s.add(
            VerificationRow(
                id=v.id,
                backup_id=v.backup_id,
                kind=v.kind,
                started_at=v.started_at,
                finished_at=v.finished_at,
                ok=v.ok,
                sample_percent=v.sample_percent,
                sample_seed=v.sample_seed,
                coverage=json.dumps(v.coverage) if v.coverage is not None else None,
                findings=json.dumps([f.to_json() for f in v.findings]),
                envelope=v.envelope,
            )
        )
        self._s.flush()

    def verifications(self, backup_id: str | None = None) -> builtins.list[Verification]:
        """Verifications (of one backup), newest first."""
        stmt = select(VerificationRow).order_by(VerificationRow.started_at.desc())
        if backup_id is not None:
            stmt = stmt.where(VerificationRow.backup_id == backup_id)
        return [
            Verification(
                id=r.id,
                backup_id=r.backup_id,
                kind=r.kind,
                started_at=column(r, "started_at", aware),
                finished_at=column(r, "finished_at", aware),
                ok=r.ok,
                findings=column(r, "findings", _findings),
                sample_percent=r.sample_percent,
                sample_seed=r.sample_seed,
                coverage=column(r, "coverage", optional(json_object)),
                envelope=r.envelope,
            )
            for r in self._s.scalars(stmt)
        ]

    def add_drill(self, d: Drill) -> None:
        """Record a drill (the backup must exist)."""
        if self._s.get(BackupRow, d.backup_id) is None:
            raise NotFound(f"no backup {d.backup_id!r}")
        self._s.add(
            DrillRow(
                id=d.id,
                backup_id=d.backup_id,
                target=d.target,
                started_at=d.started_at,
                finished_at=d.finished_at,
                ok=d.ok,
                rto_seconds=d.rto_seconds,
                restore_seconds=d.restore_seconds,
                fingerprint_match=d.fingerprint_match,
                phases=json.dumps(d.phases),
                probes=json.dumps(list(d.probes)),
                findings=json.dumps([f.to_json() for f in d.findings]),
                envelope=d.envelope,
            )
        )
        self._s.flush()

    def drills(self, backup_id: str | None = None) -> builtins.list[Drill]:
        """Drills (of one backup), newest first."""
        stmt = select(DrillRow).order_by(DrillRow.started_at.desc())
        if backup_id is not None:
            stmt = stmt.where(DrillRow.backup_id == backup_id)
        return [
            Drill(
                id=r.id,
                backup_id=r.backup_id,
                target=r.target,
                started_at=column(r, "started_at", aware),
                finished_at=column(r, "finished_at", aware),
                ok=r.ok,
                rto_seconds=r.rto_seconds,
                restore_seconds=r.restore_seconds,
                fingerprint_match=r.fingerprint_match,
                phases=column(r, "phases", json_object),
                probes=tuple(column(r, "probes", json_list)),
                findings=column(r, "findings", _findings),
                envelope=r.envelope,
            )
            for r in self._s.scalars(stmt)
        ]

    def add_alert(self, *, at: datetime, kind: str, subject: str, payload: dict[str, Any]) -> int:
        """Record an alert; returns its id."""
        row = AlertRow(
            created_at=at, kind=kind, subject=subject, payload=json.dumps(payload), deliveries="[]"
        )
        self._s.add(row)
        self._s.flush()
        return row.id

    def record_delivery(self, alert_id: int, attempt: dict[str, Any]) -> None:
        """Append a delivery attempt to an alert."""
        row = self._s.get(AlertRow, alert_id)
        if row is None:
            raise NotFound(f"no alert {alert_id}")
        row.deliveries = json.dumps([*column(row, "deliveries", json_list), attempt])
        self._s.flush()

    def alerts(self) -> builtins.list[Alert]:
        """Every alert, newest first."""
        return [
            Alert(
                id=r.id,
                created_at=column(r, "created_at", aware),
                kind=r.kind,
                subject=r.subject,
                payload=column(r, "payload", json_object),
                deliveries=tuple(column(r, "deliveries", json_list)),
            )
            for r in self._s.scalars(select(AlertRow).order_by(AlertRow.id.desc()))
        ]
