"""Canonical record form of a Redis key (both profiles).

``encode_redis_record(rec) -> (key, value)``: the key is the raw key bytes; the value is the
RFC 8949 §4.2.1 deterministic CBOR of ``[type name, canonical value, expire_at_ms or null]``:

=========  ===================================================================
type       canonical value
=========  ===================================================================
string     byte string
list       array of byte strings, in list order
set        array of byte strings sorted bytewise
hash       array of ``[field, value]`` byte-string pairs sorted by field bytes
zset       array of ``[member, score]`` sorted by member bytes; ``score`` is the
           float64 value in CBOR's shortest exact float form; ``-0.0`` is kept
           distinct from ``0.0`` (Redis stores and returns it), ``±inf`` are
           allowed, NaN is rejected (Redis cannot hold it)
stream     array of ``[entry id, [[field, value], ...]]`` in id order (fields in
           entry order); only the entries: consumer groups are not covered
=========  ===================================================================

The same form serves ``exact`` and ``logical``: Redis has one representation of a value
whatever carries it (RDB file, live ``SCAN``), and the expiry is an absolute Unix time in
milliseconds, so a backup taken at T and a live read at T+1h agree while the key lives.
A value that does not match its type raises ``FormatError``.

The reference encoding is :func:`_encode_general` (the value model above through ``cbor2`` in
canonical mode). :func:`encode_redis_record` writes the same bytes itself for the shapes the
readers produce (``bytes`` values, tuples, frozensets, float scores, 64-bit expiries), three
to four times faster, and hands every other shape, and every record it would refuse, to the
reference path.
"""

from __future__ import annotations

import itertools
import math
import re
import struct
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final

import cbor2

from affidavit.errors import FormatError
from affidavit.models.records import RedisRecord

_TYPES: Final = frozenset({"string", "list", "set", "zset", "hash", "stream"})
_STREAM_ID = re.compile(rb"([0-9]{1,20})-([0-9]{1,20})")


def _bytes(value: Any, what: str, key: bytes) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, bytearray | memoryview):
        return bytes(value)
    raise FormatError(f"Redis key {key!r}: {what} must be bytes, got {type(value).__name__}")


def _items(value: Any, what: str, key: bytes) -> Iterable[Any]:
    if isinstance(value, Mapping):
        return list(value.items())
    if isinstance(value, bytes | str) or not isinstance(value, Iterable):
        raise FormatError(f"Redis key {key!r}: {what} must be a collection")
    return value


def _pairs(value: Any, what: str, key: bytes) -> list[tuple[Any, Any]]:
    out = []
    for item in _items(value, what, key):
        if not isinstance(item, tuple | list) or len(item) != 2:
            raise FormatError(f"Redis key {key!r}: {what} entries must be pairs")
        out.append((item[0], item[1]))
    return out


def _unique_sorted(pairs: list[tuple[bytes, Any]], what: str, key: bytes) -> list[Any]:
    pairs.sort(key=lambda p: p[0])
    for a, b in itertools.pairwise(pairs):
        if a[0] == b[0]:
            raise FormatError(f"Redis key {key!r}: duplicate {what} {a[0]!r}")
    return [[k, v] for k, v in pairs]


def _score(value: Any, key: bytes) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise FormatError(f"Redis key {key!r}: zset score must be a number")
    score = float(value)
    if math.isnan(score):
        raise FormatError(f"Redis key {key!r}: zset score is NaN, which Redis cannot hold")
    return score


def _stream_id(raw: bytes, key: bytes) -> tuple[int, int]:
    match = _STREAM_ID.fullmatch(raw)
    if match is None:
        raise FormatError(f"Redis key {key!r}: stream entry id {raw!r} is not MS-SEQ")
    return int(match.group(1)), int(match.group(2))


