"""The set of digests a contract's ``unique`` rule remembers, in memory independent of the
dataset's size (docs/exports.md, "The unique rule's memory").

Up to :data:`MEMORY_DIGESTS` digests are held in a Python set. Past that, the set is spilled:
its digests, sorted, go into an SQLite table (``WITHOUT ROWID``, the digest its primary key)
in a private temporary folder (:mod:`affidavit.private_temp`: mode 0700, named after this
process, removed by :meth:`DigestSet.close`, by the garbage collector, or by a later sweep
when the process died), and into a Bloom filter of fixed size (:data:`BLOOM_BYTES`, 4 bit
positions of 26 bits each taken from the digest itself). A digest is looked up in the set,
then, only when the Bloom filter says it may be there, in the table: a value met once costs
no disk read (false positives: about 1 in 90,000 lookups at 1,000,000 spilled digests, 1 in
25 at 10,000,000). Memory: the set, the filter and SQLite's page cache (:data:`CACHE_KIB`) at
most; the table holds 32 bytes per digest on disk (plus the B-tree's overhead).

The digests are SHA-256 (:func:`affidavit.crypto.digest.sha256` of an injective encoding of
the value), so the answer is exact up to SHA-256 collisions.
"""

from __future__ import annotations

import sqlite3
from typing import Final

from affidavit.private_temp import PrivateFolder

MEMORY_DIGESTS: Final = 65_536
"""Digests held in memory before the set spills to disk."""
BLOOM_BYTES: Final = 8 * 1024 * 1024
"""The Bloom filter's size (2**26 bits: 26 bits of the digest choose each of its 4 bits)."""
CACHE_KIB: Final = 4096
"""SQLite's page cache for the spilled digests."""
_SHIFT: Final = 26
_MASK: Final = (1 << _SHIFT) - 1
assert BLOOM_BYTES * 8 == 1 << _SHIFT


class DigestSet:
    """A set of 32-byte digests (see the module docstring): ``in``, :meth:`add`,
    :meth:`close`. Not thread-safe."""

    def __init__(self, *, memory_digests: int | None = None) -> None:
        self._limit = max(memory_digests if memory_digests is not None else MEMORY_DIGESTS, 1)
        self._memory: set[bytes] = set()
        self._bloom: bytearray | None = None
        self._db: sqlite3.Connection | None = None
        self._folder: PrivateFolder | None = None
        self.spilled = 0  # digests on disk

    def __contains__(self, digest: object) -> bool:
        if digest in self._memory:
            return True
        bloom = self._bloom
        if bloom is None or not isinstance(digest, bytes):
            return False
        x = int.from_bytes(digest, "little")
        for _ in range(4):
            bit = x & _MASK
            if not bloom[bit >> 3] & (1 << (bit & 7)):
                return False
            x >>= _SHIFT
        assert self._db is not None
        row = self._db.execute("SELECT 1 FROM d WHERE h = ?", (digest,)).fetchone()
        return row is not None

    def add(self, digest: bytes) -> None:
        """Remember ``digest`` (32 bytes; adding one already there changes nothing)."""
        if len(digest) != 32:
            raise ValueError("a digest is 32 bytes")
        self._memory.add(digest)
        if len(self._memory) >= self._limit:
            self._spill()

    def _spill(self) -> None:
        if self._db is None:
            self._folder = PrivateFolder("export-unique")
            self._db = sqlite3.connect(self._folder.path / "digests.sqlite", isolation_level=None)
            for pragma in (
                "journal_mode = OFF",
                "synchronous = OFF",
                "temp_store = FILE",
                f"cache_size = -{CACHE_KIB}",
            ):
                self._db.execute(f"PRAGMA {pragma}")
            self._db.execute("CREATE TABLE d (h BLOB PRIMARY KEY) WITHOUT ROWID")
            self._bloom = bytearray(BLOOM_BYTES)
        bloom = self._bloom
        assert bloom is not None
        batch = sorted(self._memory)
        for digest in batch:
            x = int.from_bytes(digest, "little")
            for _ in range(4):
                bit = x & _MASK
                bloom[bit >> 3] |= 1 << (bit & 7)
                x >>= _SHIFT
        self._db.execute("BEGIN")
        cursor = self._db.executemany(
            "INSERT OR IGNORE INTO d (h) VALUES (?)", ((d,) for d in batch)
        )
        self._db.execute("COMMIT")
        self.spilled += max(cursor.rowcount, 0)  # a digest already on disk is not counted
        self._memory.clear()

    def close(self) -> None:
        """Forget everything and remove the spilled digests (safe to call twice)."""
        self._memory.clear()
        self._bloom = None
        if self._db is not None:
            self._db.close()
            self._db = None
        if self._folder is not None:
            self._folder.cleanup()
            self._folder = None
