"""The logical value model and its canonical encoding, shared by the logical codecs of
:mod:`.logical_bson` and :mod:`.logical_extjson`.

A document read from BSON and the same document read from canonical (or relaxed) Extended
JSON v2 become the same value model, whose RFC 8949 §4.2.1 core deterministic CBOR encoding
(:func:`canonical_cbor`) is the ``logical`` record. The mapping of every BSON type is
documented in ``docs/formats/logical-values.md``; in short:

==================  ==============================================================
BSON type           logical CBOR
==================  ==============================================================
double              float, shortest exact form; one NaN (``f97e00``); -0.0 kept
string              text string (never Unicode-normalised)
document            map, keys sorted bytewise by encoding; duplicate keys rejected
array               array (element names ignored, order kept)
binary subtype 0    byte string
binary subtype 4    tag 37 (UUID) over the 16 bytes; other lengths as "other"
binary other        tag ``TAG_BINARY`` ``[subtype, bytes]`` (subtype 2 without its
                    inner length, as drivers and Extended JSON present it)
ObjectId            tag ``TAG_OBJECTID`` over the 12 bytes
bool, null          ``true``/``false``, ``null``; undefined is CBOR ``undefined``
datetime            tag 1001 (RFC 9581) ``{1: seconds, -3: milliseconds 0..999}``
regex               tag ``TAG_REGEX`` ``[pattern, options]`` (options as stored)
DBPointer           tag ``TAG_DBPOINTER`` ``[namespace, tag TAG_OBJECTID oid]``
JavaScript code     tag ``TAG_CODE`` text
symbol              tag ``TAG_SYMBOL`` text
code with scope     tag ``TAG_CODE_WITH_SCOPE`` ``[code, scope map]``
int32, int64        integer (Int32 and Int64 of one number are equal)
timestamp           tag ``TAG_TIMESTAMP`` ``[t, i]``
decimal128          tag 4 ``[exponent, mantissa]`` when finite and not -0;
                    otherwise tag ``TAG_DECIMAL_SPECIAL`` text (``NaN``, ``-0E+3``, ...)
MinKey, MaxKey      tag ``TAG_MINKEY`` / ``TAG_MAXKEY`` over ``null``
==================  ==============================================================

Own tags are ``0xAFD000 + BSON type byte`` (first-come-first-served range, unregistered).
Nesting deeper than :data:`MAX_NESTING` levels raises ``FormatError`` (MongoDB's own limit).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, Final

import cbor2
from bson.decimal128 import Decimal128

from affidavit.errors import FormatError

#: deepest allowed nesting of documents/arrays below the top-level document (MongoDB's limit)
MAX_NESTING: Final = 100

_TAG_BASE: Final = 0xAFD000
TAG_BINARY: Final = _TAG_BASE + 0x05
TAG_OBJECTID: Final = _TAG_BASE + 0x07
TAG_REGEX: Final = _TAG_BASE + 0x0B
TAG_DBPOINTER: Final = _TAG_BASE + 0x0C
TAG_CODE: Final = _TAG_BASE + 0x0D
TAG_SYMBOL: Final = _TAG_BASE + 0x0E
TAG_CODE_WITH_SCOPE: Final = _TAG_BASE + 0x0F
TAG_TIMESTAMP: Final = _TAG_BASE + 0x11
TAG_DECIMAL_SPECIAL: Final = _TAG_BASE + 0x13
TAG_MAXKEY: Final = _TAG_BASE + 0x7F
TAG_MINKEY: Final = _TAG_BASE + 0xFF
TAG_UUID: Final = 37  # registered: binary UUID (RFC 9562)
TAG_DECIMAL_FRACTION: Final = 4  # registered: [exponent, mantissa] (RFC 8949 §3.4.4)
TAG_EXTENDED_TIME: Final = 1001  # registered: extended time (RFC 9581)

_Tag = cbor2.CBORTag
MINKEY_VALUE: Final = _Tag(TAG_MINKEY, None)
MAXKEY_VALUE: Final = _Tag(TAG_MAXKEY, None)
#: one millisecond, the unit of BSON datetimes
ONE_MS: Final = timedelta(milliseconds=1)


_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)


def datetime_value(ms: int) -> Any:
    """A BSON datetime (milliseconds since the Unix epoch): tag 1001 ``{1: s, -3: ms}``."""
    seconds, millis = divmod(ms, 1000)
    return _Tag(TAG_EXTENDED_TIME, {1: seconds, -3: millis})


def moment_value(moment: datetime) -> Any:
    """A Python datetime as the BSON datetime it stands for (naive means UTC; cut to the
    millisecond, towards the past)."""
    aware = moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
    return datetime_value((aware - _EPOCH) // ONE_MS)


def objectid_value(oid: bytes) -> Any:
    """An ObjectId (its 12 bytes): tag ``TAG_OBJECTID``."""
    return _Tag(TAG_OBJECTID, oid)


def timestamp_value(seconds: int, increment: int) -> Any:
    """A BSON timestamp: tag ``TAG_TIMESTAMP`` ``[t, i]``."""
    return _Tag(TAG_TIMESTAMP, [seconds, increment])


def regex_value(pattern: str, options: str) -> Any:
    """A regular expression (options as stored): tag ``TAG_REGEX`` ``[pattern, options]``."""
    return _Tag(TAG_REGEX, [pattern, options])


def code_value(code: str) -> Any:
    """JavaScript code: tag ``TAG_CODE`` over its text."""
    return _Tag(TAG_CODE, code)


def symbol_value(symbol: str) -> Any:
    """A symbol: tag ``TAG_SYMBOL`` over its text."""
    return _Tag(TAG_SYMBOL, symbol)


def code_with_scope_value(code: str, scope: Any) -> Any:
    """Code with scope (the scope's value model): tag ``TAG_CODE_WITH_SCOPE``
    ``[code, scope]``."""
    return _Tag(TAG_CODE_WITH_SCOPE, [code, scope])


def dbpointer_value(namespace: str, oid: bytes) -> Any:
    """A DBPointer: tag ``TAG_DBPOINTER`` ``[namespace, tag TAG_OBJECTID oid]``."""
    return _Tag(TAG_DBPOINTER, [namespace, objectid_value(oid)])


def decimal_value(d128: Decimal128) -> Any:
    """A decimal128: tag 4 ``[exponent, mantissa]`` when finite and not -0, else tag
    ``TAG_DECIMAL_SPECIAL`` over its text."""
    dec: Decimal = d128.to_decimal()
    if dec.is_finite() and not (dec.is_zero() and dec.is_signed()):
        sign, digits, exponent = dec.as_tuple()
        mantissa = int("".join(map(str, digits))) if digits else 0
        assert isinstance(exponent, int)
        return _Tag(TAG_DECIMAL_FRACTION, [exponent, -mantissa if sign else mantissa])
    return _Tag(TAG_DECIMAL_SPECIAL, str(d128))


def binary_value(subtype: int, data: bytes) -> Any:
    """Binary data of ``subtype`` (subtype 2 without its inner length)."""
    if subtype == 0:
        return data
    if subtype == 4 and len(data) == 16:
        return _Tag(TAG_UUID, data)
    return _Tag(TAG_BINARY, [subtype, data])


def canonical_cbor(model: Any) -> bytes:
    """The deterministic CBOR encoding of a value model."""
    try:
        return cbor2.dumps(model, canonical=True)
    except (ValueError, TypeError, cbor2.CBOREncodeError) as exc:  # pragma: no cover
        raise FormatError(f"value cannot be encoded as CBOR: {exc}") from exc


def logical_record(model: dict[str, Any]) -> tuple[bytes, bytes]:
    """The ``logical`` record of a document's value model: ``(cbor(_id), cbor(document))``;
    raises ``FormatError`` when it has no ``_id``."""
    if "_id" not in model:
        raise FormatError(
            "document has no top-level _id field",
            hint="records are keyed by _id; every MongoDB collection document has one",
        )
    return canonical_cbor(model["_id"]), canonical_cbor(model)