def canonical_redis_value(rec: RedisRecord) -> Any:
    """The canonical value model of ``rec.value`` for its type (see the module docstring)."""
    key, kind, value = rec.key, rec.type, rec.value
    if kind == "string":
        return _bytes(value, "string value", key)
    if kind == "list":
        return [_bytes(v, "list element", key) for v in _items(value, "list", key)]
    if kind == "set":
        members = sorted(_bytes(v, "set member", key) for v in _items(value, "set", key))
        for a, b in itertools.pairwise(members):
            if a == b:
                raise FormatError(f"Redis key {key!r}: duplicate set member {a!r}")
        return members
    if kind == "hash":
        fields = [
            (_bytes(f, "hash field", key), _bytes(v, "hash value", key))
            for f, v in _pairs(value, "hash", key)
        ]
        return _unique_sorted(fields, "hash field", key)
    if kind == "zset":
        scored: list[tuple[bytes, Any]] = [
            (_bytes(m, "zset member", key), _score(s, key)) for m, s in _pairs(value, "zset", key)
        ]
        return _unique_sorted(scored, "zset member", key)
    if kind == "stream":
        entries = []
        last: tuple[int, int] | None = None
        for entry_id, fields in _pairs(value, "stream", key):
            raw_id = _bytes(entry_id, "stream entry id", key)
            parsed = _stream_id(raw_id, key)
            if last is not None and parsed <= last:
                raise FormatError(f"Redis key {key!r}: stream entries are not in id order")
            last = parsed
            entries.append(
                [
                    raw_id,
                    [
                        [_bytes(f, "stream field", key), _bytes(v, "stream value", key)]
                        for f, v in _pairs(fields, "stream entry", key)
                    ],
                ]
            )
        return entries
    raise FormatError(f"Redis key {key!r}: unknown type {kind!r}")


def _encode_general(rec: RedisRecord) -> tuple[bytes, bytes]:
    """The reference encoding: the canonical value model, then ``cbor2`` in canonical mode.
    Every input the fast path below does not take (other container or element types, int
    scores, streams, bignum expiries) and every input it refuses comes here."""
    key = _bytes(rec.key, "key", b"?")
    if rec.type not in _TYPES:
        raise FormatError(f"Redis key {key!r}: unknown type {rec.type!r}")
    expire = rec.expire_at_ms
    if expire is not None and (isinstance(expire, bool) or not isinstance(expire, int)):
        raise FormatError(f"Redis key {key!r}: expire_at_ms must be an integer or None")
    model = [rec.type, canonical_redis_value(rec), expire]
    return key, cbor2.dumps(model, canonical=True)


# --- the fast path: the same bytes written directly (RFC 8949 §4.2.1 preferred forms) --------

#: ``[type, ...`` : a 3-element array and the type name as a text string
_HEAD: Final = {
    name: b"\x83" + bytes([0x60 + len(name)]) + name.encode("ascii") for name in sorted(_TYPES)
}
_F16 = struct.Struct(">e")
_F32 = struct.Struct(">f")
_F64 = struct.Struct(">d")
_F32_MAX: Final = 3.4028234663852886e38  # the largest finite binary32
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")


def _head(major: int, n: int) -> bytes:
    """The shortest CBOR head of major type ``major`` with argument ``0 <= n < 2**64``."""
    if n < 24:
        return bytes([major | n])
    if n < 0x100:
        return bytes([major | 24, n])
    if n < 0x10000:
        return bytes([major | 25]) + _U16.pack(n)
    if n < 0x100000000:
        return bytes([major | 26]) + _U32.pack(n)
    return bytes([major | 27]) + _U64.pack(n)


#: heads of byte strings and arrays of fewer than 256 items
_BYTES_HEAD: Final = tuple(_head(0x40, n) for n in range(256))
_ARRAY_HEAD: Final = tuple(_head(0x80, n) for n in range(256))
_PAIR: Final = b"\x82"
#: a 2-element array's head followed by the head of a byte string of fewer than 256 bytes
_PAIR_HEAD: Final = tuple(_PAIR + head for head in _BYTES_HEAD)


def _float(x: float) -> bytes:
    """``x`` (not NaN) in the shortest of binary16/32/64 that holds it exactly, as cbor2's
    canonical mode writes it (``-0.0`` and the infinities fit binary16). The range checks
    keep ``struct`` from raising OverflowError (slow) on values too large for a format."""
    if -65504.0 <= x <= 65504.0:  # the largest finite binary16
        half = _F16.pack(x)
        if _F16.unpack(half)[0] == x:
            return b"\xf9" + half
    elif x == math.inf:
        return b"\xf9\x7c\x00"
    elif x == -math.inf:
        return b"\xf9\xfc\x00"
    if -_F32_MAX <= x <= _F32_MAX:
        single = _F32.pack(x)
        if _F32.unpack(single)[0] == x:
            return b"\xfa" + single
    return b"\xfb" + _F64.pack(x)


def _encode_string(value: Any, tail: bytes) -> bytes | None:
    if type(value) is not bytes:
        return None
    n = len(value)
    return b"".join((_HEAD["string"], _BYTES_HEAD[n] if n < 256 else _head(0x40, n), value, tail))


