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
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Iterable, Mapping
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


def encode_redis_record(rec: RedisRecord) -> tuple[bytes, bytes]:
    """``(key bytes, deterministic CBOR of [type, canonical value, expire_at_ms|null])``."""
    key = _bytes(rec.key, "key", b"?")
    if rec.type not in _TYPES:
        raise FormatError(f"Redis key {key!r}: unknown type {rec.type!r}")
    expire = rec.expire_at_ms
    if expire is not None and (isinstance(expire, bool) or not isinstance(expire, int)):
        raise FormatError(f"Redis key {key!r}: expire_at_ms must be an integer or None")
    model = [rec.type, canonical_redis_value(rec), expire]
    return key, cbor2.dumps(model, canonical=True)
