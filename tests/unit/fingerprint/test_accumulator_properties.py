"""Fingerprint core: order independence, partition/merge, sensitivity, diff localisation."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from affidavit.errors import FormatError
from affidavit.fingerprint.accumulator import Accumulator
from affidavit.fingerprint.diff import Change, diff_indexes
from affidavit.fingerprint.index import IndexReader
from affidavit.fingerprint.model import Fingerprint

keys = st.binary(min_size=1, max_size=40)
datasets = st.dictionaries(keys, st.binary(max_size=64), min_size=0, max_size=60)
FAST = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def fp(records: list[tuple[bytes, bytes]], *, buffer: int = 1 << 18, bits: int = 4) -> Fingerprint:
    acc = Accumulator("exact", bucket_bits=bits, buffer_records=buffer)
    acc.add_records(records)
    return acc.finish()[0]


@FAST
@given(datasets, st.randoms(use_true_random=False))
def test_order_does_not_matter(data: dict[bytes, bytes], rnd: random.Random) -> None:
    records = list(data.items())
    shuffled = records[:]
    rnd.shuffle(shuffled)
    assert fp(records) == fp(shuffled, buffer=3)  # also across spilled runs


@FAST
@given(datasets, st.lists(st.integers(min_value=0, max_value=3)))
def test_partitions_merge_to_the_whole(data: dict[bytes, bytes], splits: list[int]) -> None:
    records = list(data.items())
    parts: list[Accumulator] = [
        Accumulator("exact", bucket_bits=4, buffer_records=5) for _ in range(4)
    ]
    for i, record in enumerate(records):
        parts[splits[i % len(splits)] if splits else 0].add(*record)
    whole = parts[0]
    for other in parts[1:]:
        whole.merge(other)
    assert whole.finish()[0] == fp(records)


@FAST
@given(datasets, keys, st.binary(max_size=64))
def test_any_single_change_is_seen_and_named(
    tmp_path_factory: pytest.TempPathFactory, data: dict[bytes, bytes], key: bytes, value: bytes
) -> None:
    tmp = tmp_path_factory.mktemp("idx")
    before = dict(data)
    after = dict(data)
    if key in after and after[key] != value:
        after[key] = value
        expected = Change.CHANGED
    elif key in after:
        del after[key]
        expected = Change.MISSING
    else:
        after[key] = value
        expected = Change.EXTRA
    a, b = Accumulator("exact", bucket_bits=4), Accumulator("exact", bucket_bits=4)
    a.add_records(before.items())
    b.add_records(after.items())
    fa, _ = a.finish(tmp / "a", dataset="d", encoding="redis")
    fb, _ = b.finish(tmp / "b", dataset="d", encoding="redis")
    assert fa != fb
    result = diff_indexes(IndexReader(tmp / "a"), IndexReader(tmp / "b"))
    assert [(d.change, d.key) for d in result.differences] == [(expected, key)]


def test_profiles_are_domain_separated() -> None:
    records = [(b"k", b"v")]
    exact = Accumulator("exact")
    logical = Accumulator("logical")
    exact.add_records(records)
    logical.add_records(records)
    assert exact.finish()[0].root != logical.finish()[0].root


def test_empty_dataset_has_a_well_defined_fingerprint() -> None:
    a = fp([])
    assert a.count == 0
    assert a == fp([])
    assert Fingerprint.from_text(a.text) == a


def test_duplicate_keys_are_counted_and_reported(tmp_path: Path) -> None:
    acc = Accumulator("exact", bucket_bits=2)
    acc.add_records([(b"k", b"1"), (b"k", b"2"), (b"j", b"x")])
    _, dups = acc.finish(tmp_path / "dup", dataset="d", encoding="redis")
    assert dups == 1
    clean = Accumulator("exact", bucket_bits=2)
    clean.add_records([(b"k", b"1"), (b"j", b"x")])
    clean.finish(tmp_path / "clean", dataset="d", encoding="redis")
    result = diff_indexes(IndexReader(tmp_path / "clean"), IndexReader(tmp_path / "dup"))
    assert {d.change for d in result.differences} == {Change.CHANGED, Change.DUPLICATE}


def test_long_keys_are_kept_as_a_marked_prefix(tmp_path: Path) -> None:
    key = b"x" * 5000
    acc = Accumulator("exact")
    acc.add(key, b"v")
    acc.finish(tmp_path / "i", dataset="d", encoding="redis")
    (entry,) = IndexReader(tmp_path / "i").entries()
    assert entry.key_truncated
    assert entry.key == key[:1024]


# -- tampering with the index file -----------------------------------------------------------


@pytest.fixture
def index_file(tmp_path: Path) -> Path:
    acc = Accumulator("exact")
    acc.add_records((f"key{i}".encode(), b"value" * i) for i in range(100))
    acc.finish(tmp_path / "good.afpidx", dataset="d", encoding="redis")
    return tmp_path / "good.afpidx"


def test_flipped_byte_in_an_entry_is_caught_by_the_trailer(index_file: Path) -> None:
    data = bytearray(index_file.read_bytes())
    data[100] ^= 0x01
    index_file.write_bytes(bytes(data))
    with pytest.raises(FormatError, match="altered"):
        IndexReader(index_file).verify_trailer()


def test_edited_header_root_is_caught_by_the_trailer(index_file: Path) -> None:
    data = index_file.read_bytes()
    reader = IndexReader(index_file)
    root = reader.fingerprint.root.hex().encode()
    index_file.write_bytes(data.replace(root, b"0" * 64))
    with pytest.raises(FormatError, match="altered"):
        IndexReader(index_file).verify_trailer()


@pytest.mark.parametrize("cut", [1, 33, 200, 2000])
def test_truncated_index_is_a_format_error(index_file: Path, cut: int) -> None:
    data = index_file.read_bytes()
    index_file.write_bytes(data[:-cut])
    with pytest.raises(FormatError):
        reader = IndexReader(index_file)
        reader.verify_trailer()


def test_not_an_index(tmp_path: Path) -> None:
    path = tmp_path / "x"
    path.write_bytes(b"hello world, this is not an index file at all" * 3)
    with pytest.raises(FormatError, match="bad magic"):
        IndexReader(path)


def test_fingerprint_text_round_trip_and_refusal() -> None:
    good = fp([(b"a", b"b")])
    assert Fingerprint.from_text(good.text) == good
    for bad in (
        "",
        "afp1:exact:b4:n1:zz",
        "afp2:exact:b4:n1:" + "0" * 64,
        "afp1:fuzzy:b4:n1:" + "0" * 64,
    ):
        with pytest.raises(FormatError):
            Fingerprint.from_text(bad)
