"""The mergeable fingerprint accumulator.

Records go in as ``(key, value)`` canonical bytes in any order; pairs are buffered, sorted
and spilled to temporary run files, so memory stays bounded whatever the record count. At the
end the runs are merged in ``(key_hash, record_hash)`` order, which walks the buckets in order:
each bucket's hash is SHA-256 over its sorted pairs, and the fingerprint's root is the RFC 9162
Merkle root over all ``2**bucket_bits`` bucket hashes. Accumulators of disjoint partitions merge
(:meth:`Accumulator.merge`) into the accumulator of the whole, whatever the split.
"""

from __future__ import annotations

import heapq
import struct
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

import numpy as np

from affidavit.crypto.record_digest import RecordHasher, bucket_hash
from affidavit.fingerprint.index import IndexHeader, IndexWriter, encode_key_field
from affidavit.fingerprint.model import (
    DEFAULT_BUCKET_BITS,
    PAIR_SIZE,
    Fingerprint,
    record_tag,
)
from affidavit.ledger import merkle
from affidavit.models.records import Profile

DEFAULT_BUFFER_RECORDS = 1 << 18  # ~262k pairs (about 20 MB with short keys) per sorted run
_READ_CHUNK = 1 << 20


class Accumulator:
    """Collects records of one dataset and produces its :class:`Fingerprint` and index."""

    def __init__(
        self,
        profile: Profile,
        *,
        bucket_bits: int = DEFAULT_BUCKET_BITS,
        buffer_records: int = DEFAULT_BUFFER_RECORDS,
        spill_dir: Path | None = None,
    ) -> None:
        self.profile = profile
        self.bucket_bits = bucket_bits
        self.hasher = RecordHasher(record_tag(profile))
        self._buffer_records = buffer_records
        self._spill_dir = spill_dir
        self._pairs = bytearray()
        self._keys: list[bytes] = []
        self._runs: list[Path] = []
        self._tmpdir: tempfile.TemporaryDirectory[str] | None = None
        self.count = 0

    # -- input ------------------------------------------------------------------------------

    def add(self, key: bytes, value: bytes) -> None:
        """Add one record."""
        self.add_pairs(self.hasher.pair(key, value), [key])

    def add_records(self, records: Iterable[tuple[bytes, bytes]]) -> None:
        """Add many records (faster than :meth:`add` in a loop)."""
        batch: list[tuple[bytes, bytes]] = []
        for record in records:
            batch.append(record)
            if len(batch) >= 4096:
                self._add_batch(batch)
                batch = []
        if batch:
            self._add_batch(batch)

    def _add_batch(self, batch: list[tuple[bytes, bytes]]) -> None:
        pairs = self.hasher.pairs(batch)
        self.add_pairs(b"".join(pairs), [k for k, _ in batch])

    def add_pairs(self, pairs: bytes, keys: list[bytes]) -> None:
        """Add precomputed pairs (``key_hash || record_hash`` each, concatenated) with their
        keys: how worker processes hand in their results."""
        if len(pairs) != PAIR_SIZE * len(keys):
            raise ValueError("pairs and keys disagree in number")
        self._pairs += pairs
        self._keys.extend(encode_key_field(k) for k in keys)
        self.count += len(keys)
        if len(self._keys) >= self._buffer_records:
            self._spill()

    def merge(self, other: Accumulator) -> None:
        """Take over ``other``'s records (a disjoint partition of the same dataset)."""
        if (other.profile, other.bucket_bits) != (self.profile, self.bucket_bits):
            raise ValueError("cannot merge accumulators of different profiles or bucket bits")
        other._spill()
        self._runs.extend(other._runs)
        other._runs = []
        self.count += other.count
        if other._tmpdir is not None:  # keep the other's folder alive with ours
            self._keep = [*getattr(self, "_keep", []), other._tmpdir]

    # -- sorting and spilling ---------------------------------------------------------------

    def _run_dir(self) -> Path:
        if self._tmpdir is None:
            self._tmpdir = tempfile.TemporaryDirectory(prefix="affidavit-fp-", dir=self._spill_dir)
        return Path(self._tmpdir.name)

    def _spill(self) -> None:
        if not self._keys:
            return
        arr = np.frombuffer(bytes(self._pairs), dtype="S64")
        order = np.argsort(arr, kind="stable")
        path = self._run_dir() / f"run-{len(self._runs):05d}"
        pairs, keys = bytes(self._pairs), self._keys
        with path.open("wb") as fh:
            out = bytearray()
            for i in order.tolist():
                out += pairs[i * PAIR_SIZE : (i + 1) * PAIR_SIZE]
                out += keys[i]
                if len(out) > _READ_CHUNK:
                    fh.write(out)
                    out.clear()
            fh.write(out)
        self._runs.append(path)
        self._pairs = bytearray()
        self._keys = []

    # -- output -----------------------------------------------------------------------------

    def entries(self) -> Iterator[tuple[bytes, bytes]]:
        """Every ``(pair, key_field)`` in sorted order (consumes the accumulator)."""
        self._spill()
        readers = [_read_run(p) for p in self._runs]
        yield from heapq.merge(*readers)

    def finish(
        self, index_path: Path | None = None, *, dataset: str = "", encoding: str = ""
    ) -> tuple[Fingerprint, int]:
        """Compute the fingerprint (and write the index file when asked). Returns the
        fingerprint and the number of duplicate keys seen."""
        writer = IndexWriter(index_path) if index_path is not None else None
        try:
            fingerprint, duplicates = self._fold(writer)
            if writer is not None:
                writer.seal(
                    IndexHeader(
                        fingerprint=fingerprint,
                        duplicates=duplicates,
                        dataset=dataset,
                        encoding=encoding,
                    )
                )
        except BaseException:
            if writer is not None:
                writer.abort()
            raise
        finally:
            self.close()
        return fingerprint, duplicates

    def _fold(self, writer: IndexWriter | None) -> tuple[Fingerprint, int]:
        bits = self.bucket_bits
        shift = 32 - bits
        empty = bucket_hash(b"")
        leaves: list[bytes] = []
        current = -1
        members = bytearray()
        duplicates = 0
        previous_key_hash = b""
        count = 0
        for pair, key_field in self.entries():
            count += 1
            if writer is not None:
                writer.add(pair, key_field)
            key_hash = pair[:32]
            if key_hash == previous_key_hash:
                duplicates += 1
            previous_key_hash = key_hash
            bucket = int.from_bytes(key_hash[:4], "big") >> shift if bits else 0
            if bucket != current:
                if current >= 0:
                    leaves.append(merkle.leaf_hash(bucket_hash(bytes(members))))
                leaves.extend([merkle.leaf_hash(empty)] * (bucket - len(leaves)))
                current = bucket
                members = bytearray()
            members += pair
        if current >= 0:
            leaves.append(merkle.leaf_hash(bucket_hash(bytes(members))))
        leaves.extend([merkle.leaf_hash(empty)] * ((1 << bits) - len(leaves)))
        if count != self.count:
            raise RuntimeError(f"fingerprint lost records: {count} of {self.count}")
        root = merkle.root(leaves)
        return Fingerprint(
            profile=self.profile, bucket_bits=bits, count=count, root=root
        ), duplicates

    def close(self) -> None:
        """Remove temporary run files."""
        for tmp in [self._tmpdir, *getattr(self, "_keep", [])]:
            if tmp is not None:
                tmp.cleanup()
        self._tmpdir = None
        self._keep = []
        self._runs = []


def _read_run(path: Path) -> Iterator[tuple[bytes, bytes]]:
    with path.open("rb") as raw:
        fh: BinaryIO = raw
        buf = b""
        pos = 0
        while True:
            if len(buf) - pos < PAIR_SIZE + 2 + 1024 + 2:
                more = fh.read(_READ_CHUNK)
                buf = buf[pos:] + more
                pos = 0
                if not buf:
                    return
            (klen,) = struct.unpack_from(">H", buf, pos + PAIR_SIZE)
            n = klen & 0x7FFF
            end = pos + PAIR_SIZE + 2 + n
            yield buf[pos : pos + PAIR_SIZE], buf[pos + PAIR_SIZE : end]
            pos = end


def hash_records(
    profile: Profile, records: Iterable[tuple[bytes, bytes]]
) -> tuple[bytes, list[bytes]]:
    """Hash canonical records into concatenated pairs plus their keys (for worker processes,
    whose results go to :meth:`Accumulator.add_pairs`)."""
    batch = list(records)
    pairs = RecordHasher(record_tag(profile)).pairs(batch)
    return b"".join(pairs), [key for key, _ in batch]
