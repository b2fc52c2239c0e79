"""The compiled full-document check ``bson_codec._native.validate`` and the compiled length
prefix walk ``_native.ranges`` against their references.

``validate`` must be SOUND: every document it accepts is one pymongo's C decoder
(``bson.decode`` with ``CHECK_OPTIONS``) decodes without any exception; whatever it refuses
goes to pymongo, which decides as before. Differential fuzzing (seeded mutation loops over
documents of every type and over the genuine mongodump samples, hypothesis, exhaustive UTF-8
sequences, deep nesting) checks that against the installed pymongo, so that a pymongo that
refuses more fails here whatever its version (``pyproject.toml`` pins the series it passed
on); the genuine samples and documents of every type check that ordinary data is accepted. ``check_documents`` must raise what the pymongo-only path raises, and
``bson_file_ranges`` must give what its Python walk gives, ranges and errors alike.
"""

from __future__ import annotations

import gzip
import math
import random
import re
import struct
import sys
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import bson
import pytest
from bson.binary import Binary
from bson.code import Code
from bson.datetime_ms import DatetimeMS
from bson.dbref import DBRef
from bson.decimal128 import Decimal128
from bson.int64 import Int64
from bson.max_key import MaxKey
from bson.min_key import MinKey
from bson.objectid import ObjectId
from bson.regex import Regex
from bson.timestamp import Timestamp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from affidavit.errors import FormatError
from affidavit.formats import bson_codec
from affidavit.formats.bson_codec import check_documents
from affidavit.formats.bson_codec.check import CHECK_OPTIONS
from affidavit.formats.bson_codec.file_ranges import bson_file_ranges

NATIVE = bson_codec._load_native()
needs_native = pytest.mark.skipif(
    NATIVE is None or not hasattr(NATIVE, "validate"),
    reason="the compiled module is not built (pip install -e . builds it) or is switched off",
)
SHARED_MONGODUMP = Path(__file__).resolve().parents[2].parent / "shared" / "formats" / "mongodump"


# --- helpers -----------------------------------------------------------------------------


def _pymongo_ok(doc: bytes) -> bool:
    """Whether pymongo's decoder takes the document without any exception at all."""
    try:
        bson.decode(doc, CHECK_OPTIONS)
    except Exception:
        return False
    return True


def _accepts(doc: bytes) -> bool:
    """Whether validate takes ``doc`` as one whole document (the decode of one document)."""
    assert NATIVE is not None
    stop: int = NATIVE.validate(doc, 0)
    return 0 < stop == len(doc)


def _assert_sound(doc: bytes) -> bool:
    """Whatever validate accepts from the start of ``doc`` (one document or several, when a
    mutated length prefix cuts it short) pymongo decodes without an exception, as a sequence
    and one by one. Returns whether ``doc`` was accepted whole."""
    assert NATIVE is not None
    stop: int = NATIVE.validate(doc, 0)
    assert 0 <= stop <= len(doc)
    if stop:
        bson.decode_all(doc[:stop], CHECK_OPTIONS)
        pos = 0
        while pos < stop:
            (length,) = struct.unpack_from("<i", doc, pos)
            assert _pymongo_ok(doc[pos : pos + length]), doc.hex()
            pos += length
        assert pos == stop
    return 0 < stop == len(doc)


def _i32(n: int) -> bytes:
    return struct.pack("<i", n)


def _cstr(text: bytes) -> bytes:
    return text + b"\x00"


def _string(text: bytes) -> bytes:
    return _i32(len(text) + 1) + text + b"\x00"


def _doc(*elements: bytes) -> bytes:
    body = b"".join(elements)
    return _i32(len(body) + 5) + body + b"\x00"


def _el(t: int, name: bytes, value: bytes) -> bytes:
    return bytes([t]) + _cstr(name) + value


Outcome = tuple[str, str] | None


def _outcome(buffer: bytes | memoryview, starts: list[int] | None) -> Outcome:
    try:
        check_documents(buffer, starts)
    except Exception as exc:  # FormatError, or whatever the path before raised
        return type(exc).__name__, str(exc)
    return None