def _encode_array(head: bytes, items: Any, tail: bytes) -> bytes | None:
    """``head``, then ``items`` (byte strings, in the given order) as an array, then
    ``tail``; None when an item is not ``bytes``."""
    bh = _BYTES_HEAD
    n = len(items)
    parts = [head, _ARRAY_HEAD[n] if n < 256 else _head(0x80, n)]
    append = parts.append
    for item in items:
        if type(item) is not bytes:
            return None
        n = len(item)
        append(bh[n] if n < 256 else _head(0x40, n))
        append(item)
    append(tail)
    return b"".join(parts)


def _encode_list(value: Any, tail: bytes) -> bytes | None:
    if type(value) is not tuple:
        return None
    return _encode_array(_HEAD["list"], value, tail)


def _encode_set(value: Any, tail: bytes) -> bytes | None:
    if type(value) is not frozenset and type(value) is not set:
        return None
    try:
        members = sorted(value)
    except TypeError:
        return None
    return _encode_array(_HEAD["set"], members, tail)  # a set of bytes has no duplicates


def _encode_hash(value: Any, tail: bytes) -> bytes | None:
    if type(value) is not tuple:
        return None
    try:
        pairs = sorted(value)  # by field: equal fields are refused below
    except TypeError:
        return None
    bh = _BYTES_HEAD
    ph = _PAIR_HEAD
    n = len(pairs)
    parts = [_HEAD["hash"], _ARRAY_HEAD[n] if n < 256 else _head(0x80, n)]
    append = parts.append
    previous = None
    for pair in pairs:
        if type(pair) is not tuple or len(pair) != 2:
            return None
        name, item = pair
        if type(name) is not bytes or type(item) is not bytes or name == previous:
            return None
        previous = name
        n = len(name)
        append(ph[n] if n < 256 else _PAIR + _head(0x40, n))
        append(name)
        n = len(item)
        append(bh[n] if n < 256 else _head(0x40, n))
        append(item)
    append(tail)
    return b"".join(parts)


def _encode_zset(value: Any, tail: bytes) -> bytes | None:
    if type(value) is not tuple:
        return None
    try:
        pairs = sorted(value)  # by member: equal members are refused below
    except TypeError:
        return None
    ph = _PAIR_HEAD
    n = len(pairs)
    parts = [_HEAD["zset"], _ARRAY_HEAD[n] if n < 256 else _head(0x80, n)]
    append = parts.append
    previous = None
    for pair in pairs:
        if type(pair) is not tuple or len(pair) != 2:
            return None
        name, score = pair
        if type(name) is not bytes or type(score) is not float or name == previous:
            return None
        if score != score:  # noqa: PLR0124 - NaN
            return None
        previous = name
        n = len(name)
        append(ph[n] if n < 256 else _PAIR + _head(0x40, n))
        append(name)
        append(_float(score))
    append(tail)
    return b"".join(parts)


#: the fast path by type: the CBOR of ``[type, canonical value, expiry]`` (``tail`` is the
#: encoded expiry) for the shapes a reader produces (bytes; tuples of bytes or of pairs;
#: frozensets; float scores); None for anything else (int scores, lists, mappings, other
#: element types, streams), which the general path then encodes or refuses
_FAST: Final[dict[str, Callable[[Any, bytes], bytes | None]]] = {
    "string": _encode_string,
    "list": _encode_list,
    "set": _encode_set,
    "hash": _encode_hash,
    "zset": _encode_zset,
}


def encode_redis_record(rec: RedisRecord) -> tuple[bytes, bytes]:
    """``(key bytes, deterministic CBOR of [type, canonical value, expire_at_ms|null])``."""
    key = rec.key
    expire = rec.expire_at_ms
    if type(key) is bytes:
        if expire is None:
            tail = b"\xf6"
        elif type(expire) is not int:
            return _encode_general(rec)
        elif 0x100000000 <= expire < 0x10000000000000000:  # Unix times in ms are here
            tail = b"\x1b" + _U64.pack(expire)
        elif 0 <= expire < 0x100000000:
            tail = _head(0x00, expire)
        elif -0x10000000000000000 <= expire < 0:
            tail = _head(0x20, -1 - expire)
        else:  # a bignum: cbor2 writes the tag
            return _encode_general(rec)
        fast = _FAST.get(rec.type)
        if fast is not None:
            encoded = fast(rec.value, tail)
            if encoded is not None:
                return key, encoded
    return _encode_general(rec)
