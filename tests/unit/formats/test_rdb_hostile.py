"""Hostile and damaged RDB files: a clear FormatError (exit 2) naming the byte offset, in
bounded time and memory, never a hang, a traceback or a wrong count."""

from __future__ import annotations

import struct
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import pytest

from affidavit.constants import ExitCode
from affidavit.errors import FormatError
from affidavit.formats.rdb import RdbReader, crc64


def _len(n: int) -> bytes:
    if n < 64:
        return bytes([n])
    if n < 16384:
        return bytes([0x40 | (n >> 8), n & 0xFF])
    return b"\x80" + struct.pack(">I", n)


def _str(s: bytes) -> bytes:
    return _len(len(s)) + s


def _rdb(body: bytes, version: int = 9) -> bytes:
    """A complete RDB file: header, ``body``, EOF and the CRC-64."""
    data = b"REDIS%04d" % version + body + b"\xff"
    return data + struct.pack("<Q", crc64(data)) if version >= 5 else data


VALID_BODY = (
    b"\xfa" + _str(b"redis-ver") + _str(b"7.0.15")
    + b"\xfe\x00\xfb\x02\x00"
    + b"\x00" + _str(b"greeting") + _str(b"hello world")
    + b"\x02" + _str(b"tags") + _len(2) + _str(b"red") + _str(b"blue")
)  # fmt: skip


def _write(tmp_path: Path, data: bytes, name: str = "hostile.rdb") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def _read_all(path: Path) -> dict[str, int]:
    reader = RdbReader(path)
    counts = reader.key_counts()
    for dataset in counts:
        for _ in reader.records(dataset):
            pass
    return counts


