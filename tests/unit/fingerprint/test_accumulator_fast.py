"""The accumulator's fast paths (packed keys, integer-prefix sorts, one file per spilled run,
entries assembled from the key blob in C) give byte-identical results to the algorithm they
replaced, kept verbatim below as the reference: the same fingerprint, duplicates and index file
bytes for every input, with and without the compiled module."""

from __future__ import annotations

import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from affidavit.crypto.record_digest import RecordHasher, bucket_hash
from affidavit.fingerprint import accumulator, index
from affidavit.fingerprint.accumulator import Accumulator
from affidavit.fingerprint.index import (
    _KEY_FIELDS,
    KEY_PREFIX_MAX,
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

NATIVE = index._load_native()
_REF_NATIVE = NATIVE
needs_native = pytest.mark.skipif(
    NATIVE is None or not hasattr(NATIVE, "take_keys"),
    reason="the compiled module is not built (pip install -e . builds it)",
)

# -- the reference: the accumulator and IndexWriter.add_many before the fast paths, verbatim ----

DEFAULT_BUFFER_RECORDS = 1 << 16
SEGMENT_BITS = 8


class _RefIndexWriter(IndexWriter):
    def add_many(self, pairs: bytes, keys: list[bytes]) -> None:
        """Append one entry per key: ``pairs`` holds their pairs back to back (what
        :meth:`add` does per entry, in one write; assembled in C when that is built and no key
        needs truncating)."""
        if len(pairs) != PAIR_SIZE * len(keys):
            raise ValueError("pairs and keys disagree in number")
        if _REF_NATIVE is not None and type(keys) is list:
            try:
                self._write(_REF_NATIVE.index_entries(pairs, keys, KEY_PREFIX_MAX))
            except ValueError:  # a key to truncate: the general path below flags it
                pass
            else:
                return
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


# -- the tests ----------------------------------------------------------------------------------

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Key hashes from a few 8-byte prefixes (ties in the integer sort), a few full values (equal key
# hashes: duplicates) or random; record hashes from a few values (equal pairs) or random.
_prefixes = st.sampled_from([bytes(8), b"\xff" * 8, b"\x80" + bytes(7), b"\x12" * 8])
_key_hash = st.one_of(
    st.binary(min_size=32, max_size=32),
    st.builds(lambda p, r: p + r, _prefixes, st.binary(min_size=24, max_size=24)),
    st.builds(lambda p, r: p + r, _prefixes, st.sampled_from([bytes(24), b"\x01" * 24])),
)
_record_hash = st.one_of(
    st.binary(min_size=32, max_size=32), st.sampled_from([bytes(32), b"\xee" * 32])
)
_key = st.one_of(
    st.binary(max_size=24),
    st.binary(min_size=KEY_PREFIX_MAX - 2, max_size=KEY_PREFIX_MAX + 40),  # some truncated
)
_entry = st.tuples(_key_hash, _record_hash, _key)
_entries = st.lists(_entry, max_size=80).flatmap(
    lambda es: (
        st.lists(st.sampled_from(es), max_size=30).map(lambda extra: es + extra)
        if es
        else st.just(es)
    )
)  # repeats of whole entries: identical pairs and duplicate keys


@dataclass(frozen=True)
class _Case:
    parts: list[list[tuple[bytes, bytes, bytes]]]  # one accumulator per part, merged into the first
    bucket_bits: int
    buffer_records: int
    batch: int
    keep_keys: bool
    write_index: bool


_cases = st.builds(
    _Case,
    parts=st.lists(_entries, min_size=1, max_size=3),
    bucket_bits=st.sampled_from([0, 1, 3, 8, 9, DEFAULT_BUCKET_BITS]),
    buffer_records=st.sampled_from([1, 2, 3, 5, 16, 1 << 16]),
    batch=st.sampled_from([1, 2, 7, 100]),
    keep_keys=st.booleans(),
    write_index=st.booleans(),
)


def _run(
    case: _Case, make: type[Accumulator] | type[RefAccumulator], work: Path
) -> tuple[object, ...]:
    accs = []
    for entries in case.parts:
        acc = make(
            "exact",
            bucket_bits=case.bucket_bits,
            buffer_records=case.buffer_records,
            spill_dir=work,
            keep_keys=case.keep_keys,
        )
        for i in range(0, len(entries), case.batch):
            chunk = entries[i : i + case.batch]
            pairs = b"".join(kh + rh for kh, rh, _ in chunk)
            acc.add_pairs(pairs, [k for _, _, k in chunk] if case.keep_keys else None)
        accs.append(acc)
    first = accs[0]
    for other in accs[1:]:
        first.merge(other)  # type: ignore[arg-type]
    path = work / f"{make.__name__}.idx" if case.write_index and case.keep_keys else None
    fp, duplicates = first.finish(path, dataset="d", encoding="bson")
    return fp, duplicates, path.read_bytes() if path is not None else None


def _same(case: _Case) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        new = _run(case, Accumulator, work)
        ref = _run(case, RefAccumulator, work)
        assert new == ref
        assert list(work.iterdir()) == [p for p in work.iterdir() if p.suffix == ".idx"]


@FAST
@given(_cases)
def test_same_results_as_the_reference(case: _Case) -> None:
    _same(case)


@FAST
@given(_cases)
def test_same_results_as_the_reference_in_pure_python(case: _Case) -> None:
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(accumulator, "_NATIVE", None)
        mp.setattr(index, "_NATIVE", None)
        _same(case)


def test_the_sizes_of_a_real_run_spill_and_merge() -> None:
    """Several full runs of random pairs with duplicates, long keys and shared prefixes."""
    rng = np.random.default_rng(7)
    n = 20_000
    key_hashes = rng.bytes(32 * n)
    entries = []
    for i in range(n):
        kh = key_hashes[32 * i : 32 * (i + 1)]
        if i % 97 == 0:
            kh = bytes(8) + kh[8:]  # shared 8-byte prefix
        key = rng.bytes(int(rng.integers(0, 30)))
        if i % 1000 == 0:
            key = rng.bytes(KEY_PREFIX_MAX + 7)
        entries.append((kh, rng.bytes(32), key))
    entries += entries[:300]  # duplicate keys and identical pairs
    for buffer in (4096, 1 << 16):
        _same(_Case([entries[:15_000], entries[15_000:]], 12, buffer, 1060, True, True))


@pytest.mark.parametrize("keep_keys", [True, False])
def test_records_and_empty_accumulators(keep_keys: bool) -> None:
    records = [(f"k{i % 50}".encode(), f"v{i}".encode()) for i in range(300)]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        results = []
        for make in (Accumulator, RefAccumulator):
            for recs in (records, []):
                acc = make("logical", buffer_records=64, spill_dir=work, keep_keys=keep_keys)
                acc.add_records(recs)
                for key, value in recs[:5]:
                    acc.add(key, value)
                path = work / f"{make.__name__}-{len(recs)}.idx" if keep_keys else None
                fp, dup = acc.finish(path)
                results.append((fp, dup, path.read_bytes() if path else None))
        assert results[:2] == results[2:]


# -- the helpers --------------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.tuples(_key_hash, _record_hash).map(lambda t: t[0] + t[1]), max_size=60).flatmap(
        lambda ps: (
            st.lists(st.sampled_from(ps), max_size=20).map(lambda x: ps + x) if ps else st.just(ps)
        )
    ),
    st.booleans(),
)
def test_argsort_is_the_stable_argsort(pairs: list[bytes], presorted: bool) -> None:
    array = np.frombuffer(b"".join(pairs), dtype="S64")
    expected = np.argsort(array, kind="stable")
    got = accumulator._argsort_pairs(array, presorted=presorted)
    assert got.tolist() == expected.tolist()
    assert accumulator._take_pairs(array, got).tobytes() == array[expected].tobytes()


