"""Segment tables of age files (issue 18): the table built while an artifact is written
matches the bytes of real pyrage files of many sizes, whatever the pieces it is fed in; the
geometry is the STREAM's; a table that does not tile its file is named for it; the document
offsets of a ``.bson`` (compiled and pure-Python walk) are the true ones; and the table's
JSON form refuses what is malformed."""

from __future__ import annotations

import random

import bson
import pytest

from affidavit.crypto.age import encrypt_chunks, new_identity
from affidavit.crypto.age_reader import CHUNK_SIZE
from affidavit.crypto.digest import sha256_hex
from affidavit.crypto.segments import SegmentHasher, geometry, tiling_issues
from affidavit.formats import bson_codec
from affidavit.models.backup import ArtifactRole
from affidavit.models.json_fields import PredicateError
from affidavit.models.segments import Segment, SegmentTable
from affidavit.services.segment_tables import TableBuilder, framing_for

SEGMENT = 2 * CHUNK_SIZE
_, RECIPIENT = new_identity()


def _feed(builder: SegmentHasher | TableBuilder, plain: bytes, cipher: bytes, seed: int) -> None:
    """Both sides in pieces of random sizes, interleaved."""
    rng = random.Random(seed)
    at_p = at_c = 0
    while at_p < len(plain) or at_c < len(cipher):
        if at_p < len(plain) and rng.random() < 0.5:
            n = rng.randint(1, 3 * CHUNK_SIZE)
            builder.plain(plain[at_p : at_p + n])
            at_p += n
        elif at_c < len(cipher):
            n = rng.randint(1, 3 * CHUNK_SIZE)
            builder.cipher(cipher[at_c : at_c + n])
            at_c += n


