"""The mergeable fingerprint accumulator.

Records go in as ``(key, value)`` canonical bytes in any order and become 64-byte pairs
``key_hash || record_hash``. Pairs are buffered and, when the buffer is full, spilled to a
temporary *run*: the pairs sorted, cut into 256 segments by the top byte of the key hash, and
the key prefixes in the same order. Memory stays bounded whatever the record count.

At the end each segment is read back from every run, sorted (numpy), and folded: the pairs of a
bucket (the top ``bucket_bits`` bits of the key hash) are contiguous, the bucket's hash is
SHA-256 over them, and the fingerprint's root is the RFC 9162 Merkle root over all
``2**bucket_bits`` bucket hashes. Accumulators of disjoint partitions merge
(:meth:`Accumulator.merge`) into the accumulator of the whole, whatever the split.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

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

DEFAULT_BUFFER_RECORDS = 1 << 18  # pairs per sorted run (~16 MiB of pairs plus short keys)
SEGMENT_BITS = 8  # runs are cut into (up to) 256 segments by the top bits of the key hash


@dataclass(slots=True)
class _Run:
    """One sorted run. The arrays are in memory for the last run and memory-mapped files for
    spilled ones; either way they slice the same.

    ``pairs`` are sorted; ``order[i]`` is the input position of sorted pair ``i``; the keys of
    input record ``j`` are ``keys[key_offsets[j]:key_offsets[j + 1]]``; segment ``s`` holds
    sorted pairs ``bounds[s]:bounds[s + 1]``.
    """

    pairs: npt.NDArray[np.bytes_]
    order: npt.NDArray[np.int64]
    keys: npt.NDArray[np.uint8]
    key_offsets: npt.NDArray[np.int64]
    bounds: npt.NDArray[np.int64]


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
        self._buffer_records = max(1, buffer_records)
        self._spill_dir = spill_dir
        self._pairs = bytearray()
        self._keys: list[bytes] = []
        self._runs: list[_Run] = []
        self._tmpdirs: list[tempfile.TemporaryDirectory[str]] = []
        self.count = 0
        # a segment must be a union of whole buckets
        self._segment_bits = min(SEGMENT_BITS, bucket_bits)

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
                self.add_pairs(b"".join(self.hasher.pairs(batch)), [k for k, _ in batch])
                batch = []
        if batch:
            self.add_pairs(b"".join(self.hasher.pairs(batch)), [k for k, _ in batch])

    def add_pairs(self, pairs: bytes, keys: list[bytes]) -> None:
        """Add precomputed pairs (``key_hash || record_hash`` each, concatenated) with their
        keys: how worker processes hand in their results."""
        if len(pairs) != PAIR_SIZE * len(keys):
            raise ValueError("pairs and keys disagree in number")
        self._pairs += pairs
        self._keys.extend(keys)
        self.count += len(keys)
        if len(self._keys) >= self._buffer_records:
            self._spill()

    def merge(self, other: Accumulator) -> None:
        """Take over ``other``'s records (a disjoint partition of the same dataset)."""
        if (other.profile, other.bucket_bits) != (self.profile, self.bucket_bits):
            raise ValueError("cannot merge accumulators of different profiles or bucket bits")
        other._spill()
        self._runs.extend(other._runs)
        self._tmpdirs.extend(other._tmpdirs)
        self.count += other.count
        other._runs, other._tmpdirs, other.count = [], [], 0

    # -- spilling ---------------------------------------------------------------------------

    def _run_dir(self) -> Path:
        if not self._tmpdirs:
            self._tmpdirs.append(
                tempfile.TemporaryDirectory(prefix="affidavit-fp-", dir=self._spill_dir)
            )
        return Path(self._tmpdirs[0].name)

    def _sorted_run(self) -> _Run | None:
        if not self._keys:
            return None
        pairs = np.frombuffer(bytes(self._pairs), dtype="S64")
        order = np.argsort(pairs, kind="stable").astype(np.int64)
        sorted_pairs = pairs[order]
        lengths = np.fromiter(map(len, self._keys), dtype=np.int64, count=len(self._keys))
        run = _Run(
            pairs=sorted_pairs,
            order=order,
            keys=np.frombuffer(b"".join(self._keys), dtype=np.uint8),
            key_offsets=np.concatenate((np.zeros(1, dtype=np.int64), np.cumsum(lengths))),
            bounds=np.searchsorted(
                _top_bits(sorted_pairs, self._segment_bits),
                np.arange((1 << self._segment_bits) + 1),
                side="left",
            ).astype(np.int64),
        )
        self._pairs = bytearray()
        self._keys = []
        return run

    def _spill(self) -> None:
        """Sort the buffer and move it to memory-mapped files in the run folder."""
        run = self._sorted_run()
        if run is None:
            return
        base = self._run_dir() / f"run-{len(self._runs):05d}"
        mapped = {}
        for name in ("pairs", "order", "keys", "key_offsets"):
            path = base.with_suffix(f".{name}.npy")
            np.save(path, getattr(run, name), allow_pickle=False)
            mapped[name] = np.load(path, mmap_mode="r", allow_pickle=False)
        self._runs.append(_Run(bounds=run.bounds, **mapped))

    # -- output -----------------------------------------------------------------------------

    def finish(
        self, index_path: Path | None = None, *, dataset: str = "", encoding: str = ""
    ) -> tuple[Fingerprint, int]:
        """Compute the fingerprint (and write the index file when asked). Returns the
        fingerprint and the number of duplicate keys seen."""
        writer = IndexWriter(index_path) if index_path is not None else None
        try:
            last = self._sorted_run()  # the last run stays in memory
            if last is not None:
                self._runs.append(last)
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
        empty_leaf = merkle.leaf_hash(bucket_hash(b""))
        leaves = [empty_leaf] * (1 << bits)
        duplicates = 0
        count = 0
        for segment in range(1 << self._segment_bits):
            parts = [
                (run, int(run.bounds[segment]), int(run.bounds[segment + 1]))
                for run in self._runs
                if run.bounds[segment + 1] > run.bounds[segment]
            ]
            if not parts:
                continue
            pairs = np.concatenate([run.pairs[lo:hi] for run, lo, hi in parts])
            order = np.argsort(pairs, kind="stable")
            pairs = pairs[order]
            count += len(pairs)
            key_hashes = np.frombuffer(pairs.tobytes(), dtype="S32")[::2]
            duplicates += int(np.count_nonzero(key_hashes[1:] == key_hashes[:-1]))
            buckets = _top_bits(pairs, bits)
            first, last = int(buckets[0]), int(buckets[-1])
            bounds = np.searchsorted(buckets, np.arange(first, last + 2), side="left")
            raw = pairs.tobytes()
            for offset, bucket in enumerate(range(first, last + 1)):
                lo, hi = int(bounds[offset]), int(bounds[offset + 1])
                if hi > lo:
                    leaves[bucket] = merkle.leaf_hash(
                        bucket_hash(raw[lo * PAIR_SIZE : hi * PAIR_SIZE])
                    )
            if writer is not None:
                keys = _segment_keys(parts)
                for i, position in enumerate(order.tolist()):
                    writer.add(
                        raw[i * PAIR_SIZE : (i + 1) * PAIR_SIZE], encode_key_field(keys[position])
                    )
        if count != self.count:
            raise RuntimeError(f"fingerprint lost records: {count} of {self.count}")
        root = merkle.root(leaves)
        fingerprint = Fingerprint(profile=self.profile, bucket_bits=bits, count=count, root=root)
        return fingerprint, duplicates

    def close(self) -> None:
        """Remove temporary run files."""
        for tmp in self._tmpdirs:
            tmp.cleanup()
        self._tmpdirs = []
        self._runs = []


