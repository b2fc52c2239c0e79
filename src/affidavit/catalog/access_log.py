"""Raw storage of the access log: entries, their subtree hashes, and checkpoints.

It implements the :class:`~affidavit.ledger.log.LedgerStore` protocol, so the ledger's own
:class:`~affidavit.ledger.log.LedgerLog` appends to it and answers roots and proofs over it:
the rows have the ledger's layout (``docs/formats/ledger.md``, leaves, nodes and roots) in
tables of their own, ``access_log_entries`` and ``access_log_checkpoints``. Like
:class:`~affidavit.catalog.repository.LedgerRepository` every statement is fixed SQL on the
unit of work's DB-API connection (no ORM session on the per-request path), and it knows
nothing of hashing.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["AccessLogRepository", "AccessRow", "StoredAccessEntry"]

_AS_BLOB = re.compile(r"CAST\((\w+) AS BLOB\)")
_FETCH = 10_000


@dataclass(frozen=True, slots=True)
class StoredAccessEntry:
    """An entry as stored: its canonical bytes (None once expired) and its leaf hash."""

    seq: int
    entry: bytes | None
    leaf_hash: bytes


@dataclass(frozen=True, slots=True)
class AccessRow:
    """A whole row, for the verifier and for listing: the entry (None once expired), the
    hashes kept beside it, and the query copies."""

    seq: int
    entry: bytes | None
    leaf_hash: bytes | None
    nodes: bytes | None
    time: str
    identity: str | None
    action: str
    subject: str | None
    outcome: str
    expired_at: str | None


def _blob(value: Any) -> bytes | None:
    return None if value is None else bytes(value)


class AccessLogRepository:
    """The access log's tables inside one unit of work (never commits)."""

    def __init__(self, connection: Callable[[], Any], *, qmark: bool = True) -> None:
        """``connection`` gives the transaction's DB-API connection (called once, on first
        use; it may begin the transaction). ``qmark``: whether the driver takes ``?``
        placeholders (else ``%s``)."""
        self._connect = connection
        self._qmark = qmark
        self._dbapi: Any = None

    # -- plumbing ---------------------------------------------------------------------------

    def _cursor(self) -> Any:
        if self._dbapi is None:
            self._dbapi = self._connect()
        return self._dbapi.cursor()

    def _sql(self, sql: str) -> str:
        # as in LedgerRepository: SQLite keeps the storage class a value was written with, so
        # hashed columns are read as CAST(... AS BLOB) and seq as CAST(seq AS BIGINT)
        if self._qmark:
            return sql
        return _AS_BLOB.sub(r"\1", sql).replace("?", "%s")

    def _raw(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        cursor = self._cursor()
        try:
            cursor.execute(self._sql(sql), tuple(params))
            return list(cursor.fetchall()) if cursor.description else []
        finally:
            cursor.close()

    def _count(self, sql: str, params: Sequence[Any] = ()) -> int:
        cursor = self._cursor()
        try:
            cursor.execute(self._sql(sql), tuple(params))
            return int(cursor.rowcount)
        finally:
            cursor.close()

    def _stream(self, sql: str, params: Sequence[Any] = ()) -> Iterator[Any]:
        cursor = self._cursor()
        try:
            cursor.execute(self._sql(sql), tuple(params))
            while rows := cursor.fetchmany(_FETCH):
                yield from rows
        finally:
            cursor.close()

    # -- the LedgerStore protocol -----------------------------------------------------------

    def last_seq(self) -> int | None:
        """The highest sequence number, or None for an empty log."""
        ((value,),) = self._raw("SELECT max(seq) FROM access_log_entries")
        return None if value is None else int(value)

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
        outcome: str = "",
    ) -> None:
        """Insert one entry row (``actor`` is the entry's identity, ``action`` its
        ``METHOD route``; an empty ``subject`` is stored as NULL)."""
        self._raw(
            "INSERT INTO access_log_entries "
            "(seq, time, identity, action, subject, outcome, entry, leaf_hash, nodes) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (seq, time, actor, action, subject or None, outcome, entry, leaf_hash, nodes),
        )

    def get_nodes(self, keys: Sequence[tuple[int, int]]) -> dict[tuple[int, int], bytes]:
        """The stored hashes of the given (level, index) subtrees, in one query (the layout
        of :meth:`LedgerRepository.get_nodes`); a subtree whose hash is not stored is left
        out."""
        found: dict[tuple[int, int], bytes] = {}
        by_seq: dict[int, list[tuple[int, int]]] = {}
        for level, index in dict.fromkeys(keys):
            if level >= 0 and index >= 0:
                by_seq.setdefault(((index + 1) << level) - 1, []).append((level, index))
        if not by_seq:
            return found
        marks = ", ".join("?" * len(by_seq))
        rows = self._raw(
            "SELECT seq, CAST(leaf_hash AS BLOB), CAST(nodes AS BLOB) FROM access_log_entries "  # noqa: S608 - placeholders only
            f"WHERE seq IN ({marks})",
            list(by_seq),
        )
        for seq, leaf, nodes in rows:
            for level, index in by_seq.get(int(seq), ()):
                digest = (
                    bytes(leaf or b"")
                    if level == 0
                    else bytes(nodes or b"")[(level - 1) * 32 : level * 32]
                )
                if len(digest) == 32:
                    found[(level, index)] = digest
        return found

    def entries(self, start: int = 0, stop: int | None = None) -> Iterator[StoredAccessEntry]:
        """Entries with ``start <= seq < stop`` in sequence order, streamed."""
        sql = (
            "SELECT CAST(seq AS BIGINT), CAST(entry AS BLOB), CAST(leaf_hash AS BLOB) "
            "FROM access_log_entries WHERE seq >= ?"
        )
        params = [start]
        if stop is not None:
            sql += " AND seq < ?"
            params.append(stop)
        for seq, entry, leaf in self._stream(sql + " ORDER BY seq", params):
            yield StoredAccessEntry(seq=int(seq), entry=_blob(entry), leaf_hash=bytes(leaf))

    # -- reading ----------------------------------------------------------------------------

    def head(self) -> tuple[int | None, tuple[int, bytes] | None]:
        """The highest sequence number (None when empty) and the size and root of the newest
        checkpoint (None when there is none), in one statement."""
        ((last, size, root),) = self._raw(
            "SELECT (SELECT max(seq) FROM access_log_entries), "
            "(SELECT max(size) FROM access_log_checkpoints), "
            "(SELECT CAST(root AS BLOB) FROM access_log_checkpoints ORDER BY size DESC LIMIT 1)"
        )
        newest = None if size is None or root is None else (int(size), bytes(root))
        return (None if last is None else int(last)), newest

    def size(self) -> int:
        """Number of entries (expired ones included)."""
        ((value,),) = self._raw("SELECT count(*) FROM access_log_entries")
        return int(value or 0)

    def counts(self) -> tuple[int, int]:
        """Number of entries, and how many of them have expired (have no payload)."""
        ((size, expired),) = self._raw(
            "SELECT count(*), count(*) - count(entry) FROM access_log_entries"
        )
        return int(size or 0), int(expired or 0)

    def rows(self) -> Iterator[AccessRow]:
        """Every row in sequence order, streamed (for the verifier and the export)."""
        for row in self._stream(
            "SELECT CAST(seq AS BIGINT), CAST(entry AS BLOB), CAST(leaf_hash AS BLOB), "
            "CAST(nodes AS BLOB), time, identity, action, subject, outcome, expired_at "
            "FROM access_log_entries ORDER BY seq"
        ):
            seq, entry, leaf, nodes, time, identity, action, subject, outcome, expired = row
            yield AccessRow(
                seq=int(seq),
                entry=_blob(entry),
                leaf_hash=_blob(leaf),
                nodes=_blob(nodes),
                time=str(time),
                identity=identity,
                action=str(action),
                subject=subject,
                outcome=str(outcome),
                expired_at=expired,
            )

    def find(
        self,
        *,
        since: str | None = None,
        until: str | None = None,
        identity: str | None = None,
        limit: int | None = None,
    ) -> list[AccessRow]:
        """Rows filtered by time (``since <= time < until``, RFC 3339 UTC strings compare in
        order) and identity; with ``limit``, the newest that match. In sequence order."""
        where: list[str] = []
        params: list[Any] = []
        if since is not None:
            where.append("time >= ?")
            params.append(since)
        if until is not None:
            where.append("time < ?")
            params.append(until)
        if identity is not None:
            where.append("identity = ?")
            params.append(identity)
        sql = (
            "SELECT CAST(seq AS BIGINT), CAST(entry AS BLOB), CAST(leaf_hash AS BLOB), "
            "NULL, time, identity, action, subject, outcome, expired_at FROM access_log_entries"
        )
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY seq DESC"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        found = [
            AccessRow(
                seq=int(seq),
                entry=_blob(entry),
                leaf_hash=_blob(leaf),
                nodes=None,
                time=str(time),
                identity=ident,
                action=str(action),
                subject=subject,
                outcome=str(outcome),
                expired_at=expired,
            )
            for seq, entry, leaf, _, time, ident, action, subject, outcome, expired in self._raw(
                sql, params
            )
        ]
        found.reverse()
        return found

    def unexpired(self, start: int = 0) -> Iterator[StoredAccessEntry]:
        """Entries that still hold their payload, from ``start`` on, in sequence order."""
        for seq, entry, leaf in self._stream(
            "SELECT CAST(seq AS BIGINT), CAST(entry AS BLOB), CAST(leaf_hash AS BLOB) "
            "FROM access_log_entries WHERE seq >= ? AND entry IS NOT NULL ORDER BY seq",
            (start,),
        ):
            yield StoredAccessEntry(seq=int(seq), entry=_blob(entry), leaf_hash=bytes(leaf))

    # -- expiry -----------------------------------------------------------------------------

    def expire(self, first: int, last: int, *, when: str) -> int:
        """Drop the payload of the entries ``first..last`` that still hold one (and clear
        their identity and subject copies); their leaf and subtree hashes stay. Return how
        many rows changed."""
        return self._count(
            "UPDATE access_log_entries SET entry = NULL, identity = NULL, subject = NULL, "
            "expired_at = ? WHERE seq >= ? AND seq <= ? AND entry IS NOT NULL",
            (when, first, last),
        )

    # -- checkpoints ------------------------------------------------------------------------

    def add_checkpoint(self, *, size: int, root: bytes, note: str, created_at: str) -> None:
        """Store a signed checkpoint; one per tree size, a stored one is never replaced."""
        self._raw(
            "INSERT INTO access_log_checkpoints (size, root, note, created_at) "
            "VALUES (?, ?, ?, ?) ON CONFLICT (size) DO NOTHING",
            (size, root, note, created_at),
        )

    def checkpoints(self) -> list[tuple[int, str]]:
        """Every stored checkpoint as (size, signed note), smallest first."""
        rows = self._raw("SELECT size, note FROM access_log_checkpoints ORDER BY size")
        return [(int(size), str(note)) for size, note in rows]

    def latest_checkpoint(self) -> tuple[int, str] | None:
        """The newest (largest) stored checkpoint as (size, signed note), or None."""
        rows = self._raw("SELECT size, note FROM access_log_checkpoints ORDER BY size DESC LIMIT 1")
        return (int(rows[0][0]), str(rows[0][1])) if rows else None
