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

An accumulator made with ``keep_keys=False`` keeps no keys: it computes the fingerprint only
(no index file), which is all a verification needs while it matches the signed value.
"""

from __future__ import annotations

import io
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import numpy as np
import numpy.typing as npt

from affidavit.crypto.record_digest import RecordHasher, bucket_hash
from affidavit.fingerprint.index import IndexHeader, IndexWriter
from affidavit.fingerprint.model import (
    DEFAULT_BUCKET_BITS,
    PAIR_SIZE,
    Fingerprint,
    record_tag,
)
from affidavit.ledger import merkle
from affidavit.models.records import Profile
from affidavit.native import load_native
from affidavit.private_temp import PrivateFolder, open_private

DEFAULT_BUFFER_RECORDS = 1 << 16  # pairs per sorted run (4 MiB of pairs plus their keys)
SORTED_IN_MEMORY = 64 << 20  # bytes of pairs :meth:`Accumulator.add_sorted` keeps unspilled
SEGMENT_BITS = 8  # runs are cut into (up to) 256 segments by the top bits of the key hash
FOLD_CHUNK = 1 << 15  # pairs the fold without keys merges at a time (8 MiB)

_NATIVE: ModuleType | None = load_native("affidavit.fingerprint._native")
"""The compiled key packing (``_native.take_keys``), or None: the Python path packs the same."""


@dataclass(slots=True)
class _Run:
    """One sorted run: pairs in sorted order and their keys, packed, in the same order.

    The last run stays in memory; spilled runs live in one file each (the sorted pairs, then
    the keys' lengths as native int32, then the keys back to back) and only the segment being
    folded is read back, so memory does not grow with the record count. Segment ``s`` holds
    sorted pairs ``bounds[s]:bounds[s + 1]`` and key bytes ``key_bounds[s]:key_bounds[s + 1]``.
    """

    bounds: npt.NDArray[np.int64]
    key_bounds: npt.NDArray[np.int64]
    has_keys: bool
    pairs: npt.NDArray[np.bytes_] | None = None  # in memory
    keys: bytes | None = None
    key_lengths: npt.NDArray[np.int32] | None = None
    path: Path | None = None  # spilled

    def segment(
        self, s: int, *, with_keys: bool
    ) -> tuple[npt.NDArray[np.bytes_], bytes | memoryview, npt.NDArray[np.int32]]:
        """The sorted pairs of segment ``s`` and (when asked) their keys: the key bytes back to
        back and each key's length."""
        lo, hi = int(self.bounds[s]), int(self.bounds[s + 1])
        klo, khi = int(self.key_bounds[s]), int(self.key_bounds[s + 1])
        if with_keys and not self.has_keys:
            raise ValueError("this run keeps no keys")
        if self.path is None:
            assert self.pairs is not None
            assert self.keys is not None
            assert self.key_lengths is not None
            if not with_keys:
                return self.pairs[lo:hi], b"", _NO_LENGTHS
            return self.pairs[lo:hi], memoryview(self.keys)[klo:khi], self.key_lengths[lo:hi]
        total = int(self.bounds[-1])
        with self.path.open("rb", buffering=0) as fh:
            pairs = np.frombuffer(_read_at(fh, lo * PAIR_SIZE, (hi - lo) * PAIR_SIZE), dtype="S64")
            if not with_keys:
                return pairs, b"", _NO_LENGTHS
            lengths = np.frombuffer(
                _read_at(fh, total * PAIR_SIZE + lo * 4, (hi - lo) * 4), dtype=np.int32
            )
            keys = _read_at(fh, total * (PAIR_SIZE + 4) + klo, khi - klo)
        return pairs, keys, lengths

    def pairs_between(self, first: int, last: int) -> npt.NDArray[np.bytes_]:
        """The sorted pairs of segments ``first`` to ``last - 1`` (one slice or one read)."""
        lo, hi = int(self.bounds[first]), int(self.bounds[last])
        if self.path is None:
            assert self.pairs is not None
            return self.pairs[lo:hi]
        with self.path.open("rb", buffering=0) as fh:
            return np.frombuffer(_read_at(fh, lo * PAIR_SIZE, (hi - lo) * PAIR_SIZE), dtype="S64")


_NO_LENGTHS: npt.NDArray[np.int32] = np.zeros(0, dtype=np.int32)


def _read_at(fh: io.FileIO, offset: int, size: int) -> bytes:
    """``size`` bytes of the open run file at ``offset`` (a short file is an error)."""
    fh.seek(offset)
    data: bytes = fh.read(size)
    while len(data) < size:
        more = fh.read(size - len(data))
        if not more:
            raise RuntimeError(f"fingerprint run file {fh.name!r} is truncated")
        data += more
    return data


class Accumulator:
    """Collects records of one dataset and produces its :class:`Fingerprint` and index."""

    def __init__(
        self,
        profile: Profile,
        *,
        bucket_bits: int = DEFAULT_BUCKET_BITS,
        buffer_records: int = DEFAULT_BUFFER_RECORDS,
        spill_dir: Path | None = None,
        keep_keys: bool = True,
    ) -> None:
        self.profile = profile
        self.keep_keys = keep_keys
        self.bucket_bits = bucket_bits
        self.hasher = RecordHasher(record_tag(profile))
        self._buffer_records = max(1, buffer_records)
        self._spill_dir = spill_dir
        self._pairs = bytearray()
        self._keys: list[bytes] = []
        self._buffered = 0
        self._runs: list[_Run] = []
        self._tmpdirs: list[PrivateFolder] = []  # owner-named, swept when the owner died
        self.count = 0
        self._in_memory = 0  # bytes of sorted runs add_sorted kept in memory
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

    def add_pairs(self, pairs: bytes, keys: list[bytes] | None) -> None:
        """Add precomputed pairs (``key_hash || record_hash`` each, concatenated) with their
        keys: how worker processes hand in their results. ``keys`` may be None for an
        accumulator that keeps no keys."""
        n, rest = divmod(len(pairs), PAIR_SIZE)
        if rest or (keys is not None and len(keys) != n):
            raise ValueError("pairs and keys disagree in number")
        if self.keep_keys:
            if keys is None:
                raise ValueError("this accumulator keeps keys: give them with the pairs")
            self._keys.extend(keys)
        self._pairs += pairs
        self._buffered += n
        self.count += n
        if self._buffered >= self._buffer_records:
            self._spill()

    def add_sorted(self, run: SortedPairs) -> None:
        """Add pairs that :func:`sort_pairs` sorted (on another thread: the sort is most of
        what :meth:`add_pairs` costs, and numpy runs it without the GIL) as one run, spilled
        like any other; only for an accumulator that keeps no keys. The fingerprint is the
        one :meth:`add_pairs` gives for the same pairs."""
        if self.keep_keys:
            raise ValueError("this accumulator keeps keys: give them with the pairs")
        if run.segment_bits != self._segment_bits or len(run.bounds) != (1 << run.segment_bits) + 1:
            raise ValueError("the pairs were cut into other segments than this accumulator's")
        run.check()
        n = len(run.pairs)
        if n == 0:
            return
        self.count += n
        if self._in_memory + n * PAIR_SIZE <= SORTED_IN_MEMORY:  # bounded: then spilled
            self._in_memory += n * PAIR_SIZE
            self._runs.append(
                _Run(
                    bounds=run.bounds,
                    key_bounds=np.zeros_like(run.bounds),
                    has_keys=False,
                    pairs=run.pairs,
                    keys=b"",
                    key_lengths=_NO_LENGTHS,
                )
            )
            return
        path = self._run_dir() / f"run-{len(self._runs):05d}.run"
        with open_private(path) as fh:
            fh.write(run.pairs.data)
        self._runs.append(
            _Run(
                bounds=run.bounds,
                key_bounds=np.zeros_like(run.bounds),
                has_keys=False,
                path=path,
            )
        )

    def merge(self, other: Accumulator) -> None:
        """Take over ``other``'s records (a disjoint partition of the same dataset)."""
        if (other.profile, other.bucket_bits) != (self.profile, self.bucket_bits):
            raise ValueError("cannot merge accumulators of different profiles or bucket bits")
        other._spill()
        self._runs.extend(other._runs)
        self._tmpdirs.extend(other._tmpdirs)
        if self.keep_keys and not other.keep_keys:
            raise ValueError("cannot merge an accumulator without keys into one with keys")
        self.count += other.count
        other._runs, other._tmpdirs, other.count = [], [], 0

    # -- spilling ---------------------------------------------------------------------------

    def _run_dir(self) -> Path:
        if not self._tmpdirs:
            self._tmpdirs.append(PrivateFolder("fp", parent=self._spill_dir))
        return Path(self._tmpdirs[0].name)

    def _sorted_run(self) -> _Run | None:
        if not self._buffered:
            return None
        pairs = np.frombuffer(self._pairs, dtype="S64")  # the buffer is replaced, not resized
        order = _argsort_pairs(pairs, presorted=False)
        sorted_pairs = _take_pairs(pairs, order)
        self._buffered = 0
        self._pairs = bytearray()
        bounds = self._segment_bounds(sorted_pairs)
        if not self.keep_keys:
            return _Run(
                bounds=bounds,
                key_bounds=np.zeros_like(bounds),
                has_keys=False,
                pairs=sorted_pairs,
                keys=b"",
                key_lengths=_NO_LENGTHS,
            )
        blob, lengths = _take_keys(self._keys, order)
        self._keys = []
        offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
        np.cumsum(lengths, dtype=np.int64, out=offsets[1:])
        return _Run(
            bounds=bounds,
            key_bounds=offsets[bounds],
            has_keys=True,
            pairs=sorted_pairs,
            keys=blob,
            key_lengths=lengths,
        )

    def _segment_bounds(self, sorted_pairs: npt.NDArray[np.bytes_]) -> npt.NDArray[np.int64]:
        bounds: npt.NDArray[np.int64] = np.searchsorted(
            _top_bits(sorted_pairs, self._segment_bits),
            np.arange((1 << self._segment_bits) + 1),
            side="left",
        ).astype(np.int64)
        return bounds

    def _spill(self) -> None:
        """Sort the buffer and move it to a file in the run folder."""
        run = self._sorted_run()
        if run is None:
            return
        assert run.pairs is not None
        assert run.keys is not None
        assert run.key_lengths is not None
        path = self._run_dir() / f"run-{len(self._runs):05d}.run"
        with open_private(path) as fh:  # keys are plaintext: 0600 in a 0700 folder
            fh.write(run.pairs.tobytes())
            if run.has_keys:
                fh.write(run.key_lengths.tobytes())
                fh.write(run.keys)
        self._runs.append(
            _Run(bounds=run.bounds, key_bounds=run.key_bounds, has_keys=run.has_keys, path=path)
        )

    # -- output -----------------------------------------------------------------------------

    def finish(
        self,
        index_path: Path | None = None,
        *,
        dataset: str = "",
        encoding: str = "",
        threads: int = 1,
    ) -> tuple[Fingerprint, int]:
        """Compute the fingerprint (and write the index file when asked: only an accumulator
        that keeps keys can). Returns the fingerprint and the number of duplicate keys seen.
        ``threads`` > 1 folds the key-hash segments on that many threads when no index is
        written (the merge sorts and bucket hashes release the GIL; the result is the same)."""
        if index_path is not None and not self.keep_keys:
            raise ValueError("an accumulator that keeps no keys cannot write an index")
        writer = IndexWriter(index_path) if index_path is not None else None
        try:
            last = self._sorted_run()  # the last run stays in memory
            if last is not None:
                self._runs.append(last)
            fingerprint, duplicates = self._fold(writer, threads if writer is None else 1)
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

    def _fold(self, writer: IndexWriter | None, threads: int) -> tuple[Fingerprint, int]:
        """The fingerprint of every run's pairs, segment by segment (and the index, in key
        order, when ``writer``). Without an index, segments are folded in chunks of several
        (:meth:`_chunks`), and ``threads`` > 1 shares the chunks: a key's pairs all fall in
        one segment (its top bits), so segments fold independently, each into its own
        buckets' leaves."""
        bits = self.bucket_bits
        empty_leaf = merkle.leaf_hash(bucket_hash(b""))
        leaves = [empty_leaf] * (1 << bits)
        if writer is not None:
            count, duplicates = self._fold_segments(range(1 << self._segment_bits), leaves, writer)
        else:
            chunks = self._chunks()
            if threads <= 1 or len(chunks) <= 1:
                folded = [self._fold_chunk(first, last, leaves) for first, last in chunks]
            else:
                from concurrent.futures import ThreadPoolExecutor

                with ThreadPoolExecutor(threads, thread_name_prefix="affidavit-fold") as pool:
                    folded = list(pool.map(lambda c: self._fold_chunk(c[0], c[1], leaves), chunks))
            count = sum(c for c, _ in folded)
            duplicates = sum(d for _, d in folded)
        if count != self.count:
            raise RuntimeError(f"fingerprint lost records: {count} of {self.count}")
        root = merkle.root(leaves)
        fingerprint = Fingerprint(profile=self.profile, bucket_bits=bits, count=count, root=root)
        return fingerprint, duplicates

    def _chunks(self) -> list[tuple[int, int]]:
        """Consecutive segments grouped into chunks ``(first, last)`` of at most
        :data:`FOLD_CHUNK` pairs (a segment alone may hold more): the fold without keys takes
        a chunk at a time, one slice of each run, instead of a slice per run and segment."""
        segments = 1 << self._segment_bits
        if not self._runs:
            return []
        per_run = np.stack([np.diff(run.bounds) for run in self._runs])
        sizes = per_run.sum(axis=0)
        chunks: list[tuple[int, int]] = []
        first, held = 0, 0
        for segment, size in enumerate(sizes.tolist()):
            if held and held + size > FOLD_CHUNK:
                chunks.append((first, segment))
                first, held = segment, 0
            held += size
        chunks.append((first, segments))
        return chunks

    def _fold_chunk(self, first: int, last: int, leaves: list[bytes]) -> tuple[int, int]:
        """Fold segments ``first`` to ``last - 1`` (no keys) into ``leaves``: every run's
        pairs of those segments merged in one sort."""
        parts = [
            run.pairs_between(first, last)
            for run in self._runs
            if run.bounds[last] > run.bounds[first]
        ]
        if not parts:
            return 0, 0
        if len(parts) > 1:
            pairs = np.concatenate(parts)
            pairs = _take_pairs(pairs, _argsort_pairs(pairs, presorted=True))
        else:
            pairs = parts[0]
        return _fold_sorted(pairs, pairs.tobytes(), leaves, self.bucket_bits)

    def _fold_segments(
        self, segments: range, leaves: list[bytes], writer: IndexWriter | None = None
    ) -> tuple[int, int]:
        """Fold ``segments`` into ``leaves`` (only their own buckets' entries are written) and,
        with ``writer``, their keys into the index; the pairs counted and the duplicate keys
        seen."""
        count = duplicates = 0
        want_keys = writer is not None
        for segment in segments:
            parts = [
                run.segment(segment, with_keys=want_keys)
                for run in self._runs
                if run.bounds[segment + 1] > run.bounds[segment]
            ]
            if not parts:
                continue
            order: npt.NDArray[np.intp] | None = None
            if len(parts) > 1:
                pairs = np.concatenate([p for p, _, _ in parts])
                order = _argsort_pairs(pairs, presorted=True)
                pairs = _take_pairs(pairs, order)
            else:
                pairs = parts[0][0]
            raw = pairs.tobytes()
            counted, dups = _fold_sorted(pairs, raw, leaves, self.bucket_bits)
            count += counted
            duplicates += dups
            if writer is not None:
                lengths = (
                    np.concatenate([ls for _, _, ls in parts])
                    if order is not None
                    else (parts[0][2])
                )
                offsets = np.zeros(len(lengths), dtype=np.int64)
                np.cumsum(lengths[:-1], dtype=np.int64, out=offsets[1:])
                if order is not None:
                    offsets, lengths = offsets[order], lengths[order]
                blob = b"".join([b for _, b, _ in parts])
                writer.add_packed(raw, blob, offsets, lengths)
        return count, duplicates

    def close(self) -> None:
        """Remove temporary run files."""
        for tmp in self._tmpdirs:
            tmp.cleanup()
        self._tmpdirs = []
        self._runs = []
        self._in_memory = 0


def _fold_sorted(
    pairs: npt.NDArray[np.bytes_], raw: bytes, leaves: list[bytes], bits: int
) -> tuple[int, int]:
    """Write the leaf of every bucket ``pairs`` (sorted, whole buckets; ``raw`` their bytes)
    fall in; the pairs counted and the duplicate keys among them."""
    key_hashes = np.frombuffer(raw, dtype="S32")[::2]
    duplicates = int(np.count_nonzero(key_hashes[1:] == key_hashes[:-1]))
    buckets = _top_bits(pairs, bits)
    first, last = int(buckets[0]), int(buckets[-1])
    bounds = np.searchsorted(buckets, np.arange(first, last + 2), side="left").tolist()
    for offset, bucket in enumerate(range(first, last + 1)):
        lo, hi = bounds[offset], bounds[offset + 1]
        if hi > lo:
            leaves[bucket] = merkle.leaf_hash(bucket_hash(raw[lo * PAIR_SIZE : hi * PAIR_SIZE]))
    return len(pairs), duplicates


@dataclass(frozen=True, slots=True)
class SortedPairs:
    """Pairs sorted and cut into the accumulator's segments away from it
    (:func:`sort_pairs`), for :meth:`Accumulator.add_sorted`."""

    pairs: npt.NDArray[np.bytes_]
    bounds: npt.NDArray[np.int64]
    segment_bits: int

    def check(self) -> None:
        """Raise ``ValueError`` unless the pairs are 64-byte values in ascending order and
        the bounds are where their segments start (what the fold relies on; a run may come
        from another process, a cluster's worker)."""
        pairs, bounds = self.pairs, self.bounds
        if not isinstance(pairs, np.ndarray) or pairs.dtype != np.dtype("S64") or pairs.ndim != 1:
            raise ValueError("sorted pairs are a one-dimensional array of 64-byte values")
        if not isinstance(bounds, np.ndarray) or bounds.dtype != np.int64 or bounds.ndim != 1:
            raise ValueError("segment bounds are a one-dimensional array of int64")
        if len(pairs) > 1:
            heads = np.ascontiguousarray(pairs).view(">u8")[:: PAIR_SIZE // 8]
            if bool(np.any(heads[1:] < heads[:-1])):
                raise ValueError("the pairs are not sorted")
            tied = np.flatnonzero(heads[1:] == heads[:-1])
            if len(tied) and bool(np.any(pairs[tied + 1] < pairs[tied])):
                raise ValueError("the pairs are not sorted")
        expected = np.searchsorted(
            _top_bits(pairs, self.segment_bits),
            np.arange((1 << self.segment_bits) + 1),
            side="left",
        )
        if len(bounds) != len(expected) or bool(np.any(bounds != expected)):
            raise ValueError("the segment bounds do not match the pairs")


def sort_pairs(pairs: bytes, *, bucket_bits: int = DEFAULT_BUCKET_BITS) -> SortedPairs:
    """Sort concatenated 64-byte pairs as an accumulator's run is sorted, and find its
    segment bounds: the part of :meth:`Accumulator.add_pairs` that may run on any thread
    (a verification's segment workers, issue 18)."""
    if len(pairs) % PAIR_SIZE:
        raise ValueError("pairs is not a whole number of pairs")
    bits = min(SEGMENT_BITS, bucket_bits)
    raw = np.frombuffer(pairs, dtype="S64")
    sorted_pairs = _take_pairs(raw, _argsort_pairs(raw, presorted=False)) if len(raw) else raw
    bounds: npt.NDArray[np.int64] = np.searchsorted(
        _top_bits(sorted_pairs, bits), np.arange((1 << bits) + 1), side="left"
    ).astype(np.int64)
    return SortedPairs(pairs=sorted_pairs, bounds=bounds, segment_bits=bits)


def _top_bits(pairs: npt.NDArray[np.bytes_], bits: int) -> npt.NDArray[np.uint32]:
    """The bucket of each pair: the top ``bits`` bits of its key hash."""
    if bits == 0:
        return np.zeros(len(pairs), dtype=np.uint32)
    words = np.ascontiguousarray(pairs).view(">u4")[:: PAIR_SIZE // 4]
    return (words >> np.uint32(32 - bits)).astype(np.uint32)


def _argsort_pairs(pairs: npt.NDArray[np.bytes_], *, presorted: bool) -> npt.NDArray[np.intp]:
    """``np.argsort(pairs, kind="stable")`` of 64-byte pairs, faster: sorted by their first 8
    bytes as an integer, which gives the same order when no two pairs share those 8 bytes (no
    ties: any sort agrees); when some do, the full stable sort decides, so equal pairs keep
    their order. ``presorted``: the pairs are sorted runs back to back (timsort merges them)."""
    if len(pairs) < 2:
        return np.arange(len(pairs), dtype=np.intp)
    heads = np.ascontiguousarray(pairs).view(">u8")[:: PAIR_SIZE // 8].astype(np.uint64)
    order: npt.NDArray[np.intp] = np.argsort(heads, kind="stable" if presorted else "quicksort")
    ordered = heads[order]
    if bool(np.any(ordered[1:] == ordered[:-1])):
        full: npt.NDArray[np.intp] = np.argsort(pairs, kind="stable")
        return full
    return order


def _take_pairs(
    pairs: npt.NDArray[np.bytes_], order: npt.NDArray[np.intp]
) -> npt.NDArray[np.bytes_]:
    """``pairs[order]`` (as rows of eight 64-bit words, which numpy gathers faster)."""
    rows = np.ascontiguousarray(pairs).view(np.uint64).reshape(-1, PAIR_SIZE // 8)
    taken: npt.NDArray[np.bytes_] = np.take(rows, order, axis=0).view("S64").reshape(-1)
    return taken


def _take_keys(
    keys: list[bytes], order: npt.NDArray[np.intp]
) -> tuple[bytes, npt.NDArray[np.int32]]:
    """``keys`` in ``order``, packed: their bytes back to back and each one's length."""
    index = np.ascontiguousarray(order, dtype=np.int64)
    if _NATIVE is not None and hasattr(_NATIVE, "take_keys") and type(keys) is list:
        try:
            blob, lengths = _NATIVE.take_keys(keys, index)
        except TypeError:  # a key that is bytes-like but not bytes: the Python path takes it
            pass
        else:
            return blob, np.frombuffer(lengths, dtype=np.int32)
    ordered = [keys[i] for i in index.tolist()]
    return b"".join(ordered), np.fromiter(map(len, ordered), dtype=np.int32, count=len(ordered))


def hash_records(
    profile: Profile, records: Iterable[tuple[bytes, bytes]]
) -> tuple[bytes, list[bytes]]:
    """Hash canonical records into concatenated pairs plus their keys (for worker processes,
    whose results go to :meth:`Accumulator.add_pairs`)."""
    batch = list(records)
    pairs = RecordHasher(record_tag(profile)).pairs(batch)
    return b"".join(pairs), [key for key, _ in batch]
