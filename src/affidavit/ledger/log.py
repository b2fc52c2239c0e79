"""The append-only ledger log on top of a catalog store.

Each append writes the entry, its leaf hash and the hashes of every complete Merkle subtree
that the new leaf closes (in the same row: one write), inside the caller's unit of work: the
catalog change and its event commit together or not at all. Roots and proofs then read
O(log n) stored subtree hashes, never all leaves.

The log keeps the tree's *frontier* (the complete subtrees, largest first, whose fold is the
root: one per set bit of the size) in memory once it has read it in one batched query, so an
append reads nothing more and the root of the current tree costs no reads at all. Proofs
fetch the subtree hashes they need in one batched query too.

A log can also start from a :class:`LogState` (size and frontier) that its caller took after
an earlier committed transaction and has checked still describes the store: a process that
appends again and again then reads no subtree hashes at all.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
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
        nodes: bytes = b"",
    ) -> None: ...

    def get_nodes(self, keys: Sequence[tuple[int, int]]) -> dict[tuple[int, int], bytes]: ...

    def entries(self, start: int = 0, stop: int | None = None) -> Iterator[Any]: ...


def _now() -> datetime:
    return datetime.now(UTC)


# RFC 8785 prints integers beyond this as an error (they are not exact in an IEEE double)
_MAX_SAFE_INT = 2**53 - 1
_encode_sorted = json.JSONEncoder(
    ensure_ascii=False, check_circular=False, sort_keys=True, separators=(",", ":")
).encode


def _same_in_both(value: Any) -> bool:
    """Whether the C ``json`` encoder (sorted keys, no spaces, UTF-8 as is) prints ``value``
    exactly as RFC 8785 does: strings escape the same characters the same way (``"``, ``\\``
    and U+0000..U+001F, with ``\\b \\t \\n \\f \\r`` and lowercase ``\\u00xx``), integers in the
    safe range print in decimal, and ASCII keys sort the same by code point as by UTF-16
    code unit. Floats, other integers, non-ASCII keys and any other type are left to the
    reference encoder."""
    kind = type(value)
    if kind is str or kind is bool or value is None:
        return True
    if kind is int:
        return bool(-_MAX_SAFE_INT <= value <= _MAX_SAFE_INT)
    if kind is dict:
        for key, item in value.items():  # loops, not all(): this runs on every append
            if type(key) is not str or not key.isascii() or not _same_in_both(item):
                return False
        return True
    if kind is list or kind is tuple:
        return all(_same_in_both(item) for item in value)
    return False


def utc_text(moment: datetime) -> str:
    """The same text as :func:`rfc3339_utc` (``2026-11-28T07:13:09.123456Z``), a few
    microseconds sooner for the usual UTC clock reading (``isoformat`` instead of
    ``strftime``; both print four-digit years alike from the year 1000)."""
    if moment.tzinfo is UTC and moment.year >= 1000:
        return moment.isoformat(timespec="microseconds")[:-6] + "Z"
    return rfc3339_utc(moment)


def canonical_entry(event: Event) -> bytes:
    """The RFC 8785 canonical JSON of ``event``: byte for byte :meth:`Event.canonical`.

    The reference encoder is pure Python (about a tenth of an append's CPU time); events
    whose values are all of the kinds where the standard library's C encoder prints the
    same bytes go through that one instead, and every other event (floats, huge integers,
    non-ASCII keys, lone surrogates, unknown types) through :meth:`Event.canonical`, which
    also raises its errors.
    """
    value = event.to_json()
    if _same_in_both(value):
        try:
            return _encode_sorted(value).encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate: not UTF-8, the reference refuses it
            pass
    return event.canonical()


@dataclass(frozen=True, slots=True)
class LogState:
    """A log's size and frontier: the ``(level, index, hash)`` of the complete subtrees that
    cover ``[0, size)``, largest first (their fold is the root)."""

    size: int
    frontier: tuple[tuple[int, int, bytes], ...]

    @property
    def root(self) -> bytes:
        """The Merkle root of the tree of ``size`` entries."""
        return merkle.root_from_subtrees([h for _, _, h in self.frontier])


class LedgerLog:
    """Appends events and answers root and proof queries over one store."""

    def __init__(
        self,
        store: LedgerStore,
        *,
        clock: Callable[[], datetime] = _now,
        size: int | None = None,
        state: LogState | None = None,
    ) -> None:
        """``size``: the store's number of entries when the caller has just read it (saves
        the query). ``state``: the log as the caller knows the store holds it right now
        (e.g. as this process committed it, checked against the newest checkpoint's size and
        root); trusted as given, so that appends and roots read no stored hashes."""
        self._store = store
        self._clock = clock
        self._size: int | None = size
        # (level, index, hash) of the complete subtrees covering [0, size), largest first
        self._frontier: list[tuple[int, int, bytes]] | None = None
        if state is not None:
            if size is not None and size != state.size:
                raise ValueError(f"a log of size {size} cannot resume a state of {state.size}")
            self._size = state.size
            self._frontier = list(state.frontier)

    def state(self) -> LogState:
        """The current size and frontier (read once when not known yet)."""
        return LogState(size=self.size(), frontier=tuple(self._load_frontier()))

    def size(self) -> int:
        """Number of entries."""
        if self._size is None:
            last = self._store.last_seq()
            self._size = 0 if last is None else last + 1
        return self._size

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
            time=utc_text(self._clock()),
            actor=actor,
            action=action,
            subject=subject,
            details=dict(details or {}),
            client=client or ClientInfo(),
        )
        self.append_entry(
            canonical_entry(event), time=event.time, actor=actor, action=action, subject=subject
        )
        return event

    def append_entry(
        self, entry: bytes, *, time: str, actor: str, action: str, subject: str, **extra: str
    ) -> int:
        """Append canonical entry bytes the caller built for sequence number :meth:`size`
        (the entries of another log kept the same way: the access log) and return that
        sequence number. ``time``, ``actor``, ``action``, ``subject`` and any ``extra``
        columns are handed to the store as the row's query copies."""
        seq = self.size()
        frontier = self._load_frontier()
        leaf = merkle.leaf_hash(entry)
        grown = [*frontier, (0, seq, leaf)]
        closed = bytearray()  # levels 1, 2, ...: stored with the entry
        # the new leaf closes a complete subtree at each level where the frontier's last two
        # subtrees now have the same size
        while len(grown) >= 2 and grown[-1][0] == grown[-2][0]:
            right = grown.pop()
            left = grown.pop()
            node = (left[0] + 1, left[1] // 2, merkle.node_hash(left[2], right[2]))
            grown.append(node)
            closed += node[2]
        self._store.append(
            seq=seq,
            time=time,
            actor=actor,
            action=action,
            subject=subject,
            entry=entry,
            leaf_hash=leaf,
            nodes=bytes(closed),
            **extra,
        )
        frontier[:] = grown  # only once the store took the row
        self._size = seq + 1
        return seq

    def root(self, size: int | None = None) -> bytes:
        """The Merkle root of the first ``size`` entries (default: all)."""
        current = self.size()
        size = current if size is None else size
        self._check_size(size)
        if size == current:
            return (
                merkle.root_from_subtrees([h for _, _, h in self._load_frontier()])
                if size
                else merkle.root([])
            )
        return self.range_hashes([(0, size)])[0]

    def inclusion_proof(self, index: int, size: int | None = None) -> list[bytes]:
        """RFC 9162 inclusion proof of entry ``index`` in the tree of ``size`` entries."""
        size = self.size() if size is None else size
        self._check_size(size)
        if not 0 <= index < size:
            raise IntegrityError(f"entry {index} is not in a ledger of {size} entries")
        return self.range_hashes(merkle.inclusion_proof_ranges(index, size))

    def consistency_proof(self, old_size: int, new_size: int | None = None) -> list[bytes]:
        """RFC 9162 consistency proof between the trees of ``old_size`` and ``new_size``."""
        new_size = self.size() if new_size is None else new_size
        self._check_size(new_size)
        if not 0 < old_size <= new_size:
            raise IntegrityError(f"no consistency proof from size {old_size} to size {new_size}")
        return self.range_hashes(merkle.consistency_proof_ranges(old_size, new_size))

    def leaf(self, index: int) -> bytes:
        """The stored leaf hash of entry ``index``."""
        return self.range_hashes([(index, index + 1)])[0]

    def range_hashes(self, ranges: Sequence[tuple[int, int]]) -> list[bytes]:
        """MTH of each ``[start, end)`` range (as RFC 9162 splits produce them), reading every
        stored subtree hash they need in one batched query."""
        plans = [
            [((hi - lo).bit_length() - 1, lo >> ((hi - lo).bit_length() - 1))
             for lo, hi in merkle.range_subtrees(start, end)]
            for start, end in ranges
        ]  # fmt: skip
        wanted = sorted({key for plan in plans for key in plan})
        found = self._store.get_nodes(wanted)
        missing = [key for key in wanted if key not in found]
        if missing:
            level, index = missing[0]
            raise IntegrityError(
                f"the ledger store lacks subtree hash (level {level}, index {index})",
                hint="the catalog was altered; run `affidavit ledger verify`",
            )
        return [
            merkle.root_from_subtrees([found[key] for key in plan]) if plan else merkle.root([])
            for plan in plans
        ]

    def _load_frontier(self) -> list[tuple[int, int, bytes]]:
        if self._frontier is None:
            keys = [
                ((hi - lo).bit_length() - 1, lo >> ((hi - lo).bit_length() - 1))
                for lo, hi in merkle.subtree_ranges(self.size())
            ]
            found = self._store.get_nodes(keys)
            if len(found) != len(keys):
                level, index = next(k for k in keys if k not in found)
                raise IntegrityError(
                    f"the ledger store lacks subtree hash (level {level}, index {index})",
                    hint="the catalog was altered; run `affidavit ledger verify`",
                )
            self._frontier = [(lv, ix, found[(lv, ix)]) for lv, ix in keys]
        return self._frontier

    def _check_size(self, size: int) -> None:
        have = self.size()
        if not 0 <= size <= have:
            raise IntegrityError(f"the ledger has {have} entries, not {size}")