@pytest.mark.parametrize(
    "size",
    [0, 1, CHUNK_SIZE - 1, CHUNK_SIZE, CHUNK_SIZE + 1, SEGMENT, SEGMENT + 1, 5 * SEGMENT - 3],
)
def test_the_table_is_the_files_bytes(size: int) -> None:
    plain = random.Random(size).randbytes(size)
    cipher = b"".join(encrypt_chunks([plain], RECIPIENT))
    hasher = SegmentHasher(SEGMENT)
    _feed(hasher, plain, cipher, size)
    sides = hasher.finish()
    assert len(sides) == max(1, -(-size // SEGMENT))
    rows = []
    for side in sides:
        p = side.place
        assert sha256_hex(cipher[p.offset : p.offset + p.size]) == side.sha256
        assert (
            sha256_hex(plain[p.plain_offset : p.plain_offset + p.plain_size]) == side.plain_sha256
        )
        rows.append((p.offset, p.size, p.plain_offset, p.plain_size))
    assert rows[0][0] == 0 and rows[-1][0] + rows[-1][1] == len(cipher)
    assert tiling_issues(rows, size=len(cipher), plain_size=size, segment_size=SEGMENT) == []
    payload = hasher.payload_offset
    assert payload is not None
    assert geometry(payload_offset=payload, plain_size=size, segment_size=SEGMENT) == [
        s.place for s in sides
    ]


def test_a_ciphertext_that_is_not_this_plaintexts_is_refused() -> None:
    plain = bytes(SEGMENT + 5)
    cipher = b"".join(encrypt_chunks([plain[:-5]], RECIPIENT))
    hasher = SegmentHasher(SEGMENT)
    _feed(hasher, plain, cipher, 1)
    with pytest.raises(ValueError, match="do not match"):
        hasher.finish()
    with pytest.raises(ValueError, match="multiple of"):
        SegmentHasher(CHUNK_SIZE + 1)


def _rows() -> tuple[list[tuple[int, int, int, int]], int, int]:
    plain = bytes(3 * SEGMENT + 100)
    cipher = b"".join(encrypt_chunks([plain], RECIPIENT))
    hasher = SegmentHasher(SEGMENT)
    _feed(hasher, plain, cipher, 2)
    rows = [
        (s.place.offset, s.place.size, s.place.plain_offset, s.place.plain_size)
        for s in hasher.finish()
    ]
    return rows, len(cipher), len(plain)


@pytest.mark.parametrize(
    ("change", "words"),
    [
        (lambda r: r.__setitem__(1, (r[1][0] + 1, r[1][1] - 1, r[1][2], r[1][3])), "gap"),
        (lambda r: r.__setitem__(2, (r[2][0] - 16, r[2][1] + 16, r[2][2], r[2][3])), "overlap"),
        (lambda r: r.__delitem__(2), "gap"),
        (lambda r: r.append(r[-1]), "overlap"),
        (lambda r: r.insert(1, r.pop(2)), "gap"),
        (lambda r: r.__setitem__(3, (r[3][0], r[3][1] - 1, r[3][2], r[3][3] - 1)), "end"),
        (lambda r: r.clear(), "no segment"),
    ],
    ids=["gap", "overlap", "missing", "repeated", "swapped", "short-end", "empty"],
)
def test_tables_that_do_not_tile_are_named(change: object, words: str) -> None:
    rows, size, plain_size = _rows()
    assert tiling_issues(rows, size=size, plain_size=plain_size, segment_size=SEGMENT) == []
    change(rows)  # type: ignore[operator]
    issues = tiling_issues(rows, size=size, plain_size=plain_size, segment_size=SEGMENT)
    assert issues and any(words in issue for issue in issues), issues


def test_a_wrong_header_size_is_named() -> None:
    rows, size, plain_size = _rows()
    issues = tiling_issues(
        rows, size=size, plain_size=plain_size, segment_size=SEGMENT, payload_offset=rows[0][1]
    )
    assert issues


def _documents(n: int, seed: int) -> bytes:
    rng = random.Random(seed)
    return b"".join(
        bson.encode({"_id": i, "p": "y" * (rng.randint(0, 3 * SEGMENT) if i % 9 == 4 else i)})
        for i in range(n)
    )


@pytest.mark.parametrize("compiled", [True, False], ids=["compiled", "python"])
@pytest.mark.parametrize("n", [0, 1, 60, 700])
def test_first_records_are_where_documents_start(
    n: int, compiled: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not compiled:
        monkeypatch.setattr(bson_codec, "_NATIVE", None)
    elif bson_codec._NATIVE is None:
        pytest.skip("the compiled module is not built")
    plain = _documents(n, n)
    cipher = b"".join(encrypt_chunks([plain], RECIPIENT))
    builder = TableBuilder("src/b/dump/shop/c.bson.age", ArtifactRole.DATA, SEGMENT)
    _feed(builder, plain, cipher, n + 7)
    table = builder.table(cipher_sha256=sha256_hex(cipher), plain_sha256=sha256_hex(plain))
    assert table is not None and table.framing == "bson"
    starts, at = [], 0
    while at < len(plain):
        starts.append(at)
        at += int.from_bytes(plain[at : at + 4], "little")
    for row in table.segments:
        inside = [s for s in starts if row.plain_offset <= s < row.plain_offset + row.plain_size]
        assert row.first_record == (inside[0] if inside else None)


def test_a_stream_that_is_not_bson_gets_no_framing() -> None:
    plain = bson.encode({"_id": 1}) + b"\xff\xff\xff\x7f" + bytes(100)
    cipher = b"".join(encrypt_chunks([plain], RECIPIENT))
    builder = TableBuilder("a/b.bson.age", ArtifactRole.DATA, SEGMENT)
    _feed(builder, plain, cipher, 3)
    table = builder.table(cipher_sha256=sha256_hex(cipher), plain_sha256=sha256_hex(plain))
    assert table is not None and table.framing is None
    assert framing_for("a/b.bson.gz.age", ArtifactRole.DATA) is None
    assert framing_for("a/b.bson.age", ArtifactRole.INDEX) is None


def _row(**changes: object) -> dict[str, object]:
    row: dict[str, object] = {
        "offset": 0,
        "size": 300,
        "sha256": "a" * 64,
        "plain_offset": 0,
        "plain_size": 100,
        "plain_sha256": "b" * 64,
        "first_record": 0,
    }
    row.update(changes)
    return row


def test_the_json_form_round_trips_and_refuses_what_is_malformed() -> None:
    obj = {"segment_size": SEGMENT, "framing": "bson", "table": [_row()]}
    table = SegmentTable.from_predicate(obj, "segments")
    assert table.to_predicate() == obj
    assert isinstance(table.segments[0], Segment)
    bad: list[tuple[dict[str, object], str]] = [
        ({**obj, "framing": "csv"}, "framing"),
        ({**obj, "framing": None}, "without a framing"),
        ({**obj, "table": []}, "non-empty"),
        ({**obj, "table": [_row(first_record=100)]}, "first_record"),
        ({**obj, "table": [_row(sha256="A" * 64)]}, "sha256"),
        ({**obj, "table": [_row(size=-1)]}, "size"),
        ({**obj, "table": [{**_row(), "extra": 1}]}, "does not know"),
        ({k: v for k, v in obj.items() if k != "framing"}, "framing"),
    ]
    for value, words in bad:
        with pytest.raises(PredicateError, match=words):
            SegmentTable.from_predicate(value, "segments")
