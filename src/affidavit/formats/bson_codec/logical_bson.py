"""The ``logical`` codec from BSON: :func:`logical_record_from_bson` walks and validates a raw
document into the value model of :mod:`.values`; :func:`logical_value` and
:func:`logical_encode` map values pymongo has already decoded (keys, projected exports)."""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import cbor2
from bson.binary import Binary
from bson.code import Code
from bson.datetime_ms import DatetimeMS
from bson.dbref import DBRef
from bson.decimal128 import Decimal128
from bson.max_key import MaxKey
from bson.min_key import MinKey
from bson.objectid import ObjectId
from bson.regex import Regex
from bson.timestamp import Timestamp

from affidavit.errors import FormatError
from affidavit.formats.bson_codec.values import (
    MAX_NESTING,
    MAXKEY_VALUE,
    MINKEY_VALUE,
    binary_value,
    canonical_cbor,
    code_value,
    code_with_scope_value,
    datetime_value,
    dbpointer_value,
    decimal_value,
    logical_record,
    moment_value,
    objectid_value,
    regex_value,
    symbol_value,
    timestamp_value,
)
from affidavit.formats.bson_codec.wire import (
    DOUBLE,
    INT32,
    INT64,
    MIN_DOC,
    NUL,
    TIMESTAMP,
    bad,
    string_end,
)


def _string(buf: bytes, pos: int, end: int) -> tuple[str, int]:
    stop = string_end(buf, pos, end)
    try:
        return buf[pos + 4 : stop - 1].decode("utf-8"), stop
    except UnicodeDecodeError as exc:
        raise bad("string is not valid UTF-8", pos) from exc


def _cstring(buf: bytes, pos: int, end: int) -> tuple[str, int]:
    stop = buf.find(NUL, pos, end)
    if stop < 0:
        raise bad("unterminated cstring", pos)
    try:
        return buf[pos:stop].decode("utf-8"), stop + 1
    except UnicodeDecodeError as exc:
        raise bad("name is not valid UTF-8", pos) from exc


