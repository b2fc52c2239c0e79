"""The RDB record parser (the general path: every record read through ``_Input``) on
generated files: every encoding, whatever the buffer boundaries, the expiries or the damage
(records or a ``FormatError``, nothing else); the blob parsers and LZF against references.

The writers of the encodings here are shared with ``test_rdb_native.py``, which holds the
compiled path to this one."""

from __future__ import annotations

import random
import struct
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from affidavit.errors import FormatError
from affidavit.formats.rdb import (
    RdbReader,
    crc64,
    lzf_decompress,
    parse_listpack,
)
from affidavit.formats.rdb import input as rdb_input
from affidavit.formats.rdb.parser import _Parser
from affidavit.models.records import RedisRecord

AS_OF = 1_700_000_000_000
SHARED_RDB = Path(__file__).resolve().parents[3].parent / "shared" / "formats" / "redis-rdb"

# --- writers of the encodings -----------------------------------------------------------------


def _len(n: int) -> bytes:
    if n < 64:
        return bytes([n])
    if n < 16384:
        return bytes([0x40 | (n >> 8), n & 0xFF])
    if n < 1 << 32:
        return b"\x80" + struct.pack(">I", n)
    return b"\x81" + struct.pack(">Q", n)


def _str(s: bytes) -> bytes:
    return _len(len(s)) + s


def _int_str(v: int) -> bytes:
    """A string saved in one of the integer encodings."""
    if -128 <= v < 128:
        return b"\xc0" + struct.pack("<b", v)
    if -32768 <= v < 32768:
        return b"\xc1" + struct.pack("<h", v)
    return b"\xc2" + struct.pack("<i", v)


def lzf_compress(data: bytes) -> bytes:
    """A tiny greedy LZF compressor (literal runs and back references, overlapping ones
    included); slow, for test inputs only."""
    out = bytearray()
    literal = bytearray()

    def flush() -> None:
        for i in range(0, len(literal), 32):
            chunk = literal[i : i + 32]
            out.append(len(chunk) - 1)
            out.extend(chunk)
        literal.clear()

    i = 0
    while i < len(data):
        best, dist = 0, 0
        for d in range(1, min(i, 300) + 1):
            n = 0
            while n < 264 and i + n < len(data) and data[i + n - d] == data[i + n]:
                n += 1
            if n > best:
                best, dist = n, d
        if best >= 3:
            flush()
            run, off = best - 2, dist - 1
            if run < 7:
                out += bytes([(run << 5) | (off >> 8), off & 0xFF])
            else:
                out += bytes([0xE0 | (off >> 8), run - 7, off & 0xFF])
            i += best
        else:
            literal.append(data[i])
            i += 1
    flush()
    return bytes(out)


def _lzf_str(s: bytes) -> bytes:
    packed = lzf_compress(s)
    return b"\xc3" + _len(len(packed)) + _len(len(s)) + packed


def _backlen(n: int) -> bytes:
    out = [n & 0x7F]
    n >>= 7
    while n:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    return bytes(reversed(out))


def lp_entry(v: bytes | int) -> bytes:
    if isinstance(v, int):
        if 0 <= v < 128:
            e = bytes([v])
        elif -4096 <= v < 4096:
            raw = v & 0x1FFF
            e = bytes([0xC0 | (raw >> 8), raw & 0xFF])
        else:
            for enc, size in ((0xF1, 2), (0xF2, 3), (0xF3, 4), (0xF4, 8)):
                if -(1 << (8 * size - 1)) <= v < 1 << (8 * size - 1):
                    e = bytes([enc]) + v.to_bytes(size, "little", signed=True)
                    break
    elif len(v) < 64:
        e = bytes([0x80 | len(v)]) + v
    elif len(v) < 4096:
        e = bytes([0xE0 | (len(v) >> 8), len(v) & 0xFF]) + v
    else:
        e = b"\xf0" + struct.pack("<I", len(v)) + v
    return e + _backlen(len(e))


def listpack(values: Sequence[bytes | int]) -> bytes:
    body = b"".join(lp_entry(v) for v in values)
    return struct.pack("<IH", 7 + len(body), min(len(values), 0xFFFF)) + body + b"\xff"