def _python_entries(pairs: bytes, keys: list[bytes]) -> bytes:
    return b"".join(
        pairs[i * 64 : (i + 1) * 64] + encode_key_field(key) for i, key in enumerate(keys)
    )


@needs_native
@settings(max_examples=200, deadline=None)
@given(st.lists(_key, max_size=30), st.randoms(use_true_random=False))
def test_native_packing_matches_python(keys: list[bytes], rnd: object) -> None:
    assert NATIVE is not None
    order = np.arange(len(keys), dtype=np.int64)
    rnd.shuffle(order)  # type: ignore[attr-defined]
    blob, lengths = NATIVE.take_keys(keys, order)
    ordered = [keys[i] for i in order.tolist()]
    assert blob == b"".join(ordered)
    assert np.frombuffer(lengths, dtype=np.int32).tolist() == [len(k) for k in ordered]
    offsets = np.zeros(len(ordered), dtype=np.int64)
    np.cumsum(np.frombuffer(lengths, dtype=np.int32)[:-1], out=offsets[1:])
    pairs = bytes(range(64)) * len(keys)
    expected = _python_entries(pairs, ordered)
    got = NATIVE.packed_entries(
        pairs, blob, offsets, np.frombuffer(lengths, dtype=np.int32), KEY_PREFIX_MAX
    )
    assert got == expected
    # the blob read backwards (offsets in any order) gives the same entries
    reverse = np.ascontiguousarray(offsets[::-1])
    rev_lengths = np.ascontiguousarray(np.frombuffer(lengths, dtype=np.int32)[::-1])
    assert NATIVE.packed_entries(pairs, blob, reverse, rev_lengths, KEY_PREFIX_MAX) == (
        _python_entries(pairs, ordered[::-1])
    )


@needs_native
def test_native_packing_refuses_what_it_cannot_take() -> None:
    assert NATIVE is not None
    one = np.zeros(1, dtype=np.int64)
    with pytest.raises(IndexError):
        NATIVE.take_keys([b"a"], np.array([1], dtype=np.int64))
    with pytest.raises(IndexError):
        NATIVE.take_keys([b"a"], np.array([-1], dtype=np.int64))
    with pytest.raises(TypeError, match="bytes"):
        NATIVE.take_keys(["a"], one)
    with pytest.raises(ValueError, match="int64"):
        NATIVE.take_keys([b"a"], b"\0" * 7)
    pair = bytes(64)
    lengths = np.array([3], dtype=np.int32)
    with pytest.raises(ValueError, match="outside"):
        NATIVE.packed_entries(pair, b"ab", one, lengths, KEY_PREFIX_MAX)
    with pytest.raises(ValueError, match="outside"):
        NATIVE.packed_entries(pair, b"abc", np.array([-1], dtype=np.int64), lengths, 10)
    with pytest.raises(ValueError, match="outside"):
        NATIVE.packed_entries(pair, b"abc", one, np.array([-1], dtype=np.int32), 10)
    with pytest.raises(ValueError, match="outside"):
        NATIVE.packed_entries(pair, b"abc", np.array([2**62], dtype=np.int64), lengths, 10)
    with pytest.raises(ValueError, match="disagree"):
        NATIVE.packed_entries(pair * 2, b"abc", one, lengths, 10)
    with pytest.raises(ValueError, match="whole"):
        NATIVE.packed_entries(bytes(63), b"", one, lengths, 10)
    with pytest.raises(ValueError, match="prefix_max"):
        NATIVE.packed_entries(pair, b"abc", one, lengths, 0x8000)
    assert NATIVE.packed_entries(pair, b"abc", one, lengths, 2) == pair + b"\x80\x02ab"