def _refused(path: Path, match: str) -> FormatError:
    start = time.monotonic()
    tracemalloc.start()
    try:
        with pytest.raises(FormatError, match=match) as info:
            _read_all(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert time.monotonic() - start < 5.0
    assert peak < 64 * 1024 * 1024
    assert info.value.exit_code == ExitCode.BAD_INPUT
    assert str(path) in str(info.value)
    return info.value


def test_rdb_hostile_valid_fixture_reads(tmp_path: Path) -> None:
    path = _write(tmp_path, _rdb(VALID_BODY))
    assert _read_all(path) == {"db0": 2}
    records = {r.key: r for r in RdbReader(path).records("db0")}
    assert records[b"greeting"].value == b"hello world"
    assert records[b"tags"].value == frozenset({b"red", b"blue"})


def test_rdb_hostile_wrong_magic(tmp_path: Path) -> None:
    path = _write(tmp_path, b"RADIS0009" + _rdb(VALID_BODY)[9:])
    _refused(path, r"wrong magic.*byte offset 0")


def test_rdb_hostile_empty_and_tiny_files(tmp_path: Path) -> None:
    _refused(_write(tmp_path, b"", "empty.rdb"), "wrong magic")
    _refused(_write(tmp_path, b"REDIS", "tiny.rdb"), "wrong magic")


def test_rdb_hostile_version_13_is_refused_with_its_number(tmp_path: Path) -> None:
    error = _refused(_write(tmp_path, _rdb(VALID_BODY, version=13)), r"version 13")
    assert "newer Redis" in error.hint


def test_rdb_hostile_valkey_file_is_refused_by_name(tmp_path: Path) -> None:
    data = b"VALKEY080" + _rdb(VALID_BODY)[9:]
    _refused(_write(tmp_path, data), r"Valkey RDB file \(VALKEY080")


def test_rdb_hostile_flipped_byte_fails_the_checksum(tmp_path: Path) -> None:
    data = bytearray(_rdb(VALID_BODY))
    data[data.index(b"hello")] ^= 0x20  # "Hello": still well-formed, content changed
    _refused(_write(tmp_path, bytes(data)), r"checksum mismatch")


def test_rdb_hostile_zero_checksum_means_disabled(tmp_path: Path) -> None:
    data = _rdb(VALID_BODY)[:-8] + b"\x00" * 8
    assert _read_all(_write(tmp_path, data)) == {"db0": 2}


@pytest.mark.parametrize("cut", [9, 10, 12, 20, 30, 45, -9, -3, -1])
def test_rdb_hostile_truncated(tmp_path: Path, cut: int) -> None:
    data = _rdb(VALID_BODY)
    _refused(_write(tmp_path, data[:cut]), r"(truncated|CRC-64).*byte offset \d+")


def test_rdb_hostile_trailing_bytes(tmp_path: Path) -> None:
    _refused(_write(tmp_path, _rdb(VALID_BODY) + b"junk"), "trailing data")


@pytest.mark.parametrize(
    "declared",
    [b"\x80\x7f\xff\xff\xff", b"\x81\x00\x00\x00\x10\x00\x00\x00\x00", b"\x81" + b"\xff" * 8],
)
def test_rdb_hostile_lying_length_does_not_allocate(tmp_path: Path, declared: bytes) -> None:
    body = b"\xfe\x00\x00" + _str(b"k") + declared + b"abc"
    _refused(_write(tmp_path, _rdb(body)), r"lying string value.*declared.*byte offset")


def test_rdb_hostile_lying_element_count(tmp_path: Path) -> None:
    body = b"\xfe\x00\x01" + _str(b"list") + b"\x80\x7f\xff\xff\xff" + _str(b"one")
    _refused(_write(tmp_path, _rdb(body)), r"truncated|lying")


def _lzf(clen_data: bytes, ulen: int) -> bytes:
    return b"\xc3" + _len(len(clen_data)) + _len(ulen) + clen_data


@pytest.mark.parametrize(
    ("payload", "ulen"),
    [
        (b"\x02abc\x80\x02", 5),  # expands past the declared length
        (b"\x02abc\x80\x02", 50),  # falls short of it
        (b"\x1fab", 40),  # literal run past the end
        (b"\xe0", 10),  # back reference without its bytes
        (b"\x00a\x20\x10", 10),  # back reference before the start
        (b"\x00a\xe0\xff\x00", 0x7FFFFFFF),  # a bomb: tiny input, huge declared output
    ],
)
def test_rdb_hostile_lzf_garbage(tmp_path: Path, payload: bytes, ulen: int) -> None:
    body = b"\xfe\x00\x00" + _str(b"k") + _lzf(payload, ulen)
    _refused(_write(tmp_path, _rdb(body)), r"LZF.*byte offset")


@pytest.mark.parametrize("op", [8, 26, 99, 243])
def test_rdb_hostile_unknown_type_or_opcode(tmp_path: Path, op: int) -> None:
    body = b"\xfe\x00" + bytes([op]) + _str(b"k") + _str(b"v")
    _refused(_write(tmp_path, _rdb(body)), rf"unknown opcode or value type {op}")


@pytest.mark.parametrize(
    ("kind", "blob"),
    [
        (13, b"\x0c\x00\x00\x00\x0a\x00\x00\x00\x00\x00\xff"),  # ziplist: wrong zlbytes
        (16, b"\x07\x00\x00\x00\x01\x00\xff"),  # listpack: count says 1, holds 0
        (11, b"\x03\x00\x00\x00\x01\x00\x00\x00\x07\x00\x00"),  # intset width 3
        (9, b"\x01\x05ab"),  # zipmap field past the end
    ],
)
def test_rdb_hostile_corrupt_blobs(tmp_path: Path, kind: int, blob: bytes) -> None:
    body = b"\xfe\x00" + bytes([kind]) + _str(b"k") + _str(blob)
    _refused(_write(tmp_path, _rdb(body)), r"corrupt .*byte offset")


def test_rdb_hostile_module_value_is_named(tmp_path: Path) -> None:
    module_id = 0
    for ch in "hellotype":
        module_id = (module_id << 6) | (
            "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_".index(ch)
        )
    module_id <<= 10
    body = b"\xfe\x00\x07" + _str(b"k") + b"\x81" + struct.pack(">Q", module_id)
    _refused(_write(tmp_path, _rdb(body)), r"module type 'hellotype' cannot be read")


def test_rdb_hostile_duplicate_set_member(tmp_path: Path) -> None:
    body = b"\xfe\x00\x02" + _str(b"s") + _len(2) + _str(b"a") + _str(b"a")
    _refused(_write(tmp_path, _rdb(body)), r"duplicate member")


@pytest.mark.parametrize("mutate", [lambda d: d[:-8] + bytes(8 - 1) + b"\x01"])
def test_rdb_hostile_wrong_nonzero_checksum(
    tmp_path: Path, mutate: Callable[[bytes], bytes]
) -> None:
    _refused(_write(tmp_path, mutate(_rdb(VALID_BODY))), "checksum mismatch")