def ziplist(values: Sequence[bytes | int]) -> bytes:
    entries = []
    prev = 0
    for v in values:
        pre = bytes([prev]) if prev < 254 else b"\xfe" + struct.pack("<I", prev)
        if isinstance(v, int):
            if 0 <= v <= 12:
                enc = bytes([0xF1 + v])
            elif -128 <= v < 128:
                enc = b"\xfe" + struct.pack("<b", v)
            elif -32768 <= v < 32768:
                enc = b"\xc0" + struct.pack("<h", v)
            elif -(1 << 23) <= v < 1 << 23:
                enc = b"\xf0" + v.to_bytes(3, "little", signed=True)
            elif -(1 << 31) <= v < 1 << 31:
                enc = b"\xd0" + struct.pack("<i", v)
            else:
                enc = b"\xe0" + struct.pack("<q", v)
        elif len(v) < 64:
            enc = bytes([len(v)]) + v
        elif len(v) < 16384:
            enc = bytes([0x40 | (len(v) >> 8), len(v) & 0xFF]) + v
        else:
            enc = b"\x80" + struct.pack(">I", len(v)) + v
        entry = pre + enc
        entries.append(entry)
        prev = len(entry)
    body = b"".join(entries)
    tail = 10 + len(body) - len(entries[-1]) if entries else 10
    head = struct.pack("<IIH", 11 + len(body), tail, min(len(values), 0xFFFF))
    return head + body + b"\xff"


def intset(values: Sequence[int]) -> bytes:
    width = 2 if all(-32768 <= v < 32768 for v in values) else 8
    fmt = "<h" if width == 2 else "<q"
    return struct.pack("<II", width, len(values)) + b"".join(
        struct.pack(fmt, v) for v in sorted(values)
    )


def _rdb(body: bytes, version: int = 10) -> bytes:
    data = b"REDIS%04d" % version + body + b"\xff"
    return data + struct.pack("<Q", crc64(data))


def _blob(blob: bytes, compress: bool) -> bytes:
    return _lzf_str(blob) if compress else _str(blob)


def _key(i: int) -> bytes:
    return _int_str(i) if i % 11 == 0 else _str(b"key:%d" % i)


