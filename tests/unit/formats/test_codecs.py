"""Properties of the record codecs: exact vs logical, BSON vs Extended JSON, Redis."""

from __future__ import annotations

import math
import struct
import uuid
from typing import Any

import bson
import cbor2
import pytest
from bson import json_util
from bson.binary import Binary, UuidRepresentation
from bson.code import Code
from bson.codec_options import DatetimeConversion
from bson.datetime_ms import DatetimeMS
from bson.decimal128 import Decimal128
from bson.int64 import Int64
from bson.json_util import JSONMode, JSONOptions
from bson.max_key import MaxKey
from bson.min_key import MinKey
from bson.objectid import ObjectId
from bson.regex import Regex
from bson.timestamp import Timestamp
from hypothesis import given, settings
from hypothesis import strategies as st

from affidavit.errors import FormatError, InputError
from affidavit.formats.bson_codec import (
    exact_record,
    logical_encode,
    logical_record_from_bson,
    logical_record_from_extjson,
)
from affidavit.formats.redis_codec import encode_redis_record
from affidavit.models.records import RecordEncoding, RedisRecord

CANONICAL = JSONOptions(
    json_mode=JSONMode.CANONICAL,
    uuid_representation=UuidRepresentation.UNSPECIFIED,
    datetime_conversion=DatetimeConversion.DATETIME_MS,
)

# --- generated documents with every type pymongo can encode -----------------------------------

keys = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=8
).filter(lambda k: not k.startswith("$"))
int32s = st.integers(-(2**31), 2**31 - 1)
int64s = st.integers(-(2**63), 2**63 - 1).map(Int64)
doubles = st.floats(allow_nan=True, allow_infinity=True)
strings = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=12)
decimals = st.one_of(
    st.decimals(allow_nan=False, allow_infinity=False, places=None).filter(
        lambda d: len(d.as_tuple().digits) <= 34 and -6143 <= d.as_tuple().exponent <= 6111  # type: ignore[operator]
    ),
    st.sampled_from(["NaN", "Infinity", "-Infinity", "-0", "-0E+3", "0E-6176", "1.00", "1.0"]),
).map(lambda d: Decimal128(str(d)))
binaries = st.tuples(
    st.sampled_from([0, 1, 2, 3, 4, 5, 6, 7, 8, 0x80, 0xFF]), st.binary(max_size=20)
).map(lambda t: Binary(t[1], t[0]) if t[0] else t[1])
uuids16 = st.binary(min_size=16, max_size=16).map(lambda b: Binary(b, 4))
datetimes = st.integers(-(2**63), 2**63 - 1).map(DatetimeMS)
regexes = st.tuples(
    strings.filter(lambda s: "\x00" not in s), st.sampled_from(["", "i", "ms", "imsux"])
).map(lambda t: Regex(*t))
scalars = st.one_of(
    st.none(),
    st.booleans(),
    int32s,
    int64s,
    doubles,
    strings,
    decimals,
    binaries,
    uuids16,
    st.binary(min_size=12, max_size=12).map(ObjectId),
    datetimes,
    regexes,
    st.tuples(st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1)).map(lambda t: Timestamp(*t)),
    strings.map(Code),
    st.just(MinKey()),
    st.just(MaxKey()),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(keys, inner, max_size=4),
        st.tuples(strings, st.dictionaries(keys, inner, max_size=3)).map(
            lambda t: Code(t[0], t[1])
        ),
    ),
    max_leaves=12,
)
documents = st.fixed_dictionaries({"_id": scalars}, optional={}).flatmap(
    lambda base: st.dictionaries(keys.filter(lambda k: k != "_id"), values, max_size=6).map(
        lambda rest: {**base, **rest}
    )
)


def _json_line(doc: dict[str, Any]) -> bytes:
    return json_util.dumps(doc, json_options=CANONICAL).encode()


@settings(max_examples=300, deadline=None)
@given(documents)
def test_logical_of_bson_equals_logical_of_its_canonical_extjson(doc: dict[str, Any]) -> None:
    raw = bson.encode(doc)
    assert logical_record_from_bson(raw) == logical_record_from_extjson(_json_line(doc))