def _bson_document(  # noqa: PLR0915 - one flat type switch: the per-element hot loop
    buf: bytes, start: int, limit: int, depth: int, *, array: bool
) -> Any:
    """The value model of the document/array at ``buf[start:]`` (which must end by
    ``limit``). Most frequent types are tested first."""
    if depth > MAX_NESTING:
        raise FormatError(
            f"document nested deeper than {MAX_NESTING} levels (at byte {start})",
            hint="MongoDB itself refuses documents nested deeper than 100 levels",
        )
    if start + 4 > limit:
        raise bad("truncated document length", start)
    (size,) = INT32.unpack_from(buf, start)
    end = start + size - 1  # offset of the trailing NUL
    if size < MIN_DOC or end >= limit or buf[end] != 0:
        raise bad(f"bad document length {size}", start)
    items: list[Any] = []
    out: dict[str, Any] = {}
    pos = start + 4
    child = depth + 1
    while True:
        t = buf[pos]
        if t == 0:
            if pos != end:
                raise bad("document ends before its length says", pos)
            break
        name_start = pos + 1
        name_end = buf.find(NUL, name_start, end)
        if name_end < 0:
            raise bad("unterminated field name", name_start)
        vpos = name_end + 1
        value: Any
        if t == 0x02:
            value, pos = _string(buf, vpos, end)
        elif t == 0x10:
            if vpos + 4 > end:
                raise bad("truncated int32", vpos)
            (value,) = INT32.unpack_from(buf, vpos)
            pos = vpos + 4
        elif t == 0x01:
            if vpos + 8 > end:
                raise bad("truncated double", vpos)
            (value,) = DOUBLE.unpack_from(buf, vpos)
            pos = vpos + 8
        elif t in (0x03, 0x04):
            (n,) = INT32.unpack_from(buf, vpos) if vpos + 4 <= end else (0,)
            value = _bson_document(buf, vpos, end, child, array=t == 0x04)
            pos = vpos + n
        elif t == 0x07:
            pos = vpos + 12
            if pos > end:
                raise bad("truncated ObjectId", vpos)
            value = objectid_value(buf[vpos:pos])
        elif t == 0x12:
            if vpos + 8 > end:
                raise bad("truncated int64", vpos)
            (value,) = INT64.unpack_from(buf, vpos)
            pos = vpos + 8
        elif t == 0x08:
            if vpos + 1 > end or buf[vpos] > 1:
                raise bad("bad boolean", vpos)
            value = buf[vpos] == 1
            pos = vpos + 1
        elif t == 0x0A:
            value, pos = None, vpos
        elif t == 0x09:
            if vpos + 8 > end:
                raise bad("truncated datetime", vpos)
            (ms,) = INT64.unpack_from(buf, vpos)
            value = datetime_value(ms)
            pos = vpos + 8
        elif t == 0x05:
            if vpos + 5 > end:
                raise bad("truncated binary", vpos)
            (n,) = INT32.unpack_from(buf, vpos)
            subtype = buf[vpos + 4]
            pos = vpos + 5 + n
            if n < 0 or pos > end:
                raise bad(f"bad binary length {n}", vpos)
            data = buf[vpos + 5 : pos]
            if subtype == 2:  # old binary: an inner int32 length repeats the size
                if n < 4 or INT32.unpack_from(data, 0)[0] != n - 4:
                    raise bad("binary subtype 2 with a wrong inner length", vpos)
                data = data[4:]
            value = binary_value(subtype, data)
        elif t == 0x11:
            if vpos + 8 > end:
                raise bad("truncated timestamp", vpos)
            inc, secs = TIMESTAMP.unpack_from(buf, vpos)
            value = timestamp_value(secs, inc)
            pos = vpos + 8
        elif t == 0x13:
            pos = vpos + 16
            if pos > end:
                raise bad("truncated decimal128", vpos)
            value = decimal_value(Decimal128.from_bid(buf[vpos:pos]))
        elif t == 0x0B:
            pattern, p = _cstring(buf, vpos, end)
            options, pos = _cstring(buf, p, end)
            value = regex_value(pattern, options)
        elif t == 0x0D:
            code, pos = _string(buf, vpos, end)
            value = code_value(code)
        elif t == 0x0E:
            sym, pos = _string(buf, vpos, end)
            value = symbol_value(sym)
        elif t == 0x0F:
            if vpos + 4 > end:
                raise bad("truncated code with scope", vpos)
            (n,) = INT32.unpack_from(buf, vpos)
            pos = vpos + n
            if n < 14 or pos > end:
                raise bad(f"bad code-with-scope length {n}", vpos)
            code, p = _string(buf, vpos + 4, pos)
            scope = _bson_document(buf, p, pos, child, array=False)
            (scope_size,) = INT32.unpack_from(buf, p)
            if p + scope_size != pos:
                raise bad("code-with-scope length does not match its parts", vpos)
            value = code_with_scope_value(code, scope)
        elif t == 0x0C:
            ns, p = _string(buf, vpos, end)
            pos = p + 12
            if pos > end:
                raise bad("truncated DBPointer", vpos)
            value = dbpointer_value(ns, buf[p:pos])
        elif t == 0x06:
            value, pos = cbor2.undefined, vpos
        elif t == 0xFF:
            value, pos = MINKEY_VALUE, vpos
        elif t == 0x7F:
            value, pos = MAXKEY_VALUE, vpos
        else:
            raise bad(f"unknown BSON type 0x{t:02x}", pos)
        if pos > end:
            raise bad("value overruns the document", vpos)
        if array:
            items.append(value)
        else:
            try:
                key = buf[name_start:name_end].decode("utf-8")
            except UnicodeDecodeError as exc:
                raise bad("field name is not valid UTF-8", name_start) from exc
            if key in out:
                raise bad(f"duplicate field name {key!r}", name_end)
            out[key] = value
    return items if array else out


