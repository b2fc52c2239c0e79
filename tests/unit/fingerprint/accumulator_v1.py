"""The fingerprint accumulator and ``IndexWriter.add_many`` as they were before the fast paths
(packed keys, integer-prefix sorts, one file per spilled run), kept verbatim as the reference
that tests/unit/fingerprint/test_accumulator_fast.py and benchmarks/bench_accumulator.py hold
the current code equal to (fingerprint, duplicates and index file bytes). One part is left
out: ``add_many``'s C branch (the since removed ``_native.index_entries``), which wrote the
same bytes as the Python loop kept here (it was tested to)."""

from __future__ import annotations

import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from affidavit.crypto.record_digest import RecordHasher, bucket_hash
from affidavit.fingerprint.index import (
    _KEY_FIELDS,
    IndexHeader,
    IndexWriter,
    encode_key_field,
)
from affidavit.fingerprint.model import (
    DEFAULT_BUCKET_BITS,
    PAIR_SIZE,
    Fingerprint,
    record_tag,
)
from affidavit.ledger import merkle
from affidavit.models.records import Profile

# -- the reference: the accumulator and IndexWriter.add_many before the fast paths, verbatim ----

DEFAULT_BUFFER_RECORDS = 1 << 16
SEGMENT_BITS = 8


class _RefIndexWriter(IndexWriter):
    def add_many(self, pairs: bytes, keys: list[bytes]) -> None:
        """Append one entry per key: ``pairs`` holds their pairs back to back (what
        :meth:`add` does per entry, in one write)."""
        if len(pairs) != PAIR_SIZE * len(keys):
            raise ValueError("pairs and keys disagree in number")
        fields = _KEY_FIELDS
        parts: list[bytes] = []
        append = parts.append
        for i, key in enumerate(keys):
            append(pairs[i * PAIR_SIZE : (i + 1) * PAIR_SIZE])
            field = fields.get(len(key))
            if field is None:
                append(encode_key_field(key))
            else:
                append(field)
                append(key)
        self._write(b"".join(parts))


@dataclass(slots=True)
class _RefRun:
    """One sorted run: pairs in sorted order and their keys in the same order.

    The last run stays in memory; spilled runs live in files and only the segment being folded
    is read back, so memory does not grow with the record count. Segment ``s`` holds sorted
    pairs ``bounds[s]:bounds[s + 1]`` and key bytes ``key_bounds[s]:key_bounds[s + 1]``;
    ``key_lengths`` gives each key's length.
    """

    bounds: npt.NDArray[np.int64]
    key_bounds: npt.NDArray[np.int64]
    pairs: npt.NDArray[np.bytes_] | None = None  # in memory
    keys: bytes | None = None
    key_lengths: npt.NDArray[np.int32] | None = None
    path: Path | None = None  # spilled: path.pairs, path.keys, path.klen

    def segment(self, s: int, *, with_keys: bool) -> tuple[npt.NDArray[np.bytes_], list[bytes]]:
        """The sorted pairs of segment ``s`` (and their keys when asked)."""
        lo, hi = int(self.bounds[s]), int(self.bounds[s + 1])
        if self.path is None:
            assert self.pairs is not None
            assert self.keys is not None
            assert self.key_lengths is not None
            pairs = self.pairs[lo:hi]
            blob, lengths = self.keys, self.key_lengths[lo:hi]
            base = int(self.key_bounds[s])
        else:
            pairs = np.fromfile(
                self.path.with_suffix(".pairs"), dtype="S64", count=hi - lo, offset=lo * PAIR_SIZE
            )
            if not with_keys:
                return pairs, []
            lengths = np.fromfile(
                self.path.with_suffix(".klen"), dtype=np.int32, count=hi - lo, offset=lo * 4
            )
            klo, khi = int(self.key_bounds[s]), int(self.key_bounds[s + 1])
            with self.path.with_suffix(".keys").open("rb") as fh:
                fh.seek(klo)
                blob = fh.read(khi - klo)
            base = 0
        if not with_keys:
            return pairs, []
        keys = []
        pos = base
        for length in lengths.tolist():
            keys.append(blob[pos : pos + length])
            pos += length
        return pairs, keys


