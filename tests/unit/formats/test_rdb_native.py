"""The compiled path of the RDB fingerprint pass (``affidavit.formats.rdb._native``) against
the general path (the Python parser): ``RdbReader.iter_pairs`` gives the same keys and the
same ``key_hash || record_hash`` pairs, in the same order, with the same key counts, or fails
with the same error, whatever the encodings, the buffer boundaries or the damage; and the
pairs equal those of the reference chain (general parser, ``cbor2`` encoding, ``RecordHasher``).

Hostile input is the point: hypothesis mutates, truncates and splices genuine and generated
RDB files and feeds random bytes after a valid header.
"""

from __future__ import annotations

import importlib.util
import random
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_rdb_parser import (  # the writers of the encodings, and generated files
    AS_OF,
    SHARED_RDB,
    _len,
    _lzf_str,
    _rdb,
    _str,
    big_body,
    damaged,
    intset,
    listpack,
    rich_body,
    ziplist,
)

from affidavit.crypto.record_digest import RecordHasher
from affidavit.errors import FormatError
from affidavit.fingerprint.model import record_tag
from affidavit.formats import rdb
from affidavit.formats.rdb import RdbReader
from affidavit.formats.rdb import input as rdb_input
from affidavit.formats.rdb import reader as rdb_reader
from affidavit.formats.rdb.parser import _Parser
from affidavit.formats.redis_codec import _encode_general, encode_redis_record

NATIVE = rdb._load_native()
needs_native = pytest.mark.skipif(
    NATIVE is None,
    reason="the compiled fast path is not built (pip install -e . builds it) or is switched off",
)
HASHER = RecordHasher(record_tag("exact"))


def _growing(path: Path, step: int) -> tuple[Path, Callable[[], bool]]:
    """A copy of ``path`` that starts empty and grows by ``step`` bytes (a random amount up to
    ``step`` when it is negative) per ``feed()`` call, as a spool fed by a server does."""
    data = path.read_bytes()
    spool = path.with_name(path.name + ".spool")
    spool.write_bytes(b"")
    rng = random.Random(len(data))
    written = 0

    def feed() -> bool:
        nonlocal written
        if written >= len(data):
            return False
        n = step if step > 0 else rng.randint(1, -step)
        with spool.open("ab") as fh:
            fh.write(data[written : written + n])
        written += n
        return True

    return spool, feed


def _flat(
    path: Path,
    *,
    native: bool,
    batch: int = 7,
    as_of: int | None = AS_OF,
    grow: int | None = None,
) -> Any:
    """What ``iter_pairs`` gives: ``("ok", [(dataset, key, pair)], counts, version)`` or
    ``("error", message)``; ``grow``: read the file while it grows (see :func:`_growing`)."""
    saved = rdb._NATIVE
    rdb._NATIVE = NATIVE if native else None
    try:
        feed = None
        if grow is not None:
            grown, feed = _growing(path, grow)
            expected_name = str(path)
            path = grown
        reader = RdbReader(path, as_of_ms=as_of, keep_expired=as_of is None, feed=feed)
        out = []
        try:
            for dataset, pairs, keys in reader.iter_pairs(HASHER, encode_redis_record, batch=batch):
                assert 1 <= len(keys) <= batch
                assert len(pairs) == 64 * len(keys)
                out += [(dataset, k, pairs[64 * i : 64 * i + 64]) for i, k in enumerate(keys)]
        except FormatError as exc:
            message = str(exc)
            if grow is not None:
                message = message.replace(str(path), expected_name)
            return ("error", message)
        return ("ok", out, reader.key_counts(), reader.version)
    finally:
        rdb._NATIVE = saved


def _reference(path: Path, as_of: int | None = AS_OF) -> Any:
    """The reference chain: the general parser, cbor2, one RecordHasher.pair per record."""
    reader = RdbReader(path, as_of_ms=as_of, keep_expired=as_of is None)
    try:
        out = []
        for dataset, record in reader.iter_all():
            key, value = _encode_general(record)
            out.append((dataset, key, HASHER.pair(key, value)))
    except FormatError as exc:
        return ("error", str(exc))
    return ("ok", out, reader.key_counts(), reader.version)