@settings(max_examples=200, deadline=None)
@given(documents, st.randoms(use_true_random=False))
def test_field_order_changes_exact_but_not_logical(doc: dict[str, Any], rnd: Any) -> None:
    items = list(doc.items())
    rnd.shuffle(items)  # pymongo writes _id first at the top level whatever the dict order
    a, b = bson.encode(doc), bson.encode(dict(items))
    assert logical_record_from_bson(a) == logical_record_from_bson(b)
    assert exact_record(a)[0] == exact_record(b)[0]  # the _id element itself is unchanged
    if [k for k, _ in items if k != "_id"] != [k for k in doc if k != "_id"]:
        assert exact_record(a)[1] != exact_record(b)[1]


@settings(max_examples=100, deadline=None)
@given(documents)
def test_logical_value_of_decoded_document_agrees(doc: dict[str, Any]) -> None:
    raw = bson.encode(doc)
    decoded = bson.decode(raw, CANONICAL)
    assert logical_encode(decoded) == logical_record_from_bson(raw)[1]


@settings(max_examples=100, deadline=None)
@given(documents)
def test_logical_is_rfc8949_deterministic(doc: dict[str, Any]) -> None:
    """Map keys sorted bytewise by their encodings, shortest floats: re-encoding the decoded
    CBOR canonically gives the same bytes."""
    _, value = logical_record_from_bson(bson.encode(doc))
    assert cbor2.dumps(cbor2.loads(value), canonical=True) == value


def test_int32_and_int64_differ_in_exact_and_agree_in_logical() -> None:
    a = bson.encode({"_id": 1, "n": 7})
    b = bson.encode({"_id": 1, "n": Int64(7)})
    assert exact_record(a) != exact_record(b)
    assert logical_record_from_bson(a) == logical_record_from_bson(b)
    id32, id64 = bson.encode({"_id": 5}), bson.encode({"_id": Int64(5)})
    assert exact_record(id32)[0] != exact_record(id64)[0]
    assert logical_record_from_bson(id32)[0] == logical_record_from_bson(id64)[0]


def test_double_one_differs_from_int_one() -> None:
    assert logical_encode(1.0) != logical_encode(1)
    a = bson.encode({"_id": 1, "n": 1.0})
    b = bson.encode({"_id": 1, "n": 1})
    assert logical_record_from_bson(a) != logical_record_from_bson(b)


TRICKY: list[Any] = [
    0,
    -0.0,
    0.0,
    False,
    None,
    "",
    b"",
    Binary(b"", 5),
    ObjectId(b"abcdefghijkl"),
    b"abcdefghijkl",
    Decimal128("1.0"),
    Decimal128("1.00"),
    Decimal128("1"),
    Decimal128("-0"),
    Decimal128("0"),
    Decimal128("NaN"),
    1,
    1.0,
    "1",
    Code("x"),
    Code("x", {}),
    "x",
    Regex("x", ""),
    Timestamp(0, 0),
    DatetimeMS(0),
    MinKey(),
    MaxKey(),
    [],
    {},
    Binary(b"\x00" * 16, 4),
    Binary(b"\x00" * 16, 3),
    b"\x00" * 16,
    [None],
    {"": None},
]


def test_distinct_tricky_values_have_distinct_encodings() -> None:
    encodings = [logical_encode(v) for v in TRICKY]
    assert len(set(encodings)) == len(TRICKY)


def test_deprecated_types_stay_distinct_and_match_their_extjson() -> None:
    """symbol, undefined and DBPointer (pymongo cannot encode them): hand-built BSON."""

    def doc(type_byte: int, value: bytes) -> bytes:
        body = b"\x10_id\x00" + struct.pack("<i", 1) + bytes([type_byte]) + b"v\x00" + value
        return struct.pack("<i", len(body) + 5) + body + b"\x00"

    def string(s: bytes) -> bytes:
        return struct.pack("<i", len(s) + 1) + s + b"\x00"

    oid = bytes.fromhex("5465162b4bf6e4cb017c5311")
    cases = {
        "symbol": (doc(0x0E, string(b"abc")), b'{"_id": 1, "v": {"$symbol": "abc"}}'),
        "string": (doc(0x02, string(b"abc")), b'{"_id": 1, "v": "abc"}'),
        "undefined": (doc(0x06, b""), b'{"_id": 1, "v": {"$undefined": true}}'),
        "null": (doc(0x0A, b""), b'{"_id": 1, "v": null}'),
        "dbpointer": (
            doc(0x0C, string(b"db.c") + oid),
            b'{"_id": 1, "v": {"$dbPointer": {"$ref": "db.c", "$id": {"$oid": "'
            + oid.hex().encode()
            + b'"}}}}',
        ),
        "dbref": (
            bson.encode({"_id": 1, "v": {"$ref": "db.c", "$id": ObjectId(oid)}}),
            b'{"_id": 1, "v": {"$ref": "db.c", "$id": {"$oid": "' + oid.hex().encode() + b'"}}}',
        ),
    }
    records = {}
    for name, (raw, line) in cases.items():
        records[name] = logical_record_from_bson(raw)
        assert records[name] == logical_record_from_extjson(line), name
    assert len(set(records.values())) == len(cases)


