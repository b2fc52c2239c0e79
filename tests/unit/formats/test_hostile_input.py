"""Hostile and broken files: each fixture is named after its defect. Every one must give a
clear FormatError (exit 2) naming the offset, quickly, without a giant allocation."""

from __future__ import annotations

import gzip
import struct
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import bson
import pytest
from bson import json_util

from affidavit.constants import ExitCode
from affidavit.errors import FormatError
from affidavit.formats.bson_codec import (
    exact_record,
    logical_record_from_bson,
    logical_record_from_extjson,
)
from affidavit.formats.extjson import ExtJsonLinesReader
from affidavit.formats.mongodump import BsonFileReader
from affidavit.formats.mongodump_archive import ArchiveReader

DOCS = [bson.encode({"_id": i, "name": f"doc {i}", "pad": "x" * 50}) for i in range(3)]
GOOD = b"".join(DOCS)
HALF = len(DOCS[0]) + len(DOCS[1]) // 2
MAX_SECONDS = 2.0
MAX_PEAK_BYTES = 32 * 1024 * 1024  # a lying 2 GiB prefix must not allocate anything like it


def _read_bson(path: Path) -> list[bytes]:
    reader = BsonFileReader(path)
    return list(reader.records(reader.datasets()[0]))


def _read_archive(path: Path) -> list[tuple[str, bytes]]:
    return list(ArchiveReader(path, include_system=True, include_oplog=True).iter_all())


def _expect_format_error(read: Callable[[], object], *, match: str) -> FormatError:
    tracemalloc.start()
    started = time.monotonic()
    try:
        with pytest.raises(FormatError, match=match) as info:
            read()
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    assert time.monotonic() - started < MAX_SECONDS
    assert peak < MAX_PEAK_BYTES
    assert info.value.exit_code == ExitCode.BAD_INPUT
    return info.value


# --- .bson files ---------------------------------------------------------------------------


@pytest.fixture
def write(tmp_path: Path) -> Callable[[str, bytes], Path]:
    def _write(name: str, data: bytes) -> Path:
        path = tmp_path / name
        path.write_bytes(data)
        return path

    return _write


def test_truncated_file(write: Callable[[str, bytes], Path]) -> None:
    path = write("truncated_file.bson", GOOD[:HALF])
    err = _expect_format_error(lambda: _read_bson(path), match="truncated document")
    assert f"byte offset {len(DOCS[0])}" in err.message and str(path) in err.message


def test_truncated_inside_length_prefix(write: Callable[[str, bytes], Path]) -> None:
    path = write("truncated_prefix.bson", GOOD + b"\x10\x00")
    _expect_format_error(
        lambda: _read_bson(path), match=f"length prefix at byte offset {len(GOOD)}"
    )


@pytest.mark.parametrize(
    ("name", "length", "match"),
    [
        ("length_prefix_too_big_2gib", 2**31 - 1, "implausible BSON document length 2147483647"),
        ("length_prefix_over_16mib", 16 * 1024 * 1024 + 16 * 1024 + 1, "implausible"),
        ("length_prefix_negative", -5, "implausible BSON document length -5"),
        ("length_prefix_too_small", 4, "implausible BSON document length 4"),
        ("length_prefix_lies_long", len(DOCS[1]) + 40, "truncated document"),
    ],
)
def test_length_prefix_that_lies(
    write: Callable[[str, bytes], Path], name: str, length: int, match: str
) -> None:
    lying = struct.pack("<i", length) + DOCS[1][4:]
    path = write(f"{name}.bson", DOCS[0] + lying)
    err = _expect_format_error(lambda: _read_bson(path), match=match)
    assert f"byte offset {len(DOCS[0])}" in err.message


def test_length_prefix_lies_short(write: Callable[[str, bytes], Path]) -> None:
    """A prefix smaller than the document: the frame ends mid-document (not on NUL)."""
    lying = struct.pack("<i", len(DOCS[1]) - 3) + DOCS[1][4:]
    path = write("length_prefix_lies_short.bson", DOCS[0] + lying)
    _expect_format_error(lambda: _read_bson(path), match="last byte is not NUL|malformed")


def test_bad_element_inside_well_framed_document(write: Callable[[str, bytes], Path]) -> None:
    doc = bytearray(DOCS[0])
    doc[4] = 0xAA  # type byte of _id: unknown BSON type
    path = write("bad_type_byte.bson", bytes(doc))
    _expect_format_error(lambda: _read_bson(path), match="malformed BSON document")
    # framing-only validation lets it through; the codecs still refuse it
    reader = BsonFileReader(path, validate="framing")
    (raw,) = reader.records(reader.datasets()[0])
    with pytest.raises(FormatError, match="unknown BSON type 0xaa"):
        exact_record(raw)
    with pytest.raises(FormatError, match="unknown BSON type 0xaa"):
        logical_record_from_bson(raw)


def test_gzip_garbage(write: Callable[[str, bytes], Path]) -> None:
    path = write("gzip_garbage.bson.gz", b"\x1f\x8b" + bytes(range(256)) * 8)
    _expect_format_error(lambda: _read_bson(path), match="corrupt compressed stream")