class RefAccumulator:
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
        self._runs: list[_RefRun] = []
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

    def merge(self, other: RefAccumulator) -> None:
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
            self._tmpdirs.append(
                tempfile.TemporaryDirectory(prefix="affidavit-fp-", dir=self._spill_dir)
            )
        return Path(self._tmpdirs[0].name)

    def _sorted_run(self) -> _RefRun | None:
        if not self._buffered:
            return None
        pairs = np.frombuffer(bytes(self._pairs), dtype="S64")
        order = np.argsort(pairs, kind="stable")
        sorted_pairs = pairs[order]
        self._buffered = 0
        if not self.keep_keys:
            self._pairs = bytearray()
            bounds = self._segment_bounds(sorted_pairs)
            return _RefRun(
                bounds=bounds,
                key_bounds=np.zeros_like(bounds),
                pairs=sorted_pairs,
                keys=b"",
                key_lengths=np.zeros(len(sorted_pairs), dtype=np.int32),
            )
        keys = [self._keys[i] for i in order.tolist()]
        lengths = np.fromiter(map(len, keys), dtype=np.int32, count=len(keys))
        offsets = np.concatenate((np.zeros(1, dtype=np.int64), np.cumsum(lengths, dtype=np.int64)))
        bounds = self._segment_bounds(sorted_pairs)
        self._pairs = bytearray()
        self._keys = []
        return _RefRun(
            bounds=bounds,
            key_bounds=offsets[bounds],
            pairs=sorted_pairs,
            keys=b"".join(keys),
            key_lengths=lengths,
        )

    def _segment_bounds(self, sorted_pairs: npt.NDArray[np.bytes_]) -> npt.NDArray[np.int64]:
        bounds: npt.NDArray[np.int64] = np.searchsorted(
            _ref_top_bits(sorted_pairs, self._segment_bits),
            np.arange((1 << self._segment_bits) + 1),
            side="left",
        ).astype(np.int64)
        return bounds

    def _spill(self) -> None:
        """Sort the buffer and move it to files in the run folder."""
        run = self._sorted_run()
        if run is None:
            return
        assert run.pairs is not None
        assert run.keys is not None
        assert run.key_lengths is not None
        path = self._run_dir() / f"run-{len(self._runs):05d}"
        run.pairs.tofile(path.with_suffix(".pairs"))
        if self.keep_keys:
            run.key_lengths.tofile(path.with_suffix(".klen"))
            path.with_suffix(".keys").write_bytes(run.keys)
        self._runs.append(_RefRun(bounds=run.bounds, key_bounds=run.key_bounds, path=path))

    # -- output -----------------------------------------------------------------------------

    def finish(
        self, index_path: Path | None = None, *, dataset: str = "", encoding: str = ""
    ) -> tuple[Fingerprint, int]:
        """Compute the fingerprint (and write the index file when asked: only an accumulator
        that keeps keys can). Returns the fingerprint and the number of duplicate keys seen."""
        if index_path is not None and not self.keep_keys:
            raise ValueError("an accumulator that keeps no keys cannot write an index")
        writer = _RefIndexWriter(index_path) if index_path is not None else None
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
        want_keys = writer is not None
        for segment in range(1 << self._segment_bits):
            parts = [
                run.segment(segment, with_keys=want_keys)
                for run in self._runs
                if run.bounds[segment + 1] > run.bounds[segment]
            ]
            if not parts:
                continue
            pairs = np.concatenate([p for p, _ in parts]) if len(parts) > 1 else parts[0][0]
            order = np.argsort(pairs, kind="stable") if len(parts) > 1 else None
            if order is not None:
                pairs = pairs[order]
            count += len(pairs)
            raw = pairs.tobytes()
            key_hashes = np.frombuffer(raw, dtype="S32")[::2]
            duplicates += int(np.count_nonzero(key_hashes[1:] == key_hashes[:-1]))
            buckets = _ref_top_bits(pairs, bits)
            first, last = int(buckets[0]), int(buckets[-1])
            bounds = np.searchsorted(buckets, np.arange(first, last + 2), side="left")
            for offset, bucket in enumerate(range(first, last + 1)):
                lo, hi = int(bounds[offset]), int(bounds[offset + 1])
                if hi > lo:
                    leaves[bucket] = merkle.leaf_hash(
                        bucket_hash(raw[lo * PAIR_SIZE : hi * PAIR_SIZE])
                    )
            if writer is not None:
                keys = [k for _, ks in parts for k in ks]
                if order is not None:
                    keys = [keys[i] for i in order.tolist()]
                writer.add_many(raw, keys)
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


def _ref_top_bits(pairs: npt.NDArray[np.bytes_], bits: int) -> npt.NDArray[np.uint32]:
    """The bucket of each pair: the top ``bits`` bits of its key hash."""
    if bits == 0:
        return np.zeros(len(pairs), dtype=np.uint32)
    words = np.frombuffer(pairs.tobytes(), dtype=">u4")[:: PAIR_SIZE // 4]
    return (words >> np.uint32(32 - bits)).astype(np.uint32)