def _same(path: Path, **kwargs: Any) -> Any:
    native = _flat(path, native=True, **kwargs)
    python = _flat(path, native=False, **kwargs)
    assert native == python
    return native


@needs_native
def test_native_pairs_equal_the_reference_chain(tmp_path: Path) -> None:
    path = tmp_path / "rich.rdb"
    path.write_bytes(_rdb(rich_body(random.Random(11), n=400)))
    result = _same(path)
    assert result[0] == "ok"
    assert result == _reference(path)
    assert {d for d, _, _ in result[1]} == {"db0", "db3"}
    kept = _same(path, as_of=None)  # keep_expired: every key, negative expiries too
    assert kept == _reference(path, as_of=None)
    assert len(kept[1]) > len(result[1])


@needs_native
def test_native_openssl_and_hashlib_hashes_agree(tmp_path: Path) -> None:
    """scan() hashes with OpenSSL's one-shot digest when it finds the libcrypto hashlib uses,
    else with hashlib: both give the reference chain's pairs."""
    assert NATIVE is not None
    path = tmp_path / "rich.rdb"
    path.write_bytes(_rdb(rich_body(random.Random(5), n=300)))
    expected = _reference(path)
    first = NATIVE.hash_backend()
    assert first in {"openssl", "hashlib"}
    try:
        assert NATIVE.hash_backend(True) == "hashlib"
        assert _flat(path, native=True) == expected
        if first == "openssl":
            assert NATIVE.hash_backend(False) == "openssl"
            assert _flat(path, native=True) == expected
    finally:
        NATIVE.hash_backend(first != "openssl")
    assert NATIVE.hash_backend() == first


@needs_native
@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("chunk", [1, 13, 256, 5000])
def test_native_across_buffer_boundaries(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, seed: int, chunk: int
) -> None:
    path = tmp_path / "rich.rdb"
    path.write_bytes(_rdb(rich_body(random.Random(seed), n=80)))
    expected = _reference(path)
    monkeypatch.setattr(rdb_input, "_CHUNK", chunk)
    assert _flat(path, native=True, batch=5) == expected
    monkeypatch.setattr(rdb_reader, "_NATIVE_AHEAD", 3 * chunk)  # big records go the general way
    assert _flat(path, native=True, batch=1) == expected


@pytest.mark.parametrize("native", [True, False])
@pytest.mark.parametrize("grow", [1, 5, 4096, -3000])
def test_growing_file_reads_as_the_complete_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, native: bool, grow: int
) -> None:
    """A spool read while it is written (``feed``) gives what the complete file gives."""
    if native and NATIVE is None:
        pytest.skip("the compiled fast path is not built")
    path = tmp_path / "rich.rdb"
    path.write_bytes(_rdb(rich_body(random.Random(grow), n=120)))
    expected = _reference(path)
    monkeypatch.setattr(rdb_input, "_CHUNK", 512)
    assert _flat(path, native=native, grow=grow) == expected
    reader = RdbReader(path, as_of_ms=AS_OF, feed=_growing(path, 100)[1])
    assert reader.key_counts() == expected[2]  # a second pass reads the complete file