def test_datetimes_out_of_range_and_negative() -> None:
    for ms in (-(2**63), -62135596800001, -1, 0, 253402300800000, 2**63 - 1):
        raw = bson.encode({"_id": DatetimeMS(ms)})
        line = b'{"_id": {"$date": {"$numberLong": "' + str(ms).encode() + b'"}}}'
        assert logical_record_from_bson(raw) == logical_record_from_extjson(line)
    assert logical_encode(DatetimeMS(-1)) != logical_encode(DatetimeMS(999))
    relaxed = b'{"_id": {"$date": "1970-01-01T00:00:01.5Z"}}'
    assert logical_record_from_extjson(relaxed)[0] == logical_encode(DatetimeMS(1500))


def test_nan_payloads_and_negative_zero() -> None:
    quiet = struct.unpack("<d", struct.pack("<Q", 0x7FF8000000000001))[0]
    assert logical_encode(quiet) == logical_encode(math.nan) == bytes.fromhex("f97e00")
    assert logical_encode(-0.0) == bytes.fromhex("f98000") != logical_encode(0.0)


def test_uuid_forms_agree() -> None:
    u = uuid.UUID("12345678-1234-5678-1234-567812345678")
    via_binary = logical_encode(Binary(u.bytes, 4))
    assert via_binary == logical_encode(u)
    line = b'{"_id": {"$uuid": "12345678-1234-5678-1234-567812345678"}}'
    assert logical_record_from_extjson(line)[0] == via_binary
    assert via_binary[:2] == bytes.fromhex("d825")  # tag 37


def test_duplicate_field_names_are_rejected_in_logical() -> None:
    body = b"\x10_id\x00\x01\x00\x00\x00\x10a\x00\x01\x00\x00\x00\x10a\x00\x02\x00\x00\x00"
    raw = struct.pack("<i", len(body) + 5) + body + b"\x00"
    exact_record(raw)  # exact hashes the bytes as stored
    with pytest.raises(FormatError, match="duplicate field name 'a'"):
        logical_record_from_bson(raw)


def test_invalid_utf8_is_rejected_in_logical() -> None:
    body = b"\x10_id\x00\x01\x00\x00\x00\x02s\x00\x02\x00\x00\x00\xff\x00"
    raw = struct.pack("<i", len(body) + 5) + body + b"\x00"
    with pytest.raises(FormatError, match="UTF-8"):
        logical_record_from_bson(raw)


def test_unicode_is_never_normalised() -> None:
    nfc, nfd = "\u00e9", "e\u0301"
    assert logical_encode(nfc) != logical_encode(nfd)


def test_exact_key_is_the_raw_id_element_wherever_it_is() -> None:
    raw = bson.encode({"a": 1, "b": {"x": [1, 2]}, "_id": "k"})
    key, value = exact_record(raw)
    assert key == b"\x02_id\x00\x02\x00\x00\x00k\x00" and value == raw


# --- Redis ----------------------------------------------------------------------------------

members = st.lists(st.binary(max_size=6), unique=True, max_size=8)


