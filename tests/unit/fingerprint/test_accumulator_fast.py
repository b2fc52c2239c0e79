"""The accumulator's fast paths (packed keys, integer-prefix sorts, one file per spilled run,
entries assembled from the key blob in C) give byte-identical results to the algorithm they
replaced, kept verbatim as the reference in ``accumulator_v1.py`` beside this file: the same
fingerprint, duplicates and index file bytes for every input, with and without the compiled
module."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from accumulator_v1 import RefAccumulator  # beside this file (pytest puts it on the path)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from affidavit.fingerprint import accumulator, index
from affidavit.fingerprint.accumulator import Accumulator
from affidavit.fingerprint.index import KEY_PREFIX_MAX, encode_key_field
from affidavit.fingerprint.model import DEFAULT_BUCKET_BITS

NATIVE = index._load_native()
needs_native = pytest.mark.skipif(
    NATIVE is None or not hasattr(NATIVE, "take_keys"),
    reason="the compiled module is not built (pip install -e . builds it)",
)

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


@pytest.mark.parametrize("buffer_records", [1 << 20, 4096])  # one run in memory; spilled runs
@pytest.mark.parametrize("threads", [2, 3, 7])
def test_a_fold_on_threads_is_the_fold_on_one(buffer_records: int, threads: int) -> None:
    """``finish(threads=N)`` shares the key-hash segments among threads: the fingerprint and
    the duplicate count are those of one thread (duplicates included, several runs merged,
    buckets spread over every segment and empty ones)."""
    rng = np.random.default_rng(11)
    n = 30_000
    raw = rng.bytes(64 * n)
    pairs = [raw[64 * i : 64 * (i + 1)] for i in range(n)]
    pairs += pairs[:500]  # duplicate keys (and identical pairs)
    results = []
    for t in (1, threads):
        acc = Accumulator("exact", bucket_bits=12, buffer_records=buffer_records, keep_keys=False)
        for k in range(0, len(pairs), 2_000):
            acc.add_pairs(b"".join(pairs[k : k + 2_000]), None)
        results.append(acc.finish(threads=t))
    assert results[0] == results[1]
    assert results[0][1] == 500
    assert results[0][0].count == n + 500
