"""The append-only ledger log on top of a catalog store.

Each append writes the entry, its leaf hash and every complete Merkle subtree that the new
leaf closes, inside the caller's unit of work: the catalog change and its event commit together
or not at all. Roots and proofs then read O(log n) stored subtree hashes, never all leaves.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime
from typing import Any, Protocol

from affidavit.errors import IntegrityError
from affidavit.ledger import merkle
from affidavit.models.ledger import ClientInfo, Event, rfc3339_utc


class StoredEntryLike(Protocol):
    """What a store hands back for an entry."""

    seq: int
    entry: bytes
    leaf_hash: bytes


class LedgerStore(Protocol):
    """Storage the log needs; :class:`affidavit.catalog.repository.LedgerRepository` is one."""

    def last_seq(self) -> int | None: ...

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
    ) -> None: ...

    def put_node(self, level: int, index: int, digest: bytes) -> None: ...

    def get_node(self, level: int, index: int) -> bytes | None: ...

    def entries(self, start: int = 0, stop: int | None = None) -> Iterator[Any]: ...


def _now() -> datetime:
    return datetime.now(UTC)


class LedgerLog:
    """Appends events and answers root and proof queries over one store."""

    def __init__(self, store: LedgerStore, *, clock: Callable[[], datetime] = _now) -> None:
        self._store = store
        self._clock = clock
        # subtree hashes written in this unit of work, so that batch appends do not re-read
        self._pending: dict[tuple[int, int], bytes] = {}

    def size(self) -> int:
        """Number of entries."""
        last = self._store.last_seq()
        return 0 if last is None else last + 1

    def append(
        self,
        *,
        actor: str,
        action: str,
        subject: str,
        details: Mapping[str, Any] | None = None,
        client: ClientInfo | None = None,
    ) -> Event:
        """Append one event and return it (with its sequence number and time)."""
        seq = self.size()
        event = Event(
            seq=seq,
            time=rfc3339_utc(self._clock()),
            actor=actor,
            action=action,
            subject=subject,
            details=dict(details or {}),
            client=client or ClientInfo(),
        )
        entry = event.canonical()
        leaf = merkle.leaf_hash(entry)
        self._store.append(
            seq=seq,
            time=event.time,
            actor=actor,
            action=action,
            subject=subject,
            entry=entry,
            leaf_hash=leaf,
        )
        self._put(0, seq, leaf)
        level, index, digest = 0, seq, leaf
        while index % 2 == 1:  # this leaf closes a complete subtree at the next level up
            digest = merkle.node_hash(self._node(level, index - 1), digest)
            level, index = level + 1, index // 2
            self._put(level, index, digest)
        return event

    def root(self, size: int | None = None) -> bytes:
        """The Merkle root of the first ``size`` entries (default: all)."""
        size = self.size() if size is None else size
        self._check_size(size)
        return self.range_hash(0, size)

    def inclusion_proof(self, index: int, size: int | None = None) -> list[bytes]:
        """RFC 9162 inclusion proof of entry ``index`` in the tree of ``size`` entries."""
        size = self.size() if size is None else size
        self._check_size(size)
        if not 0 <= index < size:
            raise IntegrityError(f"entry {index} is not in a ledger of {size} entries")
        return [self.range_hash(s, e) for s, e in merkle.inclusion_proof_ranges(index, size)]

    def consistency_proof(self, old_size: int, new_size: int | None = None) -> list[bytes]:
        """RFC 9162 consistency proof between the trees of ``old_size`` and ``new_size``."""
        new_size = self.size() if new_size is None else new_size
        self._check_size(new_size)
        if not 0 < old_size <= new_size:
            raise IntegrityError(f"no consistency proof from size {old_size} to size {new_size}")
        return [
            self.range_hash(s, e) for s, e in merkle.consistency_proof_ranges(old_size, new_size)
        ]

    def leaf(self, index: int) -> bytes:
        """The stored leaf hash of entry ``index``."""
        return self._node(0, index)

    def range_hash(self, start: int, end: int) -> bytes:
        """MTH of entries ``start..end-1`` from stored complete subtrees (``start`` must be
        aligned as RFC 9162 splits produce)."""
        if start == end:
            return merkle.root([])
        blocks = []
        for lo, hi in merkle.range_subtrees(start, end):
            level = (hi - lo).bit_length() - 1
            blocks.append(self._node(level, lo >> level))
        return merkle.root_from_subtrees(blocks)

    def _check_size(self, size: int) -> None:
        have = self.size()
        if not 0 <= size <= have:
            raise IntegrityError(f"the ledger has {have} entries, not {size}")

    def _put(self, level: int, index: int, digest: bytes) -> None:
        self._pending[(level, index)] = digest
        self._store.put_node(level, index, digest)

    def _node(self, level: int, index: int) -> bytes:
        digest = self._pending.get((level, index))
        if digest is None:
            digest = self._store.get_node(level, index)
        if digest is None:
            raise IntegrityError(
                f"the ledger store lacks subtree hash (level {level}, index {index})",
                hint="the catalog was altered; run `affidavit ledger verify`",
            )
        return digest