@settings(max_examples=100, deadline=None)
@given(members, st.randoms(use_true_random=False))
def test_redis_unordered_types_ignore_order(items: list[bytes], rnd: Any) -> None:
    shuffled = list(items)
    rnd.shuffle(shuffled)
    for kind, a, b in [
        ("set", frozenset(items), frozenset(shuffled)),
        ("hash", tuple((m, m * 2) for m in items), tuple((m, m * 2) for m in shuffled)),
        (
            "zset",
            tuple((m, float(len(m))) for m in items),
            tuple((m, float(len(m))) for m in shuffled),
        ),
    ]:
        ra = RedisRecord(key=b"k", type=kind, value=a)  # type: ignore[arg-type]
        rb = RedisRecord(key=b"k", type=kind, value=b)  # type: ignore[arg-type]
        assert encode_redis_record(ra) == encode_redis_record(rb)


def test_redis_ordered_types_keep_order() -> None:
    a = RedisRecord(key=b"k", type="list", value=(b"1", b"2"))
    b = RedisRecord(key=b"k", type="list", value=(b"2", b"1"))
    assert encode_redis_record(a) != encode_redis_record(b)
    entries = ((b"1-0", ((b"f", b"v"),)), (b"2-0", ((b"f", b"w"),)))
    s1 = RedisRecord(key=b"k", type="stream", value=entries)
    assert encode_redis_record(s1)[0] == b"k"
    with pytest.raises(FormatError, match="id order"):
        encode_redis_record(RedisRecord(key=b"k", type="stream", value=entries[::-1]))


def test_redis_expiry_and_type_matter() -> None:
    plain = RedisRecord(key=b"k", type="string", value=b"v")
    expiring = RedisRecord(key=b"k", type="string", value=b"v", expire_at_ms=1_700_000_000_000)
    as_list = RedisRecord(key=b"k", type="list", value=(b"v",))
    encoded = {encode_redis_record(r)[1] for r in (plain, expiring, as_list)}
    assert len(encoded) == 3
    assert cbor2.loads(encode_redis_record(expiring)[1]) == ["string", b"v", 1_700_000_000_000]


def test_redis_scores_and_validation() -> None:
    def zset(score: float) -> bytes:
        return encode_redis_record(RedisRecord(key=b"z", type="zset", value=((b"m", score),)))[1]

    assert zset(-0.0) != zset(0.0)
    assert zset(math.inf) != zset(-math.inf)
    assert zset(1) == zset(1.0)
    with pytest.raises(FormatError, match="NaN"):
        zset(math.nan)
    for bad in [
        RedisRecord(key=b"k", type="string", value="text"),
        RedisRecord(key=b"k", type="set", value=b"abc"),
        RedisRecord(key=b"k", type="hash", value=((b"f", b"1"), (b"f", b"2"))),
        RedisRecord(key=b"k", type="zset", value=((b"m", "1"),)),
        RedisRecord(key=b"k", type="nope", value=b""),  # type: ignore[arg-type]
        RedisRecord(key=b"k", type="string", value=b"v", expire_at_ms=1.5),  # type: ignore[arg-type]
    ]:
        with pytest.raises(FormatError):
            encode_redis_record(bad)


# --- the registry ------------------------------------------------------------------------


def test_registry_loads_the_exported_codecs() -> None:
    from affidavit.formats import bson_codec, redis_codec
    from affidavit.formats.codecs import CODECS, codec_for

    expected = {
        (RecordEncoding.BSON, "exact"): bson_codec.exact_record_checked,
        (RecordEncoding.BSON, "logical"): bson_codec.logical_record_from_bson,
        (RecordEncoding.EXTJSON, "logical"): bson_codec.logical_record_from_extjson,
        (RecordEncoding.REDIS, "exact"): redis_codec.encode_redis_record,
        (RecordEncoding.REDIS, "logical"): redis_codec.encode_redis_record,
    }
    assert set(CODECS) == set(expected)
    for (encoding, profile), fn in expected.items():
        assert CODECS[encoding, profile].load() is fn
        assert codec_for(encoding, profile) is fn


def test_registry_refuses_what_it_does_not_define() -> None:
    from affidavit.formats.codecs import codec_for

    with pytest.raises(InputError, match="not defined for extjson") as info:
        codec_for(RecordEncoding.EXTJSON, "exact")
    assert "--profile logical" in info.value.hint
    with pytest.raises(InputError, match="unknown profile"):
        codec_for(RecordEncoding.BSON, "fuzzy")  # type: ignore[arg-type]