def _pure_outcome(buffer: bytes | memoryview, starts: list[int] | None) -> Outcome:
    """check_documents without the compiled module (the path of AFFIDAVIT_PURE_PYTHON=1,
    i.e. the check as it was before the validator)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(bson_codec, "_NATIVE", None)
        return _outcome(buffer, starts)


def _native_outcome(buffer: bytes | memoryview, starts: list[int] | None) -> Outcome:
    assert bson_codec._NATIVE is not None
    return _outcome(buffer, starts)


# --- documents of every type -------------------------------------------------------------

OID = ObjectId(b"\x01" * 12)


def _typed_values() -> dict[str, Any]:
    return {
        "double": 1.5,
        "double_nan": math.nan,
        "double_inf": -math.inf,
        "double_negzero": -0.0,
        "string": "héllo wörld ✓ 😀",
        "string_empty": "",
        "string_nul": "a\x00b",
        "doc": {"a": 1, "b": {"c": [1, 2, {"d": None}]}},
        "doc_empty": {},
        "array": [1, "two", 3.0, [4, [5]], {"six": 6}],
        "array_empty": [],
        "bin0": b"\x00\xff" * 20,
        "bin0_empty": b"",
        "bin1": Binary(b"fn", 1),
        "bin2": Binary(b"old binary", 2),
        "bin2_empty": Binary(b"", 2),
        "bin3": Binary(b"\x11" * 16, 3),
        "uuid4": Binary(uuid.UUID(int=0x1234).bytes, 4),
        "uuid4_short": Binary(b"\x01\x02", 4),
        "bin5": Binary(b"\x00" * 16, 5),
        "bin6": Binary(b"enc", 6),
        "bin7": Binary(b"col", 7),
        "bin8": Binary(b"sens", 8),
        "bin9": Binary(b"\x03\x00\x01\x02", 9),
        "bin80": Binary(b"user", 0x80),
        "binff": Binary(b"user", 0xFF),
        "oid": OID,
        "true": True,
        "false": False,
        "datetime": datetime(2024, 5, 6, 7, 8, 9, 123000, tzinfo=UTC),
        "dt_min": DatetimeMS(-(2**63)),
        "dt_max": DatetimeMS(2**63 - 1),
        "dt_year1": DatetimeMS(-62135596800000),
        "dt_year1_minus": DatetimeMS(-62135596800001),
        "dt_year9999": DatetimeMS(253402300799999),
        "dt_year10000": DatetimeMS(253402300800000),
        "null": None,
        "regex": Regex("^a.*b$", "imsux"),
        "regex_py": re.compile("x+", re.IGNORECASE),
        "regex_odd_flags": Regex("é", "zq"),
        "int32": 2**31 - 1,
        "int32_min": -(2**31),
        "timestamp": Timestamp(2**32 - 1, 2**32 - 1),
        "timestamp0": Timestamp(0, 0),
        "int64": Int64(2**63 - 1),
        "int64_min": Int64(-(2**63)),
        "dec": Decimal128("1.2345E-100"),
        "dec_nan": Decimal128("NaN"),
        "dec_snan": Decimal128("-sNaN"),
        "dec_inf": Decimal128("-Infinity"),
        "dec_negzero": Decimal128("-0E+3"),
        "minkey": MinKey(),
        "maxkey": MaxKey(),
        "code": Code("function () { return 1; }"),
        "code_scope": Code("x + y", {"x": 1, "y": {"z": [1, 2]}}),
        "code_scope_empty": Code("", {}),
        "dbref": DBRef("coll", OID),
        "dbref_db": DBRef("coll", 5, "db", extra="yes"),
        "not_dbref": {"$ref": 5, "$id": 1},
        "not_dbref_db": {"$ref": "c", "$id": 1, "$db": 7},
        "dbref_db_null": {"$ref": "c", "$id": 1, "$db": None},
        "dollar_keys": {"$id": 1, "$db": "x"},
    }


def _raw_elements() -> list[bytes]:
    """Elements bson.encode does not write: symbol, DBPointer, undefined, odd regex flags."""
    return [
        _el(0x0E, b"symbol", _string("sym ✓".encode())),
        _el(0x0C, b"dbpointer", _string(b"db.coll") + b"\x02" * 12),
        _el(0x06, b"undefined", b""),
        _el(0x0B, b"regex_raw", _cstr("π".encode()) + _cstr(b"ab")),
        _el(0x0D, b"code_nul", _string(b"a\x00b")),
        _el(0x04, b"array_odd_keys", _doc(_el(0x10, b"\xff\xfe", _i32(1)))),
        _el(0x02, "ключ ✓ 😀".encode(), _string(b"v")),
        _el(0x02, b"", _string(b"empty key")),
    ]


def _corpus() -> list[bytes]:
    values = _typed_values()
    docs = [bson.encode({"_id": OID, **values})]
    docs += [bson.encode({"_id": i, k: v}) for i, (k, v) in enumerate(values.items())]
    docs += [bson.encode({"nest": {"deeper": [v, {"k": v}]}}) for v in values.values()]
    docs += [bson.encode({"scope": Code("c", {"v": v})}) for v in values.values()]
    raw = _raw_elements()
    docs += [_doc(el) for el in raw]
    docs.append(_doc(*raw))
    docs.append(_doc(_el(0x03, b"sub", _doc(*raw)), _el(0x04, b"arr", _doc(*raw))))
    docs.append(_doc())
    return docs


CORPUS = _corpus()


@needs_native
def test_every_type_is_accepted() -> None:
    for doc in CORPUS:
        assert _pymongo_ok(doc), doc.hex()
        assert _accepts(doc), bson.decode(doc, CHECK_OPTIONS)


@needs_native
def test_batch_of_every_type_is_accepted_whole() -> None:
    batch = b"".join(CORPUS)
    assert NATIVE is not None
    assert NATIVE.validate(batch, 0) == len(batch)
    assert NATIVE.validate(memoryview(batch), 0) == len(batch)
    offset = len(CORPUS[0])
    assert NATIVE.validate(batch, offset) == len(batch)
    assert NATIVE.validate(b"", 0) == 0


@needs_native
def test_pos_out_of_range_raises() -> None:
    assert NATIVE is not None
    with pytest.raises(ValueError, match="pos"):
        NATIVE.validate(b"\x05\x00\x00\x00\x00", 6)
    with pytest.raises(ValueError, match="pos"):
        NATIVE.validate(b"", -1)


# --- soundness: hand-made defects --------------------------------------------------------


def _defects() -> Iterator[tuple[str, bytes]]:
    good = _string(b"ok")
    yield "bool 2", _doc(_el(0x08, b"b", b"\x02"))
    yield "bool ff", _doc(_el(0x08, b"b", b"\xff"))
    yield "type 0 early", _doc(b"\x00x\x00", _el(0x10, b"i", _i32(1)))
    yield "unknown type 0x14", _doc(_el(0x14, b"x", b""))
    yield "unknown type 0x80", _doc(_el(0x80, b"x", b""))
    yield "string length 0", _doc(_el(0x02, b"s", _i32(0) + b"\x00"))
    yield "string length -1", _doc(_el(0x02, b"s", _i32(-1) + b"ab\x00"))
    yield "string no NUL", _doc(_el(0x02, b"s", _i32(3) + b"abc"))
    yield "string too long", _doc(_el(0x02, b"s", _i32(50) + b"ab\x00"))
    yield "string overruns doc NUL", _doc(_el(0x02, b"s", _i32(4) + b"ab\x00"))[:-1] + b"\x00"
    yield "key lone continuation", _doc(_el(0x02, b"\x80", good))
    yield "key surrogate", _doc(_el(0x02, b"\xed\xa0\x80", good))
    yield "key overlong NUL", _doc(_el(0x02, b"\xc0\x80", good))
    yield "key overlong 3", _doc(_el(0x02, b"\xe0\x80\xaf", good))
    yield "key above 10FFFF", _doc(_el(0x02, b"\xf4\x90\x80\x80", good))
    yield "key f5", _doc(_el(0x02, b"\xf5\x80\x80\x80", good))
    yield "key truncated", _doc(_el(0x02, b"a\xe2\x82", good))
    yield "value surrogate", _doc(_el(0x02, b"s", _string(b"\xed\xbf\xbf")))
    yield "value overlong", _doc(_el(0x02, b"s", _string(b"\xc1\xbf")))
    yield "code surrogate", _doc(_el(0x0D, b"c", _string(b"\xed\xa0\x80")))
    yield "symbol bad", _doc(_el(0x0E, b"c", _string(b"\xff")))
    yield "regex pattern bad", _doc(_el(0x0B, b"r", b"\xff\x00i\x00"))
    yield "regex flags bad", _doc(_el(0x0B, b"r", b"a\x00\xed\xa0\x80\x00"))
    yield "regex unterminated", _doc(_el(0x0B, b"r", b"abc"))
    yield "regex flags hit doc NUL", _doc(_el(0x0B, b"r", b"abc\x00"))
    yield "dbpointer bad string", _doc(_el(0x0C, b"p", _string(b"\xff") + b"\x00" * 12))
    yield "dbpointer short oid", _doc(_el(0x0C, b"p", _string(b"a") + b"\x00" * 11))
    yield "bin2 lying inner length", _doc(_el(0x05, b"b", _i32(7) + b"\x02" + _i32(2) + b"abc"))
    yield "bin2 short", _doc(_el(0x05, b"b", _i32(3) + b"\x02" + b"abc"))
    yield "bin2 inner -1", _doc(_el(0x05, b"b", _i32(4) + b"\x02" + _i32(-1)))
    yield "binary length -1", _doc(_el(0x05, b"b", _i32(-1) + b"\x00"))
    yield "binary too long", _doc(_el(0x05, b"b", _i32(9) + b"\x00abc"))
    yield "sub length 4", _doc(_el(0x03, b"d", _i32(4) + b"\x00"))
    yield "sub no NUL", _doc(_el(0x03, b"d", _i32(5) + b"\x01"))
    yield "sub too long", _doc(_el(0x03, b"d", _i32(64) + b"\x00"))
    yield "sub elements short of its end", _doc(_el(0x03, b"d", _i32(8) + b"\x00\x00\x00\x00"))
    yield "array element overruns", _doc(_el(0x04, b"a", _i32(9) + b"\x10\x30\x00\x01\x00"))
    cws_ok = _string(b"code") + _doc()
    yield "cws total too small", _doc(_el(0x0F, b"c", _i32(len(cws_ok) + 3) + cws_ok))
    yield "cws total too large", _doc(_el(0x0F, b"c", _i32(len(cws_ok) + 5) + cws_ok + b"\x00"))
    yield "cws code length 0", _doc(_el(0x0F, b"c", _i32(14) + _i32(0) + _doc()[:-1] + b"\x00"))
    yield (
        "cws scope length lies",
        _doc(_el(0x0F, b"c", _i32(4 + len(cws_ok)) + _string(b"code") + _i32(6) + b"\x00")),
    )
    yield (
        "cws code not NUL-ended",
        _doc(_el(0x0F, b"c", _i32(4 + 4 + 4 + 5) + _i32(4) + b"abcd" + _doc())),
    )
    yield (
        "cws scope bad",
        _doc(_el(0x0F, b"c", _i32(4 + 7 + 10) + _string(b"ab") + _doc(_el(0x08, b"b", b"\x07")))),
    )
    yield (
        "cws huge code length",
        _doc(_el(0x0F, b"c", _i32(4 + len(cws_ok)) + _i32(-1) + cws_ok[4:])),
    )
    yield "truncated int32", _doc(b"\x10i\x00\x01\x00")
    yield "truncated double", _doc(b"\x01d\x00" + b"\x00" * 7)
    yield "truncated oid", _doc(b"\x07o\x00" + b"\x00" * 11)
    yield "truncated decimal", _doc(b"\x13o\x00" + b"\x00" * 15)
    yield "name runs into doc NUL", _doc(b"\x10abc")
    yield "doc length 4", _i32(4) + b"\x00"
    yield "doc length lies short", _i32(5) + b"\x10a\x00\x01\x00\x00\x00\x00"
    yield "doc length lies long", _i32(100) + b"\x00"
    yield "doc not NUL-ended", _i32(5) + b"\x01"
    yield "doc too big", _i32(16 * 1024 * 1024 + 16 * 1024 + 1) + b"\x00"


@needs_native
@pytest.mark.parametrize(("what", "doc"), list(_defects()), ids=[w for w, _ in _defects()])
def test_defect_is_deferred_or_sound(what: str, doc: bytes) -> None:
    assert not _accepts(doc) or _pymongo_ok(doc)
    if not _pymongo_ok(doc):  # every defect pymongo refuses, the validator refuses too
        assert not _accepts(doc)


# --- soundness: UTF-8 exactly as Python's strict decoder ---------------------------------


def _utf8_candidates() -> Iterator[bytes]:
    for a in range(256):
        yield bytes([a])
        for b in range(256):
            yield bytes([a, b])
    tails = (0x00, 0x41, 0x7F, 0x80, 0x8F, 0x90, 0x9F, 0xA0, 0xBF, 0xC0, 0xFF)
    for a in range(0xC0, 0x100):
        for b in tails:
            for c in tails:
                yield bytes([a, b, c])
                for d in (0x41, 0x80, 0xBF, 0xC0):
                    yield bytes([a, b, c, d])


def _utf8_ok(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


@needs_native
def test_utf8_matches_python_strict_decoder_in_keys_and_strings() -> None:
    checked = 0
    for seq in _utf8_candidates():
        expected = _utf8_ok(seq)
        if b"\x00" not in seq:  # a NUL ends a key
            key_doc = _doc(_el(0x10, b"k" + seq, _i32(1)))
            assert _accepts(key_doc) == expected, seq.hex()
            assert _pymongo_ok(key_doc) == expected, seq.hex()
            # array element names are skipped by pymongo, never decoded
            arr_doc = _doc(_el(0x04, b"a", _doc(_el(0x10, seq, _i32(1)))))
            assert _assert_sound(arr_doc)
        str_doc = _doc(_el(0x02, b"s", _string(seq)))
        assert _accepts(str_doc) == expected, seq.hex()
        assert _pymongo_ok(str_doc) == expected, seq.hex()
        checked += 1
    assert checked > 70_000


# --- soundness: nesting ------------------------------------------------------------------


def _nested(levels: int, kinds: str = "d") -> bytes:
    """A document whose innermost value sits ``levels`` containers below the top level;
    ``kinds`` cycles through d (document), a (array), s (code-with-scope scope)."""
    inner = _doc(_el(0x10, b"x", _i32(1)))
    for i in range(levels - 1, -1, -1):
        kind = kinds[i % len(kinds)]
        if kind == "s":
            body = _string(b"c") + inner
            inner = _doc(_el(0x0F, b"0", _i32(4 + len(body)) + body))
        else:
            inner = _doc(_el(0x04 if kind == "a" else 0x03, b"0", inner))
    return inner


@needs_native
@pytest.mark.parametrize("kinds", ["d", "a", "s", "da", "as", "das"])
def test_nesting_limit(kinds: str) -> None:
    assert NATIVE is not None
    assert NATIVE.VALIDATE_MAX_DEPTH == 100
    assert _assert_sound(_nested(100, kinds))  # 100 containers below the top: MongoDB's limit
    assert not _accepts(_nested(101, kinds))  # deeper: left to pymongo
    for levels in (200, 10_000):
        doc = _nested(levels, kinds)
        assert not _accepts(doc)
        check_documents(doc, None) if _pymongo_ok(doc) else None
    shallow = _nested(10, kinds)
    assert NATIVE.validate(shallow, 0, 10) == len(shallow)
    assert NATIVE.validate(shallow, 0, 9) == 0
    assert NATIVE.validate(shallow, 0, -5) == 0
    assert NATIVE.validate(shallow, 0, 10_000) == len(shallow)


def _at_depth(levels: int, fn: Callable[[], Any]) -> Any:
    return fn() if levels <= 0 else _at_depth(levels - 1, fn)


@needs_native
@pytest.mark.parametrize("kinds", ["d", "a", "da", "s"])
def test_depth_follows_the_recursion_budget(kinds: str) -> None:
    """On Python 3.11 pymongo's decoder shares the recursion budget with the Python frames:
    from deep in a call stack it refuses nested documents it takes elsewhere, and
    check_documents must then still say what pymongo says."""
    old = sys.getrecursionlimit()
    doc = _nested(100, kinds)
    try:
        sys.setrecursionlimit(400)
        for extra in range(0, 330, 10):
            with pytest.MonkeyPatch.context() as mp:
                mp.setattr(bson_codec, "_NATIVE", None)
                expected = _at_depth(extra, lambda: _outcome(doc, None))
            got = _at_depth(extra, lambda: _outcome(doc, None))
            assert got == expected, (extra, got, expected)
    finally:
        sys.setrecursionlimit(old)


# --- soundness: mutation fuzzing ---------------------------------------------------------


def _mutate(doc: bytes, rng: random.Random) -> bytes:
    data = bytearray(doc)
    for _ in range(rng.choice((1, 1, 1, 2, 3))):
        how = rng.randrange(9)
        at = rng.randrange(len(data)) if data else 0
        if how == 0 and data:  # any byte
            data[at] = rng.randrange(256)
        elif how == 1 and data:  # a bit
            data[at] ^= 1 << rng.randrange(8)
        elif how == 2 and len(data) >= 4:  # a length-looking int32 at a boundary value
            at = rng.randrange(len(data) - 3)
            value = rng.choice((0, 1, 4, 5, 13, 14, -1, 2**31 - 1, -(2**31), len(data)))
            value += rng.choice((0, 0, 1, -1))
            data[at : at + 4] = struct.pack("<i", max(-(2**31), min(2**31 - 1, value)))
        elif how == 3 and data:  # a type byte
            data[at] = rng.choice((0, 1, 2, 3, 4, 5, 8, 0x0B, 0x0C, 0x0F, 0x13, 0x14, 0x7F))
        elif how == 4:  # insert
            data[at:at] = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 4)))
        elif how == 5 and data:  # delete
            del data[at : at + rng.randrange(1, 4)]
        elif how == 6 and data:  # invalid UTF-8
            data[at:at] = rng.choice(
                (b"\xed\xa0\x80", b"\xc0\x80", b"\xf4\x90\x80\x80", b"\x80", b"\xe2\x82", b"\xff")
            )
        elif how == 7:  # truncate (the length prefix then lies)
            del data[rng.randrange(len(data) + 1) :]
        elif how == 8 and data:  # a NUL
            data[at] = 0
    if rng.random() < 0.7 and len(data) >= 4:  # mostly keep the outer length consistent
        data[0:4] = struct.pack("<i", len(data))
    return bytes(data)


@needs_native
def test_mutation_loop_is_sound() -> None:
    rng = random.Random(20240601)
    accepted = refused = 0
    ok_docs: list[bytes] = []
    for _ in range(60_000):
        doc = _mutate(rng.choice(CORPUS), rng)
        if _assert_sound(doc):
            accepted += 1
            if len(ok_docs) < 2000:
                ok_docs.append(doc)
        else:
            refused += 1
    assert accepted > 1000 and refused > 1000, (accepted, refused)
    batch = b"".join(ok_docs)  # a batch of accepted documents decodes as a whole
    assert NATIVE is not None
    assert NATIVE.validate(batch, 0) == len(batch)
    assert len(bson.decode_all(batch, CHECK_OPTIONS)) == len(ok_docs)


@needs_native
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(min_size=0, max_size=64))
def test_random_bytes_are_sound(body: bytes) -> None:
    _assert_sound(_i32(len(body) + 5) + body + b"\x00")
    _assert_sound(body)


_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**31), 2**31 - 1),
    st.integers(-(2**63), 2**63 - 1).map(Int64),
    st.floats(allow_nan=True),
    st.text(max_size=8),
    st.binary(max_size=8),
    st.builds(Binary, st.binary(max_size=8), st.integers(0, 255)),
    st.integers(-(2**63), 2**63 - 1).map(DatetimeMS),
    st.builds(Timestamp, st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1)),
    st.binary(min_size=16, max_size=16).map(Decimal128.from_bid),
    st.builds(Regex, st.text(max_size=4), st.text("imsuxlz", max_size=3)),
    st.builds(Code, st.text(max_size=4)),
    st.just(MinKey()),
    st.just(MaxKey()),
)
_values = st.recursive(
    _scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(st.text(max_size=3), inner, max_size=3),
        st.builds(Code, st.text(max_size=3), st.dictionaries(st.text(max_size=2), inner)),
    ),
    max_leaves=12,
)


def _encodable(value: dict[str, Any]) -> bytes | None:
    try:
        return bson.encode(value)
    except Exception:  # e.g. a NUL in a key
        return None


@needs_native
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.dictionaries(st.text(max_size=4), _values, max_size=5),
    st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), max_size=4),
    st.integers(0, 10**6),
)
def test_generated_documents_are_accepted_and_mutations_sound(
    value: dict[str, Any], edits: list[tuple[int, int]], cut: int
) -> None:
    doc = _encodable(value)
    if doc is None:
        return
    assert _pymongo_ok(doc)
    assert _accepts(doc)
    data = bytearray(doc)
    for at, byte in edits:
        data[at % len(data)] = byte
    _assert_sound(bytes(data))
    fixed = bytearray(data)
    fixed[0:4] = _i32(len(fixed))
    _assert_sound(bytes(fixed))
    truncated = bytes(data[: cut % (len(data) + 1)])
    _assert_sound(truncated)


# --- completeness: the genuine mongodump samples -----------------------------------------


def _sample_files() -> list[Path]:
    if not SHARED_MONGODUMP.is_dir():
        return []
    return sorted(p for p in SHARED_MONGODUMP.rglob("*") if p.name.endswith((".bson", ".bson.gz")))


def _framed(data: bytes) -> Iterator[bytes]:
    pos = 0
    while pos + 4 <= len(data):
        (length,) = struct.unpack_from("<i", data, pos)
        if length < 5 or pos + length > len(data):
            return
        yield data[pos : pos + length]
        pos += length


def _depth(doc: dict[str, Any]) -> int:
    """Containers nested below a decoded document (0 for a flat one), without recursion."""
    deepest = 0
    todo: list[tuple[Any, int]] = [(doc, 0)]
    while todo:
        value, level = todo.pop()
        deepest = max(deepest, level)
        if isinstance(value, DBRef):
            value = value.as_doc()
        if isinstance(value, Code) and value.scope is not None:
            todo.append((value.scope, level + 1))
        elif isinstance(value, dict):
            todo.extend((v, level + 1) for v in value.values() if _container(v))
        elif isinstance(value, list):
            todo.extend((v, level + 1) for v in value if _container(v))
    return deepest


def _container(value: Any) -> bool:
    return isinstance(value, dict | list | DBRef) or (
        isinstance(value, Code) and value.scope is not None
    )


@needs_native
def test_genuine_samples_are_accepted() -> None:
    files = _sample_files()
    if not files:
        pytest.skip(
            f"{SHARED_MONGODUMP} is absent: genuine sample files come with the shared folder"
        )
    seen = deep = 0
    for path in files:
        raw = path.read_bytes()
        if path.name.endswith(".gz"):
            try:
                raw = gzip.decompress(raw)
            except (OSError, EOFError):
                continue
        for doc in _framed(raw):
            if not _pymongo_ok(doc):
                assert not _accepts(doc)
            elif _depth(bson.decode(doc, CHECK_OPTIONS)) > 100:
                assert not _accepts(doc)  # deeper than MongoDB allows: left to pymongo
                deep += 1
            else:
                assert _accepts(doc), (path, doc[:64].hex())
                seen += 1
    assert seen > 100
    assert deep <= 2  # bsondump's deep_nested.bson


def _sample_bytes() -> list[bytes]:
    """The whole contents of the genuine sample files (gzip ones decompressed)."""
    out = []
    for path in _sample_files():
        raw = path.read_bytes()
        if path.name.endswith(".gz"):
            try:
                raw = gzip.decompress(raw)
            except (OSError, EOFError):
                continue
        out.append(raw)
    return out


def _splice(doc: bytes, other: bytes, rng: random.Random) -> bytes:
    """``doc`` with a slice of ``other`` put in at a random place or over a random part: real
    elements, names and lengths where they do not belong."""
    a = rng.randrange(len(other))
    piece = other[a : a + rng.randrange(1, 80)]
    at = rng.randrange(len(doc))
    cut = at + rng.choice((0, 0, len(piece), rng.randrange(1, 16)))
    return doc[:at] + piece + doc[cut:]


@needs_native
def test_mutated_genuine_documents_are_sound() -> None:
    """The soundness argument on what real data looks like, broken: every genuine sample
    file whole (bsondump's hostile ones among them), then 100,000 seeded mutations and
    splices of their ~1,300 distinct documents (oplog entries, users, indexes, time-series
    buckets, every type). The installed pymongo is the reference: a pymongo that refuses
    more than the validator assumes fails here, whatever its version."""
    samples = _sample_bytes()
    if not samples:
        pytest.skip(
            f"{SHARED_MONGODUMP} is absent: genuine sample files come with the shared folder"
        )
    for raw in samples:
        _assert_sound(raw)
    docs = sorted({doc for raw in samples for doc in _framed(raw)})
    rng = random.Random(20250614)
    accepted = refused = 0
    for i in range(100_000):
        doc = rng.choice(docs)
        if i % 3 == 0:
            doc = _splice(doc, rng.choice(docs), rng)
        if _assert_sound(_mutate(doc, rng)):
            accepted += 1
        else:
            refused += 1
    assert accepted > 1000 and refused > 1000, (accepted, refused)


# --- check_documents ---------------------------------------------------------------------


def _starts(docs: list[bytes]) -> list[int]:
    out, pos = [], 0
    for doc in docs:
        out.append(pos)
        pos += len(doc)
    return out


BAD = [doc for _, doc in _defects() if not _pymongo_ok(doc)]
#: the defects inside a well-framed document (pymongo names that very document)
BAD_FRAMED = [d for d in BAD if struct.unpack_from("<i", d)[0] == len(d) and d[-1] == 0]


@needs_native
def test_check_documents_accepts_good_batches() -> None:
    batch = b"".join(CORPUS)
    check_documents(batch, None)
    check_documents(batch, _starts(CORPUS))
    check_documents(memoryview(batch), None)
    check_documents(b"", None)
    deep = _nested(150)  # beyond the validator, fine for pymongo
    check_documents(batch + deep + batch, None)


@needs_native
@pytest.mark.parametrize("where", [0, 1, 7, len(CORPUS)])
def test_check_documents_names_the_same_document(where: int) -> None:
    rng = random.Random(where)
    assert len(BAD_FRAMED) > 30
    for bad in BAD:
        docs = list(CORPUS)
        docs.insert(where, bad)
        docs.insert(min(where + 2, len(docs)), rng.choice(BAD))  # a later defect, unreported
        batch = b"".join(docs)
        for starts in (None, _starts(docs)):
            expected = _pure_outcome(batch, starts)
            assert expected is not None
            assert _native_outcome(batch, starts) == expected
            assert _native_outcome(memoryview(batch), starts) == expected
            if bad not in BAD_FRAMED:
                continue
            # the message names the inserted document: pymongo's verdict on it alone
            assert expected[0] == "FormatError"
            with pytest.raises(Exception) as info:  # noqa: PT011 - pymongo's own types
                bson.decode(bad, CHECK_OPTIONS)
            assert expected[1] == f"malformed BSON document ({info.value})"


@needs_native
def test_check_documents_matches_pymongo_on_mutated_batches() -> None:
    rng = random.Random(7)
    for _ in range(1500):
        docs = [rng.choice(CORPUS) for _ in range(rng.randrange(1, 6))]
        i = rng.randrange(len(docs))
        docs[i] = _mutate(docs[i], rng)
        batch = b"".join(docs)
        starts = rng.choice((None, _starts(docs)))
        assert _native_outcome(batch, starts) == _pure_outcome(batch, starts)


@needs_native
def test_check_documents_error_message_is_pymongos() -> None:
    batch = bson.encode({"a": 1}) + _doc(_el(0x08, b"b", b"\x02"))
    with pytest.raises(FormatError, match=r"malformed BSON document \(invalid boolean value"):
        check_documents(batch, [0, len(bson.encode({"a": 1}))])
    # starts that are not the framing: the whole batch goes to pymongo, as before
    odd = [0, 3, len(bson.encode({"a": 1}))]
    assert _native_outcome(batch, odd) == _pure_outcome(batch, odd)
    short = bson.encode({"a": 1}) + b"\x03\x00\x00\x00\x00"  # length < 5, starts None
    assert _native_outcome(short, None) == _pure_outcome(short, None)


# --- ranges ------------------------------------------------------------------------------


def _walk(path: Path, target: int, native: bool) -> tuple[list[tuple[int, int]], str | None]:
    """bson_file_ranges' ranges and error message, with or without the compiled walk."""
    out: list[tuple[int, int]] = []
    with pytest.MonkeyPatch.context() as mp:
        if not native:
            mp.setattr(bson_codec, "_NATIVE", None)
        try:
            for item in bson_file_ranges(path, target):
                out.append(item)
        except FormatError as exc:
            return out, exc.message
    return out, None


def _random_file(rng: random.Random) -> bytes:
    docs = []
    for _ in range(rng.randrange(0, 60)):
        size = rng.choice((5, 6, 50, 300, 1024, 5000))
        docs.append(_doc(_el(0x05, b"b", _i32(size) + b"\x00" + b"\x01" * size)))
    return b"".join(docs)


TARGETS = (-3, 0, 1, 5, 100, 1024, 4096, 1 << 20, 10**30)


@needs_native
def test_ranges_match_the_python_walk_on_valid_files(tmp_path: Path) -> None:
    rng = random.Random(3)
    path = tmp_path / "c.bson"
    for _ in range(40):
        data = _random_file(rng)
        path.write_bytes(data)
        for target in TARGETS:
            got = _walk(path, target, native=True)
            assert got == _walk(path, target, native=False)
            assert got[1] is None
            assert sum(n for _, n in got[0]) == len(data)


def _corruptions(data: bytes, rng: random.Random) -> Iterator[bytes]:
    starts = [0]
    while starts[-1] < len(data):
        starts.append(starts[-1] + struct.unpack_from("<i", data, starts[-1])[0])
    starts.pop()
    yield b""
    yield b"\x05\x00"  # fewer than 4 bytes
    yield data + b"\x07\x00\x00"  # a short tail
    yield data[:-1]  # the last document truncated
    yield data + _i32(100) + b"\x00" * 10  # a document past the end
    for at in rng.sample(starts, min(5, len(starts))):
        for value in (4, -1, 0, 16 * 1024 * 1024 + 16 * 1024 + 1, 2**31 - 1, len(data) + 1):
            yield data[:at] + _i32(value) + data[at + 4 :]


@needs_native
def test_ranges_raise_the_same_errors(tmp_path: Path) -> None:
    rng = random.Random(4)
    path = tmp_path / "c.bson"
    errors = 0
    for _ in range(10):
        data = _random_file(rng) or _doc()
        for bad in _corruptions(data, rng):
            path.write_bytes(bad)
            for target in TARGETS:
                got = _walk(path, target, native=True)
                assert got == _walk(path, target, native=False), (bad[:16].hex(), target)
                errors += got[1] is not None
    assert errors > 100


@needs_native
def test_ranges_error_words(tmp_path: Path) -> None:
    path = tmp_path / "x.bson"
    good = _doc()
    path.write_bytes(good + _i32(3) + b"\x00")
    assert _walk(path, 1, native=True) == (
        [(0, 5)],
        f"{path}: malformed document at byte offset 5",
    )
    path.write_bytes(good + _i32(50) + b"\x00")
    assert _walk(path, 1 << 20, native=True) == (
        [],
        f"{path}: truncated document at byte offset 5",
    )
    path.write_bytes(b"")
    assert _walk(path, 1, native=True) == ([], None)


@needs_native
def test_ranges_direct_call() -> None:
    assert NATIVE is not None
    data = _doc() * 3
    assert NATIVE.ranges(data, 6, 5, 100) == ([(0, 10), (10, 5)], NATIVE.RANGES_OK, 0)
    assert NATIVE.ranges(data + b"\x01", 1, 5, 100) == (
        [(0, 5), (5, 5), (10, 5)],
        NATIVE.RANGES_MALFORMED,
        15,
    )
    with pytest.raises(ValueError, match="target"):
        NATIVE.ranges(data, 0, 5, 100)