def test_growing_file_damage_gives_the_complete_files_error(tmp_path: Path) -> None:
    good = _rdb(rich_body(random.Random(1), n=60))
    cases = {
        "truncated": good[: len(good) // 2],
        "lying-length": _rdb(b"\xfe\x00\x00" + _str(b"k") + b"\x80\x7f\xff\xff\xff" + b"x" * 50),
        "trailing": good + b"extra",
        "bad-crc": good[:-8] + b"\x01" * 8,
        "short-header": b"REDIS00",
    }
    for name, data in cases.items():
        path = tmp_path / f"{name}.rdb"
        path.write_bytes(data)
        expected = _reference(path)
        assert expected[0] == "error", name
        assert _flat(path, native=NATIVE is not None, grow=-200) == expected, name


@needs_native
def test_native_takes_the_common_encodings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Of the generated records, only zsets with text scores (type 3) reach the general
    path: every other encoding is taken by the compiled path."""
    calls: list[int] = []
    original = _Parser.key_value

    def counting(self: Any, kind: int, expire: int | None, at: int) -> Any:
        calls.append(kind)
        return original(self, kind, expire, at)

    monkeypatch.setattr(_Parser, "key_value", counting)
    path = tmp_path / "rich.rdb"
    path.write_bytes(_rdb(rich_body(random.Random(3), n=300)))
    expected = _reference(path)
    calls.clear()
    assert _flat(path, native=True) == expected
    assert set(calls) == {3}  # zsets with text scores


@needs_native
def test_native_big_values_and_integer_encodings(tmp_path: Path) -> None:
    members = [b"member-%d" % i for i in range(3000)]
    scores = [b"a", 1 << 62, b"b", -(1 << 63), b"c", b"1e999", b"d", b"0.1", b"e", b"-0"]
    scores += [b"f", b"65504.5", b"g", b"3.4028234663852886e38", b"h", 1 << 53 | 1]
    zset2 = [(b"x", 1e-320), (b"y", -2.5), (b"w", 1 / 3), (b"v", 2.0**-24), (b"u", 1e300)]
    records = [
        b"\x02" + _str(b"big-set") + _len(len(members)) + b"".join(map(_str, members)),
        b"\x00" + _str(b"big-string") + _lzf_str(b"abcdefgh" * 5000),
        b"\x12" + _str(b"big-list") + _len(1) + _len(2) + _str(listpack(members)),
        b"\x0b" + _str(b"int64-set") + _str(intset([-(1 << 62), -1, 0, 1 << 40])),
        b"\x11" + _str(b"z") + _str(listpack(scores)),
        b"\x0c" + _str(b"zz") + _str(ziplist(scores)),
        b"\x05"
        + _str(b"z2")
        + _len(len(zset2))
        + b"".join(_str(m) + struct.pack("<d", v) for m, v in zset2),
        b"\xfc" + struct.pack("<q", -5) + b"\x00" + _str(b"negative-expiry") + _str(b"v"),
        b"\xfc" + struct.pack("<q", 1 << 40) + b"\x00\xc2" + struct.pack("<i", -7) + _str(b"v"),
    ]
    body = b"\xfe\x00" + b"".join(records)
    path = tmp_path / "big.rdb"
    path.write_bytes(_rdb(body))
    for as_of in (AS_OF, None):
        result = _same(path, as_of=as_of)
        assert result[0] == "ok", result
        assert result == _reference(path, as_of=as_of)


@needs_native
def test_native_values_larger_than_the_buffer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Records larger than the buffer: the compiled path widens the buffer for them, and
    leaves those past its limit to the general path; the pairs are the reference's."""
    path = tmp_path / "big.rdb"
    path.write_bytes(_rdb(big_body()))
    expected = _reference(path)
    assert expected[0] == "ok", expected
    monkeypatch.setattr(rdb_input, "_CHUNK", 4096)
    assert _same(path) == expected
    calls: list[int] = []
    original = _Parser.key_value

    def counting(self: Any, kind: int, expire: int | None, at: int) -> Any:
        calls.append(kind)
        return original(self, kind, expire, at)

    monkeypatch.setattr(_Parser, "key_value", counting)
    monkeypatch.setattr(rdb_reader, "_NATIVE_AHEAD", 8192)
    assert _flat(path, native=True) == expected
    assert calls == [2, 18]  # the set and the list exceed the limit


@needs_native
@pytest.mark.parametrize("seed", range(40))
def test_native_damage_gives_the_general_paths_error(tmp_path: Path, seed: int) -> None:
    """Random damage (with and without a matching CRC-64): both paths give the same pairs
    or refuse with the same message, the reference's."""
    for attempt, data in enumerate(damaged(seed)):
        path = tmp_path / f"damaged-{attempt}.rdb"
        path.write_bytes(data)
        assert _same(path) == _reference(path)


def _counts(path: Path, *, native: bool, as_of: int | None = AS_OF) -> Any:
    """What a fresh reader's key counts pass gives (the compiled path counts when it is
    there): ``("ok", counts, version, datasets)`` or ``("error", message)``."""
    saved = rdb._NATIVE
    rdb._NATIVE = NATIVE if native else None
    try:
        reader = RdbReader(path, as_of_ms=as_of, keep_expired=as_of is None)
        try:
            return ("ok", reader.key_counts(), reader.version, reader.datasets())
        except FormatError as exc:
            return ("error", str(exc))
    finally:
        rdb._NATIVE = saved


@needs_native
def test_native_key_counts_equal_the_general_paths(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``key_counts``, ``version`` and ``datasets`` of a fresh reader count through the
    compiled path: the same counts, or the same error, as the general path's."""
    calls: list[int] = []
    original = _Parser.key_value

    def counting(self: Any, kind: int, expire: int | None, at: int) -> Any:
        calls.append(kind)
        return original(self, kind, expire, at)

    rich = tmp_path / "rich.rdb"
    rich.write_bytes(_rdb(rich_body(random.Random(3), n=300)))
    with monkeypatch.context() as patch:
        patch.setattr(_Parser, "key_value", counting)
        assert _counts(rich, native=True)[0] == "ok"
    assert set(calls) == {3}  # the compiled path counted all but the zsets with text scores
    files = [_rdb(rich_body(random.Random(seed), n=200)) for seed in range(3)]
    files += damaged(7) + damaged(8) + [_rdb(big_body())]
    for i, data in enumerate(files):
        path = tmp_path / f"{i}.rdb"
        path.write_bytes(data)
        for as_of in (AS_OF, None):
            assert _counts(path, native=True, as_of=as_of) == _counts(
                path, native=False, as_of=as_of
            )
    if SHARED_RDB.is_dir():
        for path in sorted(p for p in SHARED_RDB.rglob("*") if p.is_file()):
            assert _counts(path, native=True) == _counts(path, native=False), path


@needs_native
@pytest.mark.parametrize(
    "record",
    [
        b"\x02" + _str(b"s") + _len(2) + _str(b"1") + b"\xc0\x01",  # duplicate member
        b"\x14" + _str(b"s") + _str(listpack([b"7", 7])),
        b"\x0b" + _str(b"s") + _str(struct.pack("<IIhh", 2, 2, 3, 3)),
        b"\x04" + _str(b"h") + _len(2) + (_str(b"f") + _str(b"v")) * 2,
        b"\x10" + _str(b"h") + _str(listpack([b"f", 1, b"f", 2])),
        b"\x0d" + _str(b"h") + _str(ziplist([b"f", 1, b"g"])),
        b"\x11" + _str(b"z") + _str(listpack([b"m", 1, b"m", 2])),
        b"\x11" + _str(b"z") + _str(listpack([b"m", b"nan"])),
        b"\x11" + _str(b"z") + _str(listpack([b"m", b"1.5x"])),
        b"\x11" + _str(b"z") + _str(listpack([b"m", b" 1.5"])),
        b"\x11" + _str(b"z") + _str(listpack([b"m", b"1_5"])),
        b"\x11" + _str(b"z") + _str(listpack([b"m"])),
        b"\x05" + _str(b"z") + _len(1) + _str(b"m") + struct.pack("<d", float("nan")),
        b"\x12" + _str(b"l") + _len(1) + _len(3) + _str(b"x"),
        b"\x12" + _str(b"l") + _len(1) + _len(2) + _str(b"\x07\x00\x00\x00\x01\x00\xff"),
        b"\x12" + _str(b"l") + _len(1) + _len(2) + b"\xc0\x07",  # an integer for a listpack
        b"\x00" + _str(b"k") + b"\xc3\x02\x0a\x00a\x20",
        b"\x00" + _str(b"k") + b"\xc4",
        b"\x00" + _str(b"k") + b"\x82",
        # an expired set with a duplicate member is still refused
        b"\xfc" + struct.pack("<q", 1) + b"\x02" + _str(b"s") + _len(2) + _str(b"a") * 2,
        b"\xf8\xc0" + b"\x00" + _str(b"k") + _str(b"v"),  # an encoded IDLE length
    ],
)
def test_native_refuses_what_the_reference_refuses(tmp_path: Path, record: bytes) -> None:
    path = tmp_path / "bad.rdb"
    path.write_bytes(_rdb(b"\xfe\x00\x00" + _str(b"ok") + _str(b"v") + record))
    result = _same(path)
    assert result == _reference(path)


@needs_native
def test_native_on_the_genuine_files() -> None:
    if not SHARED_RDB.is_dir():
        pytest.skip(f"{SHARED_RDB} is absent: genuine sample files come with the shared folder")
    files = sorted(p for p in SHARED_RDB.rglob("*") if p.is_file())
    assert files
    for path in files:
        assert _same(path) == _reference(path), path


@needs_native
def test_native_scan_checks_its_arguments() -> None:
    assert NATIVE is not None
    tag = record_tag("exact")
    with pytest.raises(ValueError, match="pos"):
        NATIVE.scan(b"abc", 2, 1, None, None, tag, 10)
    with pytest.raises(ValueError, match="pos"):
        NATIVE.scan(b"abc", 0, 4, None, None, tag, 10)
    assert NATIVE.scan(b"", 0, 0, 5, None, tag, 10) == (0, 5, NATIVE.MORE, [], b"")
    assert NATIVE.scan(b"\xfe", 0, 1, None, None, tag, 10)[2] == NATIVE.STOP
    assert NATIVE.scan(b"\x00\x01k\x01v", 0, 5, None, None, tag, 0)[2] == NATIVE.FULL


def test_pure_python_switch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AFFIDAVIT_PURE_PYTHON", "1")
    assert rdb._load_native() is None
    monkeypatch.setenv("AFFIDAVIT_PURE_PYTHON", "0")
    built = importlib.util.find_spec("affidavit.formats.rdb._native") is not None
    assert (rdb._load_native() is not None) == built


# --- hostile input -------------------------------------------------------------------------


def _seeds() -> list[bytes]:
    seeds = [_rdb(rich_body(random.Random(s), n=30)) for s in range(3)]
    if SHARED_RDB.is_dir():
        genuine = sorted(p for p in SHARED_RDB.rglob("*.rdb") if p.stat().st_size < 20_000)
        seeds += [p.read_bytes() for p in genuine[:40]]
    return seeds


SEEDS = _seeds()

mutation = st.tuples(
    st.sampled_from(["set", "delete", "insert", "flip", "length"]),
    st.floats(min_value=0, max_value=1, exclude_max=True),
    st.binary(min_size=1, max_size=6),
)


def _mutate(data: bytes, mutations: list[tuple[str, float, bytes]], cut: float | None) -> bytes:
    out = bytearray(data)
    for action, where, payload in mutations:
        at = 9 + int(where * max(1, len(out) - 9))
        if action == "set":
            out[at : at + len(payload)] = payload
        elif action == "delete":
            del out[at : at + len(payload)]
        elif action == "insert":
            out[at:at] = payload
        elif action == "flip" and at < len(out):
            out[at] ^= 1 << (payload[0] % 8)
        elif action == "length":  # a lying length: a big one in the 32/64-bit forms
            out[at:at] = (b"\x80" + payload[:4].rjust(4, b"\xff"))[: 1 + len(payload)]
    if cut is not None:
        out = out[: 9 + int(cut * max(0, len(out) - 9))]
    return bytes(out)


@needs_native
@settings(
    max_examples=400,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    seed=st.sampled_from(range(len(SEEDS))),
    mutations=st.lists(mutation, min_size=1, max_size=4),
    cut=st.one_of(st.none(), st.floats(min_value=0, max_value=1)),
    fix_crc=st.booleans(),
    chunk=st.sampled_from([3, 64, 1 << 20]),
)
def test_native_on_mutated_files(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    seed: int,
    mutations: list[tuple[str, float, bytes]],
    cut: float | None,
    fix_crc: bool,
    chunk: int,
) -> None:
    """Damaged files (with or without a matching CRC-64, so that damage reaches the record
    parsers): the compiled path gives what the pure-Python path gives, records or error."""
    data = _mutate(SEEDS[seed], mutations, cut)
    if fix_crc and len(data) > 17:
        data = data[:-8] + struct.pack("<Q", rdb.crc64(data[:-8]))
    path = tmp_path / "mutated.rdb"
    path.write_bytes(data)
    monkeypatch.setattr(rdb_input, "_CHUNK", chunk)
    result = _same(path, batch=3)
    assert _flat(path, native=True, batch=3, grow=-(chunk * 3)) == result


@needs_native
@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(body=st.binary(max_size=300), prefix=st.sampled_from([b"", b"\xfe\x00", b"\x00\x01k"]))
def test_native_on_random_bytes(tmp_path: Path, body: bytes, prefix: bytes) -> None:
    path = tmp_path / "random.rdb"
    path.write_bytes(_rdb(prefix + body))
    _same(path)