def test_gzip_truncated(write: Callable[[str, bytes], Path]) -> None:
    packed = gzip.compress(GOOD * 50)
    path = write("gzip_truncated.bson.gz", packed[: len(packed) // 2])
    _expect_format_error(lambda: _read_bson(path), match="corrupt compressed stream|truncated")


def test_gzip_crc_flipped(write: Callable[[str, bytes], Path]) -> None:
    packed = bytearray(gzip.compress(GOOD))
    packed[-8] ^= 0xFF  # the gzip trailer's CRC-32
    path = write("gzip_crc_flipped.bson.gz", bytes(packed))
    _expect_format_error(lambda: _read_bson(path), match="corrupt compressed stream")


def test_gzip_good_reads(write: Callable[[str, bytes], Path]) -> None:
    path = write("good.bson.gz", gzip.compress(GOOD))
    assert _read_bson(path) == DOCS


# --- archives ------------------------------------------------------------------------------


def _archive(*, magic: bytes = b"\x6d\xe2\x99\x81") -> bytes:
    header = bson.encode({"concurrent_collections": 1, "version": "0.1"})
    meta = bson.encode({"db": "d", "collection": "c", "metadata": "{}", "size": 0})
    ns = {"db": "d", "collection": "c"}
    block = bson.encode({**ns, "EOF": False, "CRC": 0}) + GOOD + b"\xff" * 4
    from affidavit.formats.mongodump_archive import crc64_update

    crc = crc64_update(0, GOOD)
    eof = bson.encode(
        {**ns, "EOF": True, "CRC": bson.Int64(crc - (1 << 64) if crc >= 1 << 63 else crc)}
    )
    return magic + header + meta + b"\xff" * 4 + block + eof + b"\xff" * 4


def test_archive_well_formed_fixture_reads(write: Callable[[str, bytes], Path]) -> None:
    path = write("good.archive", _archive())
    assert _read_archive(path) == [("d.c", d) for d in DOCS]
    gz = write("good.archive.gz", gzip.compress(_archive()))
    assert _read_archive(gz) == [("d.c", d) for d in DOCS]


def test_archive_with_bad_magic(write: Callable[[str, bytes], Path]) -> None:
    path = write("bad_magic.archive", _archive(magic=b"\x00\x01\x02\x03"))
    assert not ArchiveReader.sniff(path)
    err = _expect_format_error(
        lambda: _read_archive(path), match=r"not a mongodump archive \(bad magic 00010203"
    )
    assert "byte offset 0" in err.message


def test_archive_truncated_mid_block(write: Callable[[str, bytes], Path]) -> None:
    data = _archive()
    cut = data.index(GOOD) + HALF
    path = write("truncated_mid_block.archive", data[:cut])
    _expect_format_error(lambda: _read_archive(path), match="truncated document")


def test_archive_truncated_before_eof_block(write: Callable[[str, bytes], Path]) -> None:
    data = _archive()
    cut = data.index(GOOD) + len(GOOD) + 4
    path = write("truncated_before_eof.archive", data[:cut])
    _expect_format_error(lambda: _read_archive(path), match="no EOF block for namespace")


def test_archive_empty_and_header_only(write: Callable[[str, bytes], Path]) -> None:
    empty = write("empty.archive", b"")
    _expect_format_error(lambda: _read_archive(empty), match="truncated archive magic")
    only_magic = write("only_magic.archive", b"\x6d\xe2\x99\x81")
    _expect_format_error(lambda: _read_archive(only_magic), match="no header")


def test_archive_gzip_garbage(write: Callable[[str, bytes], Path]) -> None:
    path = write("gzip_garbage.archive", b"\x1f\x8b\x08\x00" + b"\x00" * 64)
    _expect_format_error(lambda: _read_archive(path), match="corrupt compressed stream|truncated")


# --- codecs ----------------------------------------------------------------------------------


def _nest(depth: int) -> dict[str, object]:
    doc: dict[str, object] = {"leaf": 1}
    for _ in range(depth):
        doc = {"sub": doc}
    return {"_id": 1, "sub": doc}


def test_nesting_bomb_deeper_than_100() -> None:
    raw = bson.encode(_nest(150))
    _expect_format_error(lambda: logical_record_from_bson(raw), match="nested deeper than 100")
    line = json_util.dumps(bson.decode(raw)).encode()
    _expect_format_error(lambda: logical_record_from_extjson(line), match="nested deeper")
    exact_record(raw)  # exact hashes bytes: nesting is not its concern


def test_nesting_at_the_limit_is_fine() -> None:
    raw = bson.encode(_nest(99))  # _nest(n) nests n+1 documents under the top level
    logical_record_from_bson(raw)


def test_json_nesting_bomb_beyond_the_parser_stack() -> None:
    line = b'{"_id": 1, "a": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    _expect_format_error(lambda: logical_record_from_extjson(line), match="nested|JSON")


def test_document_without_id_in_exact_profile() -> None:
    raw = bson.encode({"name": "no id"})
    err = _expect_format_error(lambda: exact_record(raw), match="no top-level _id")
    assert err.hint


def test_id_element_that_overruns_the_document() -> None:
    raw = bytearray(bson.encode({"_id": "abc"}))
    struct.pack_into("<i", raw, 9, 1000)  # the string length of _id
    err = _expect_format_error(lambda: exact_record(bytes(raw)), match="bad string length 1000")
    assert "at byte 9" in err.message


def test_extjson_line_that_is_not_an_object(write: Callable[[str, bytes], Path]) -> None:
    path = write("not_an_object.json", b'{"_id": 1}\n\n[1, 2]\n')
    reader = ExtJsonLinesReader(path)
    err = _expect_format_error(
        lambda: list(reader.records("not_an_object")), match="line 3 is not a JSON object"
    )
    assert str(path) in err.message
    with pytest.raises(FormatError, match="not valid JSON"):
        logical_record_from_extjson(b'{"_id": 1,}')
    with pytest.raises(FormatError, match="duplicate key"):
        logical_record_from_extjson(b'{"_id": 1, "a": 1, "a": 2}')
