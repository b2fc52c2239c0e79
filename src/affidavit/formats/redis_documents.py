"""One Redis key as a document (record shape ``redis-key/1``, docs/exports.md "A Redis
input"): what an export reads for each key of a Redis dataset, so that the allow-list, the
transforms, the contract and ``export verify`` address it like any other record::

    {"_id": KEY, "type": "string|list|set|zset|hash|stream", "value": ..., "expire_at_ms": MS}

- ``_id``: the key; ``value`` by type: string -> the string; list -> an array in list order;
  set -> an array sorted bytewise; zset -> an array of ``{"member": M, "score": S}`` sorted by
  member bytes (``S`` a double); hash -> a sub-document of its fields sorted by field bytes;
  stream -> an array of ``{"id": "MS-SEQ", "fields": {...}}`` in id order (entries only);
- every byte string that is valid UTF-8 is a string, any other is BSON binary (canonical
  Extended JSON ``$binary``); a hash (or stream entry) whose field names are not all UTF-8
  without NUL and without a leading ``$`` (or repeat) is an array of ``[field, value]``
  pairs instead of a sub-document, so that no record is lost or misread;
- ``expire_at_ms``: the absolute expiry in Unix milliseconds (an Int64), or null: the same
  absolute time the fingerprint's canonical record carries (a relative TTL would change with
  the moment of the read, and with it the output's digest).

These are the parts and orders of :mod:`affidavit.formats.redis_codec` (the fingerprint's
canonical record), written as a document.
"""

from __future__ import annotations

from typing import Any, Final

import bson
from bson.int64 import Int64

from affidavit.errors import FormatError
from affidavit.models.records import RedisRecord

RECORD_SHAPE: Final = "redis-key/1"
"""The name of this record shape (an export manifest's ``input.record_shape``)."""


def _text(raw: bytes) -> str | bytes:
    """A byte string as a string when it is UTF-8, else as itself (BSON binary)."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw


def _name(raw: bytes) -> str | None:
    """A field name usable as a document key (None: not usable)."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if "\x00" in text or text.startswith("$"):
        return None
    return text


def _fields(pairs: list[tuple[bytes, bytes]]) -> dict[str, Any] | list[list[Any]]:
    """Field/value pairs as a sub-document, or (names not usable, or repeated) as pairs."""
    names = [_name(f) for f, _ in pairs]
    if all(n is not None for n in names) and len(set(names)) == len(names):
        return {n: _text(v) for n, (_, v) in zip(names, pairs, strict=True) if n is not None}
    return [[_text(f), _text(v)] for f, v in pairs]


def _value(record: RedisRecord) -> Any:
    kind, value = record.type, record.value
    if kind == "string":
        assert isinstance(value, bytes | bytearray)
        return _text(bytes(value))
    if kind == "list":
        return [_text(bytes(v)) for v in value]  # type: ignore[attr-defined]
    if kind == "set":
        return [_text(v) for v in sorted(bytes(m) for m in value)]  # type: ignore[attr-defined]
    if kind == "zset":
        members = sorted((bytes(m), float(s)) for m, s in value)  # type: ignore[attr-defined]
        return [{"member": _text(m), "score": s} for m, s in members]
    if kind == "hash":
        return _fields(sorted((bytes(f), bytes(v)) for f, v in value))  # type: ignore[attr-defined]
    if kind == "stream":
        return [
            {
                "id": bytes(entry_id).decode("ascii"),
                "fields": _fields([(bytes(f), bytes(v)) for f, v in fields]),
            }
            for entry_id, fields in value  # type: ignore[attr-defined]
        ]
    raise FormatError(
        f"Redis key {record.key[:80]!r} has the type {kind!r}, which an export cannot read",
        hint="the types read: string, list, set, zset, hash, stream",
    )


def redis_document(record: RedisRecord) -> dict[str, Any]:
    """One key as the document an export reads (see the module docstring)."""
    return {
        "_id": _text(record.key),
        "type": record.type,
        "value": _value(record),
        "expire_at_ms": Int64(record.expire_at_ms) if record.expire_at_ms is not None else None,
    }


def redis_bson(record: RedisRecord) -> bytes:
    """:func:`redis_document` as one BSON document (what an export pass decodes)."""
    return bson.encode(redis_document(record))
