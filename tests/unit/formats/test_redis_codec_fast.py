"""``encode_redis_record``'s fast path writes the CBOR itself; it must give exactly the bytes
of the reference encoding (the canonical value model through ``cbor2``) or leave the record to
it, whatever the value's shape."""

from __future__ import annotations

import math
import struct
from typing import Any

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from affidavit.errors import FormatError
from affidavit.formats.redis_codec import _encode_general, _float, encode_redis_record
from affidavit.models.records import RedisRecord


def _result(fn: Any, record: RedisRecord) -> Any:
    try:
        return fn(record)
    except FormatError as exc:
        return ("error", str(exc))


def _check(record: RedisRecord) -> None:
    assert _result(encode_redis_record, record) == _result(_encode_general, record)


blobs = st.one_of(
    st.binary(max_size=30),
    st.sampled_from([0, 23, 24, 255, 256, 65535, 65536]).map(lambda n: b"x" * n),
)
scores = st.one_of(
    st.floats(allow_nan=False),
    st.sampled_from([0.0, -0.0, math.inf, -math.inf, 65504.0, 65520.0, 3.4028235677973366e38]),
    st.floats(width=16, allow_nan=False),
    st.floats(width=32, allow_nan=False),
)
expiries = st.one_of(
    st.none(),
    st.integers(min_value=-(1 << 70), max_value=1 << 70),
    st.sampled_from([0, 23, 24, 255, 256, 65535, 65536, (1 << 32) - 1, 1 << 32, (1 << 64) - 1,
                     1 << 64, -1, -24, -25, -(1 << 64), -(1 << 64) - 1, 1_700_000_000_000]),
)  # fmt: skip


@settings(max_examples=400, deadline=None)
@given(
    st.one_of(
        st.tuples(st.just("string"), blobs),
        st.tuples(st.just("list"), st.lists(blobs, max_size=30).map(tuple)),
        st.tuples(st.just("set"), st.frozensets(blobs, max_size=30)),
        st.tuples(st.just("hash"), st.lists(st.tuples(blobs, blobs), max_size=30).map(tuple)),
        st.tuples(st.just("zset"), st.lists(st.tuples(blobs, scores), max_size=30).map(tuple)),
    ),
    st.binary(max_size=300),
    expiries,
)
def test_fast_encoding_is_the_reference_encoding(
    typed: tuple[str, Any], key: bytes, expire: int | None
) -> None:
    kind, value = typed
    _check(RedisRecord(key=key, type=kind, value=value, expire_at_ms=expire))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kind", "value"),
    [
        ("string", bytearray(b"v")),
        ("string", memoryview(b"v")),
        ("string", "text"),
        ("list", [b"a", b"b"]),
        ("list", (b"a", bytearray(b"b"))),
        ("list", (b"a", "b")),
        ("list", b"ab"),
        ("set", {b"a", b"b"}),
        ("set", frozenset({b"a", "a"})),
        ("set", frozenset({b"a", memoryview(b"b")})),
        ("set", [b"b", b"a"]),
        ("hash", ((b"f", b"1"), (b"f", b"2"))),
        ("hash", ((b"f", b"1"), (b"f", "2"))),
        ("hash", ((b"f", b"1"), [b"g", b"2"])),
        ("hash", ((b"f", b"1", b"x"),)),
        ("hash", {b"f": b"1"}),
        ("hash", ((b"f", 1),)),
        ("zset", ((b"m", 1),)),
        ("zset", ((b"m", True),)),
        ("zset", ((b"m", math.nan),)),
        ("zset", ((b"m", 1.0), (b"m", 2.0))),
        ("zset", ((b"m", 1.0), (b"m", "x"))),
        ("zset", ((b"m", "1"),)),
        ("stream", ((b"1-0", ((b"f", b"v"),)), (b"2-0", ()))),
        ("stream", ((b"2-0", ()), (b"1-0", ()))),
        ("nope", b""),
    ],
)
def test_other_shapes_take_the_reference_path(kind: str, value: Any) -> None:
    _check(RedisRecord(key=b"k", type=kind, value=value))  # type: ignore[arg-type]
    _check(RedisRecord(key=bytearray(b"k"), type=kind, value=value))  # type: ignore[arg-type]


@pytest.mark.parametrize("expire", [True, 1.5, "1", 1 << 64, -(1 << 64) - 1])
def test_odd_expiries_take_the_reference_path(expire: Any) -> None:
    _check(RedisRecord(key=b"k", type="string", value=b"v", expire_at_ms=expire))


def test_float_is_cbor2s_shortest_exact_form() -> None:
    values = [0.0, -0.0, math.inf, -math.inf, 1.5, 0.1, 1 / 3, 65504.0, 65505.0, 65520.0, 2.0**-24,
              2.0**-25, 2.0**-149, 2.0**-150, 3.4028234663852886e38, 3.4028235677973366e38,
              1e300, 5e-324, 16777216.0, 16777217.0, 1_700_000_000_000.0]  # fmt: skip
    for raw in range(0, 1 << 16, 7):  # every 7th binary16 pattern
        values.append(struct.unpack(">e", raw.to_bytes(2, "big"))[0])
    for x in values:
        if not math.isnan(x):
            assert _float(x) == cbor2.dumps(x, canonical=True), x