def logical_record_from_bson(raw_doc: bytes) -> tuple[bytes, bytes]:
    """The ``logical`` record of a raw BSON document: ``(logical(_id), logical(document))``.

    Walks and validates the whole document (every length, UTF-8 string, type byte, nesting
    depth, duplicate names). Raises ``FormatError`` when malformed, nested deeper than
    :data:`MAX_NESTING`, or without ``_id``.
    """
    model = _bson_document(raw_doc, 0, len(raw_doc), 0, array=False)
    (size,) = INT32.unpack_from(raw_doc, 0)
    if size != len(raw_doc):
        raise bad(f"length prefix {size} differs from the record's {len(raw_doc)} bytes", 0)
    return logical_record(model)


def _regex_flags(flags: int | str) -> str:
    if isinstance(flags, str):
        return flags
    letters = [
        (re.IGNORECASE, "i"),
        (re.LOCALE, "l"),
        (re.MULTILINE, "m"),
        (re.DOTALL, "s"),
        (re.UNICODE, "u"),
        (re.VERBOSE, "x"),
    ]
    return "".join(letter for bit, letter in letters if flags & bit)


def logical_value(value: Any, _depth: int = 0) -> Any:
    """The logical value model of a Python/``bson`` value (what pymongo decodes), ready for
    :func:`logical_encode`. Raises ``FormatError`` for a type that has no mapping.

    Values decoded by pymongo have already lost three distinctions that
    :func:`logical_record_from_bson` keeps: symbol (decoded as ``str``), undefined (decoded as
    ``None``) and DBPointer (decoded as ``DBRef``, i.e. a ``{$ref, $id}`` document). Use the
    raw-BSON entry point for records; this one serves keys and projected exports.
    """
    if _depth > MAX_NESTING:
        raise FormatError(f"document nested deeper than {MAX_NESTING} levels")
    if value is None:
        return None
    if isinstance(value, bool):
        return value
    if isinstance(value, int):  # int, Int64
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, Code):  # before str: Code is a str
        if value.scope is None:
            return code_value(str(value))
        return code_with_scope_value(str(value), logical_value(value.scope, _depth + 1))
    if isinstance(value, str):
        return str(value)
    if isinstance(value, ObjectId):
        return objectid_value(value.binary)
    if isinstance(value, Binary):  # before bytes: Binary is a bytes
        return binary_value(value.subtype, bytes(value))
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    if isinstance(value, DatetimeMS):
        return datetime_value(int(value))
    if isinstance(value, datetime):
        return moment_value(value)
    if isinstance(value, Decimal128):
        return decimal_value(value)
    if isinstance(value, Regex):
        return regex_value(str(value.pattern), _regex_flags(value.flags))
    if isinstance(value, Timestamp):
        return timestamp_value(value.time, value.inc)
    if isinstance(value, MinKey):
        return MINKEY_VALUE
    if isinstance(value, MaxKey):
        return MAXKEY_VALUE
    if isinstance(value, uuid.UUID):
        return binary_value(4, value.bytes)  # a UUID is binary subtype 4
    if isinstance(value, DBRef):
        return logical_value(value.as_doc(), _depth)
    if isinstance(value, Mapping):
        if hasattr(value, "raw") and isinstance(value.raw, bytes):  # RawBSONDocument
            return _bson_document(value.raw, 0, len(value.raw), _depth, array=False)
        out: dict[str, Any] = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise FormatError(f"document key {k!r} is not a string")
            out[k] = logical_value(v, _depth + 1)
        return out
    if isinstance(value, list | tuple):
        return [logical_value(v, _depth + 1) for v in value]
    raise FormatError(f"no logical mapping for a value of type {type(value).__name__}")


def logical_encode(value: Any) -> bytes:
    """Deterministic CBOR (RFC 8949 §4.2.1: shortest integers and floats, map keys sorted
    bytewise by their encodings, definite lengths) of ``logical_value(value)``."""
    return canonical_cbor(logical_value(value))
