"""The fast paths of exports (formats/extjson_fast.py) give exactly what the general
conversions give, over every BSON type and the edges of numbers and dates."""

from __future__ import annotations

import math
import random
import re
import uuid
from datetime import datetime
from typing import Any

import bson
import pytest
from bson.code import Code
from bson.datetime_ms import DatetimeMS
from bson.dbref import DBRef
from bson.decimal128 import Decimal128
from bson.int64 import Int64
from bson.max_key import MaxKey
from bson.min_key import MinKey
from bson.regex import Regex
from bson.timestamp import Timestamp

from affidavit.errors import FormatError
from affidavit.formats.bson_codec.extjson_fast import (
    canonical_value,
    decode_document,
    logical_record_of,
    relaxed_value,
)
from affidavit.formats.bson_codec.logical_extjson import logical_record_from_extjson
from affidavit.formats.extjson_documents import canonical_document, relaxed_document
from affidavit.services.exports.records import encode_line

VALUES: list[Any] = [
    None,
    True,
    False,
    "",
    'héllo \u2028 "q" \\ \n',
    0,
    -1,
    2**31 - 1,
    2**31,
    -(2**31),
    -(2**31) - 1,
    2**63 - 1,
    -(2**63),
    Int64(5),
    Int64(2**40),
    0.0,
    -0.0,
    1.0,
    1.5,
    1e300,
    -1e-300,
    5e-324,
    math.nan,
    math.inf,
    -math.inf,
    bson.ObjectId("0123456789abcdef01234567"),
    datetime(1970, 1, 1),
    datetime(1969, 12, 31, 23, 59, 59, 999000),
    datetime(1, 1, 1),
    datetime(9999, 12, 31, 23, 59, 59, 999000),
    datetime(2024, 2, 29, 12, 30, 1, 5000),
    datetime(2024, 2, 29, 12, 30, 1),
    DatetimeMS(2**62),
    DatetimeMS(-(2**62)),
    b"\x00\x01",
    bson.Binary(b"x" * 16, 4),
    bson.Binary(uuid.UUID("7c9e6679-7425-40de-944b-e07fc1f90ae7").bytes, 3),
    bson.Binary(b"abc", 0x80),
    Decimal128("1.10"),
    Decimal128("-0"),
    Decimal128("NaN"),
    Regex("^a.*", "imx"),
    re.compile("b+", re.IGNORECASE),
    Code("function(){}"),
    Code("x", {"a": 1}),
    Timestamp(5, 7),
    MinKey(),
    MaxKey(),
    DBRef("coll", 5),
    {"a": {"b": [1, {"c": 2.5}]}},
    {"$notawrapper": 1, "x": 2},
    [],
    [1, "two", None, [3.0]],
]


def _documents() -> list[bytes]:
    docs = [bson.encode({"_id": n, "v": value}) for n, value in enumerate(VALUES)]
    rng = random.Random(5)
    for n in range(200):
        picked = {f"f{k}": rng.choice(VALUES) for k in range(rng.randrange(1, 6))}
        docs.append(bson.encode({"_id": rng.choice(VALUES[5:30]), **picked, "n": n}))
    return docs


@pytest.mark.parametrize("raw", _documents())
def test_fast_forms_equal_the_general_ones(raw: bytes) -> None:
    general = canonical_document(raw)
    fast = {k: canonical_value(v) for k, v in decode_document(raw).items()}
    assert encode_line(fast) == encode_line(general)
    try:
        expected: Any = relaxed_document(general)
    except FormatError as exc:
        expected = exc.message
    try:
        got: Any = relaxed_value(fast)
    except FormatError as exc:
        got = exc.message
    assert got == expected
    if not isinstance(expected, str):  # the same types too (1 and 1.0 are equal)
        assert repr(got) == repr(expected)
    assert logical_record_of(fast) == logical_record_from_extjson(encode_line(general))


def test_malformed_wrappers_fail_as_the_general_path_does() -> None:
    for bad in ({"$numberInt": "x1"}, {"$numberDouble": "one"}, {"$date": {"$numberLong": "z"}}):
        document = {"_id": 1, "v": bad}
        with pytest.raises(FormatError):
            relaxed_document(document)
        with pytest.raises(FormatError):
            relaxed_value(document)
        with pytest.raises(FormatError):
            logical_record_of(document)


def test_not_bson_is_refused() -> None:
    with pytest.raises(FormatError):
        decode_document(b"\x05\x00\x00\x00\x01")
    raw = bytearray(bson.encode({"_id": 1, "s": "ab"}))
    raw[-3] = 0xFF  # invalid UTF-8 in the string
    with pytest.raises(FormatError):
        decode_document(bytes(raw))


def test_the_fast_cbor_orders_keys_as_cbor2_does() -> None:
    keys = ["_id", "a", "Z", "bb", "é", "aaa", "k" * 23, "k" * 24, "k" * 300, "ü" * 20, "\x7f"]
    raw = bson.encode({k: n for n, k in enumerate(keys)})
    fast = {k: canonical_value(v) for k, v in decode_document(raw).items()}
    assert logical_record_of(fast) == logical_record_from_extjson(encode_line(fast))
    ints = [0, 23, 24, 255, 256, 65535, 65536, 2**32 - 1, 2**32, 2**63 - 1, -1, -24, -25, -(2**63)]
    raw = bson.encode({"_id": 1, **{f"i{n}": v for n, v in enumerate(ints)}})
    fast = {k: canonical_value(v) for k, v in decode_document(raw).items()}
    assert logical_record_of(fast) == logical_record_from_extjson(encode_line(fast))
    for bad in ({"$oid": "0123456789abcdef0123456 "}, {"$numberInt": "٣"}, {"$numberLong": "--1"}):
        with pytest.raises(FormatError):
            logical_record_of({"_id": 1, "v": bad})
    with pytest.raises(FormatError, match="no top-level _id"):
        logical_record_of({"v": "x"})