def rich_body(rng: random.Random, n: int = 240) -> bytes:
    """Records of every value type and encoding but streams, hash field expiry and modules
    (those the compiled path takes and some it leaves to the general path), with expiries
    (some already expired), two databases and AUX fields."""
    parts = [b"\xfa" + _str(b"redis-ver") + _str(b"7.2.4"), b"\xfe\x00\xfb" + _len(n) + b"\x00"]
    for i in range(n):
        if i == n // 2:
            parts.append(b"\xfe\x03")
        if i % 7 == 0:
            parts.append(b"\xfc" + struct.pack("<q", AS_OF + rng.randint(-(10**6), 10**9)))
        if i % 13 == 0:
            parts.append(b"\xfd" + struct.pack("<i", AS_OF // 1000 + rng.randint(-1000, 1000)))
        key = _key(i)
        words = [b"w%d" % rng.randint(0, 40) for _ in range(rng.randint(0, 5))]
        nums = [rng.choice([0, 7, 127, 128, -1, 4095, -4096, 40000, -(1 << 22), 1 << 30, 1 << 40])
                for _ in range(rng.randint(0, 4))]  # fmt: skip
        values: list[bytes | int] = [*dict.fromkeys(words), *dict.fromkeys(nums)]
        long = b"x" * rng.choice([1, 63, 64, 300, 5000])
        kind = i % 16
        compress = rng.random() < 0.4
        if kind == 0:
            parts.append(b"\x00" + key + _str(b"v%d" % i))
        elif kind == 1:
            parts.append(b"\x00" + key + rng.choice([_int_str(rng.randint(-(1 << 31), 1 << 31 - 1)),
                                                    _lzf_str(long + b"abc" * 30), _str(long)]))  # fmt: skip
        elif kind == 2:  # set (hashtable)
            members = list(dict.fromkeys(words + [b"%d" % v for v in nums] + [long]))
            enc = [_int_str(int(m)) if m.lstrip(b"-").isdigit() and abs(int(m)) < 1 << 31
                   else _str(m) for m in members]  # fmt: skip
            parts.append(b"\x02" + key + _len(len(members)) + b"".join(enc))
        elif kind == 3:  # set listpack / intset
            if nums and rng.random() < 0.5:
                parts.append(b"\x0b" + key + _blob(intset(sorted(set(nums))), compress))
            else:
                parts.append(b"\x14" + key + _blob(listpack(values), compress))
        elif kind == 4:  # hash (hashtable)
            fields = list(dict.fromkeys(words))
            parts.append(b"\x04" + key + _len(len(fields) + 1) + b"".join(
                _str(w) + _str(b"val") for w in fields) + _str(b"f") + _lzf_str(long))  # fmt: skip
        elif kind == 5:  # hash listpack / ziplist
            flat: list[bytes | int] = []
            for f in dict.fromkeys(words):
                flat += [f, rng.choice([b"v", 5, 300, long[:70]])]
            enc = listpack if rng.random() < 0.5 else ziplist
            parts.append(
                (b"\x10" if enc is listpack else b"\x0d") + key + _blob(enc(flat), compress)
            )
        elif kind == 6:  # zset listpack / ziplist (scores as text and as integers)
            flat = []
            for m in dict.fromkeys(words):
                flat += [m, rng.choice([b"1.5", b"-0", b"inf", b"-inf", b"1e3", 42, -7, 1 << 40])]
            enc = listpack if rng.random() < 0.5 else ziplist
            parts.append(
                (b"\x11" if enc is listpack else b"\x0c") + key + _blob(enc(flat), compress)
            )
        elif kind == 7:  # zset2 (binary scores)
            members = list(dict.fromkeys(words))
            parts.append(b"\x05" + key + _len(len(members)) + b"".join(
                _str(m) + struct.pack("<d", rng.choice([0.0, -0.0, 2.5, float("inf")]))
                for m in members))  # fmt: skip
        elif kind == 8:  # quicklist 2: listpack and PLAIN nodes
            nodes = [(2, listpack(values)), (1, long), (2, listpack([]))][: rng.randint(0, 3)]
            parts.append(b"\x12" + key + _len(len(nodes)) + b"".join(
                _len(c) + (_blob(payload, compress) if c == 2 else _str(payload))
                for c, payload in nodes))  # fmt: skip
        elif kind == 9:  # quicklist (ziplist nodes)
            nodes_zl = [ziplist(values), ziplist([b"a", long])][: rng.randint(0, 2)]
            parts.append(b"\x0e" + key + _len(len(nodes_zl)) + b"".join(
                _blob(z, compress) for z in nodes_zl))  # fmt: skip
        elif kind == 10:  # linked list
            parts.append(b"\x01" + key + _len(len(words)) + b"".join(_str(w) for w in words))
        elif kind == 11:  # ziplist list
            parts.append(b"\x0a" + key + _blob(ziplist(values), compress))
        elif kind == 12:  # zset with text scores: the compiled path leaves it to Python
            members = list(dict.fromkeys(words))
            parts.append(b"\x03" + key + _len(len(members)) + b"".join(
                _str(m) + b"\x032.5" for m in members))  # fmt: skip
        elif kind == 13:  # LFU/LRU hints before a key
            parts.append(b"\xf9\x05\xf8\x10\x00" + key + _str(long))
        elif kind == 14:  # a string with a 14-bit and a 32-bit length prefix
            parts.append(b"\x00" + key + b"\x80" + struct.pack(">I", 70) + b"y" * 70)
        else:
            parts.append(b"\x00" + key + _str(b""))  # an empty string is a value
    return b"".join(parts)


# --- the general path ---------------------------------------------------------------------------


def _outcome(path: Path) -> tuple[Any, ...]:
    """What ``iter_all`` (the general path) reads: ``("ok", records, counts, version)`` or
    ``("error", message)``; any exception but ``FormatError`` fails the test."""
    reader = RdbReader(path, as_of_ms=AS_OF)
    try:
        records = list(reader.iter_all())
    except FormatError as exc:
        return ("error", str(exc))
    return ("ok", records, reader.key_counts(), reader.version)


def _chunked(path: Path, monkeypatch: pytest.MonkeyPatch, chunk: int) -> tuple[Any, ...]:
    """:func:`_outcome` with the file read ``chunk`` bytes at a time."""
    with monkeypatch.context() as patch:
        patch.setattr(rdb_input, "_CHUNK", chunk)
        return _outcome(path)


@pytest.fixture
def general_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the records that the general path reads, by value type."""
    calls: list[int] = []
    original = _Parser.key_value

    def counting(self: Any, kind: int, expire: int | None, at: int) -> Any:
        calls.append(kind)
        return original(self, kind, expire, at)

    monkeypatch.setattr(_Parser, "key_value", counting)
    return calls


def test_general_path_reads_every_encoding(tmp_path: Path, general_calls: list[int]) -> None:
    path = tmp_path / "rich.rdb"
    path.write_bytes(_rdb(rich_body(random.Random(5))))
    result = _outcome(path)
    assert result[0] == "ok", result
    # every value type the writers above write
    assert set(general_calls) == {0, 1, 2, 3, 4, 5, 10, 11, 12, 13, 14, 16, 17, 18, 20}
    records = result[1]
    assert {name for name, _ in records} == {"db0", "db3"}
    assert {r.type for _, r in records} == {"string", "list", "set", "zset", "hash"}


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("chunk", [1, 7, 64, 1000])
def test_general_path_across_every_chunk_boundary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, seed: int, chunk: int
) -> None:
    path = tmp_path / "rich.rdb"
    path.write_bytes(_rdb(rich_body(random.Random(seed), n=60)))
    expected = _outcome(path)
    assert expected[0] == "ok", expected
    assert _chunked(path, monkeypatch, chunk) == expected


def big_body() -> bytes:
    """A set, a string and a list larger than a 4 KiB buffer, then a small key."""
    members = [b"member-%d" % i for i in range(3000)]
    return b"\xfe\x00" + b"".join(
        [
            b"\x02" + _str(b"big-set") + _len(len(members)) + b"".join(map(_str, members)),
            b"\x00" + _str(b"big-string") + _lzf_str(b"abcdefgh" * 5000),
            b"\x12" + _str(b"big-list") + _len(1) + _len(2) + _str(listpack(members)),
            b"\x00" + _str(b"after") + _str(b"ok"),
        ]
    )


def test_general_path_values_larger_than_the_buffer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "big.rdb"
    path.write_bytes(_rdb(big_body()))
    ok = _outcome(path)
    assert ok[0] == "ok", ok
    assert ok[2] == {"db0": 4}
    assert _chunked(path, monkeypatch, 4096) == ok


def damaged(seed: int) -> list[bytes]:
    """Twelve random damages of a generated file (bytes set, deleted, inserted, the file cut),
    every other one with a matching CRC-64 so that the damage reaches the record parsers."""
    rng = random.Random(seed)
    good = bytearray(_rdb(rich_body(random.Random(seed % 4), n=40))[:-8])
    out = []
    for attempt in range(12):
        data = bytearray(good)
        for _ in range(rng.randint(1, 4)):
            at = rng.randrange(9, len(data))
            action = rng.random()
            if action < 0.6:
                data[at] = rng.randrange(256)
            elif action < 0.8:
                del data[at : at + rng.randint(1, 6)]
            else:
                data[at:at] = rng.randbytes(rng.randint(1, 4))
        if attempt % 3 == 0:
            data = data[: rng.randrange(9, len(data))]
        crc = crc64(bytes(data)) if attempt % 2 else 0x1234
        out.append(bytes(data) + struct.pack("<Q", crc))
    return out


@pytest.mark.parametrize("seed", range(40))
def test_general_path_damage_gives_records_or_a_format_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, seed: int
) -> None:
    """Random damage: the general path reads records or refuses with a ``FormatError``
    (never another exception), the same whatever the buffer boundaries."""
    for attempt, data in enumerate(damaged(seed)):
        path = tmp_path / f"damaged-{attempt}.rdb"
        path.write_bytes(data)
        assert _chunked(path, monkeypatch, 64) == _outcome(path)


def test_general_path_on_the_genuine_files(monkeypatch: pytest.MonkeyPatch) -> None:
    if not SHARED_RDB.is_dir():
        pytest.skip(f"{SHARED_RDB} is absent: genuine sample files come with the shared folder")
    files = sorted(p for p in SHARED_RDB.rglob("*") if p.is_file())
    assert files
    for path in files:
        assert _chunked(path, monkeypatch, 4096) == _outcome(path), path


def test_general_path_drops_expired_keys_and_empty_aggregates(tmp_path: Path) -> None:
    body = b"\xfe\x00" + b"".join(
        [
            b"\xfc" + struct.pack("<q", AS_OF - 1) + b"\x00" + _str(b"gone") + _str(b"v"),
            b"\xfc" + struct.pack("<q", AS_OF) + b"\x00" + _str(b"kept") + _str(b"v"),
            b"\x10" + _str(b"empty-hash") + _str(listpack([])),
            b"\x12" + _str(b"empty-list") + _len(1) + _len(2) + _str(listpack([])),
            b"\x02" + _str(b"empty-set") + _len(0),
            b"\x00" + _str(b"empty-string") + _str(b""),
        ]
    )
    path = tmp_path / "drops.rdb"
    path.write_bytes(_rdb(body))
    result = _outcome(path)
    assert [r.key for _, r in result[1]] == [b"kept", b"empty-string"]
    assert result[1][0][1].expire_at_ms == AS_OF
    assert result[2] == {"db0": 2}


#: damaged records, each with what the general path's error names
REFUSED = [
    (b"\x02" + _str(b"s") + _len(2) + _str(b"1") + _int_str(1), "duplicate member"),
    (b"\x14" + _str(b"s") + _str(listpack([b"7", 7])), "duplicate member"),
    (b"\x0b" + _str(b"s") + _str(struct.pack("<IIhh", 2, 2, 3, 3)), "corrupt intset"),
    (b"\x04" + _str(b"h") + _len(2) + (_str(b"f") + _str(b"v")) * 2, "duplicate hash"),
    (b"\x10" + _str(b"h") + _str(listpack([b"f", 1, b"f", 2])), "duplicate hash"),
    (b"\x0d" + _str(b"h") + _str(ziplist([b"f", 1, b"g"])), "odd number"),
    (b"\x11" + _str(b"z") + _str(listpack([b"m", 1, b"m", 2])), "duplicate zset"),
    (b"\x11" + _str(b"z") + _str(listpack([b"m", b"nan"])), "NaN"),
    (b"\x11" + _str(b"z") + _str(listpack([b"m", b"1.5x"])), "malformed zset score"),
    (b"\x11" + _str(b"z") + _str(listpack([b"m"])), "odd number"),
    (b"\x05" + _str(b"z") + _len(1) + _str(b"m") + struct.pack("<d", float("nan")), "NaN"),
    (b"\x05" + _str(b"z") + _len(2) + (_str(b"m") + struct.pack("<d", 1.0)) * 2, "duplicate"),
    (b"\x12" + _str(b"l") + _len(1) + _len(3) + _str(b"x"), "unknown quicklist container"),
    (
        b"\x12" + _str(b"l") + _len(1) + _len(2) + _str(b"\x07\x00\x00\x00\x01\x00\xff"),
        "corrupt quicklist listpack",
    ),
    (b"\x00" + _str(b"k") + b"\xc3\x02\x0a\x00a\x20", "LZF"),
    (b"\x00" + _str(b"k") + b"\xc4", "unknown string encoding"),
    (b"\x00" + _str(b"k") + b"\x82", "unknown length encoding"),
]


@pytest.mark.parametrize(("record", "match"), REFUSED)
def test_general_path_refuses_damaged_records(tmp_path: Path, record: bytes, match: str) -> None:
    path = tmp_path / "bad.rdb"
    path.write_bytes(_rdb(b"\xfe\x00\x00" + _str(b"ok") + _str(b"v") + record))
    result = _outcome(path)
    assert result[0] == "error"
    assert match in result[1]


def test_general_path_records_equal_constructed_records(tmp_path: Path) -> None:
    body = b"\xfe\x00\x10" + _str(b"h") + _str(listpack([b"a", 1, b"b", b"x"]))
    path = tmp_path / "h.rdb"
    path.write_bytes(_rdb(body))
    (record,) = list(RdbReader(path).records("db0"))
    assert record == RedisRecord(key=b"h", type="hash", value=((b"a", b"1"), (b"b", b"x")))
    assert hash(record) == hash(
        RedisRecord(key=b"h", type="hash", value=((b"a", b"1"), (b"b", b"x")))
    )


# --- the blob parsers and LZF ------------------------------------------------------------------


def _parse_or_error(fn: Any, blob: bytes) -> Any:
    try:
        return fn(blob)
    except ValueError as exc:
        return ("error", str(exc))


entries = st.lists(
    st.one_of(
        st.binary(max_size=70),
        st.integers(min_value=-(1 << 63), max_value=(1 << 63) - 1),
        st.sampled_from([0, 127, 128, 4095, -4096, 4096, 32767, -32768, 1 << 23, -(1 << 23)]),
        st.binary(min_size=4090, max_size=4100),
    ),
    max_size=12,
)


@settings(max_examples=300, deadline=None)
@given(entries, st.data())
def test_parse_listpack_reads_what_was_written(values: list[bytes | int], data: Any) -> None:
    blob = listpack(values)
    assert parse_listpack(blob) == values
    # damaged: entries or a ValueError, never another exception (IndexError, struct.error)
    damaged = bytearray(blob)
    for _ in range(data.draw(st.integers(1, 3))):
        at = data.draw(st.integers(0, len(damaged) - 1))
        damaged[at] = data.draw(st.integers(0, 255))
    if data.draw(st.booleans()):
        damaged = damaged[: data.draw(st.integers(0, len(damaged)))]
    result = _parse_or_error(parse_listpack, bytes(damaged))
    assert isinstance(result, (list, tuple))


@pytest.mark.parametrize("tail", [b"\xc5", b"\xc5\x01", b"\xf1\x01", b"\xf2\x01\x02", b"\xf3",
                                  b"\xf4\x01", b"\xe1\x05ab", b"\xf0\x01\x00", b"\x85ab"])  # fmt: skip
def test_parse_listpack_entries_cut_at_the_end(tail: bytes) -> None:
    for blob in (
        struct.pack("<IH", 6 + len(tail), 1) + tail,
        struct.pack("<IH", 7 + len(tail), 1) + tail + b"\xff",
        struct.pack("<IH", 8 + len(tail), 2) + b"\x01\x01" + tail,
    ):
        assert isinstance(_parse_or_error(parse_listpack, blob), tuple)


def _reference_lzf(data: bytes, expected: int) -> bytes:
    """The plain reading of the LZF format: the reference the fast decoder is held to."""
    out = bytearray()
    i = 0
    while i < len(data):
        ctrl = data[i]
        i += 1
        if ctrl < 32:
            if i + ctrl + 1 > len(data):
                raise ValueError("literal run past the end of the compressed data")
            if len(out) + ctrl + 1 > expected:
                raise ValueError("output longer than the declared length")
            out += data[i : i + ctrl + 1]
            i += ctrl + 1
            continue
        run = ctrl >> 5
        if run == 7:
            if i >= len(data):
                raise ValueError("back reference past the end of the compressed data")
            run += data[i]
            i += 1
        if i >= len(data):
            raise ValueError("back reference past the end of the compressed data")
        ref = len(out) - ((ctrl & 0x1F) << 8) - 1 - data[i]
        i += 1
        if ref < 0:
            raise ValueError("back reference before the start of the output")
        if len(out) + run + 2 > expected:
            raise ValueError("output longer than the declared length")
        for _ in range(run + 2):
            out.append(out[ref])
            ref += 1
    if len(out) != expected:
        raise ValueError(f"decompressed to {len(out)} bytes, declared {expected}")
    return bytes(out)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200), st.binary(max_size=40), st.integers(0, 700))
def test_lzf_decompress_matches_the_reference(plain: bytes, noise: bytes, declared: int) -> None:
    packed = lzf_compress(plain * 3)
    assert lzf_decompress(packed, len(plain) * 3) == plain * 3
    for data, size in ((noise, declared), (packed[: len(packed) // 2], len(plain) * 3)):
        assert _parse_or_error(lambda d, s=size: lzf_decompress(d, s), data) == _parse_or_error(
            lambda d, s=size: _reference_lzf(d, s), data
        )