def _top_bits(pairs: npt.NDArray[np.bytes_], bits: int) -> npt.NDArray[np.uint32]:
    """The bucket of each pair: the top ``bits`` bits of its key hash."""
    if bits == 0:
        return np.zeros(len(pairs), dtype=np.uint32)
    words = np.frombuffer(pairs.tobytes(), dtype=">u4")[:: PAIR_SIZE // 4]
    return (words >> np.uint32(32 - bits)).astype(np.uint32)


def _segment_keys(parts: list[tuple[_Run, int, int]]) -> list[bytes]:
    """The keys of a segment's pairs, in the order the pairs were concatenated."""
    keys: list[bytes] = []
    for run, lo, hi in parts:
        blob = run.keys
        offsets = run.key_offsets
        for position in run.order[lo:hi].tolist():
            keys.append(bytes(blob[offsets[position] : offsets[position + 1]]))
    return keys


def hash_records(
    profile: Profile, records: Iterable[tuple[bytes, bytes]]
) -> tuple[bytes, list[bytes]]:
    """Hash canonical records into concatenated pairs plus their keys (for worker processes,
    whose results go to :meth:`Accumulator.add_pairs`)."""
    batch = list(records)
    pairs = RecordHasher(record_tag(profile)).pairs(batch)
    return b"".join(pairs), [key for key, _ in batch]
