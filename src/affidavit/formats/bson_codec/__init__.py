"""Canonical record forms of BSON documents: the ``exact`` and the ``logical`` profile.

``exact`` (see :func:`exact_record`): key = the raw ``_id`` element as stored, value = the raw
document. Nothing is decoded; only the framing needed to slice ``_id`` safely is checked.
For whole buffers of documents, :func:`frame_exact_pairs` frames, keys and hashes in one
step through the compiled module ``_native`` (``_native.c``, built by ``pip install -e .``;
~0.85 µs per 1 KiB document against ~2.3 µs), which takes the documents whose ``_id`` is
first and bounded exactly and hands any other to the Python code here, document by document
(same results, same errors; ``AFFIDAVIT_PURE_PYTHON=1`` or no build: pure Python).

``logical`` (see :func:`logical_record_from_bson`, :func:`logical_record_from_extjson`): the
RFC 8949 §4.2.1 core deterministic CBOR encoding of a normalised value model, identical for a
document read from BSON and the same document read from canonical (or relaxed) Extended JSON
v2. The mapping of every BSON type is documented in ``docs/formats/logical-values.md``; in
short:

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

import gc
import json
import math
import re
import struct
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal
from types import ModuleType
from typing import Any, Final

import bson
import cbor2
from bson.binary import Binary
from bson.code import Code
from bson.codec_options import CodecOptions, DatetimeConversion
from bson.datetime_ms import DatetimeMS
from bson.dbref import DBRef
from bson.decimal128 import Decimal128
from bson.errors import InvalidBSON
from bson.max_key import MaxKey
from bson.min_key import MinKey
from bson.objectid import ObjectId
from bson.regex import Regex
from bson.timestamp import Timestamp

from affidavit.crypto.record_digest import RecordHasher
from affidavit.errors import FormatError
from affidavit.formats.base import MAX_BSON_DOCUMENT_SIZE
from affidavit.native import load_native

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

_INT32 = struct.Struct("<i")
_UINT32 = struct.Struct("<I")
_INT64 = struct.Struct("<q")
_DOUBLE = struct.Struct("<d")
_TS = struct.Struct("<II")  # increment, then seconds

_NUL = b"\x00"
_ID_NAME = b"_id\x00"
_MIN_DOC = 5

# fixed value sizes by type byte (0 = no value bytes); variable-size types are absent
_FIXED_SIZE: Final[dict[int, int]] = {
    0x01: 8,  # double
    0x06: 0,  # undefined
    0x07: 12,  # ObjectId
    0x08: 1,  # bool
    0x09: 8,  # UTC datetime
    0x0A: 0,  # null
    0x10: 4,  # int32
    0x11: 8,  # timestamp
    0x12: 8,  # int64
    0x13: 16,  # decimal128
    0x7F: 0,  # MaxKey
    0xFF: 0,  # MinKey
}


def _bad(what: str, offset: int) -> FormatError:
    return FormatError(f"malformed BSON document: {what} at byte {offset} of the document")


# --- exact -------------------------------------------------------------------------------


def _value_end(buf: bytes, t: int, pos: int, end: int) -> int:
    """End offset of a value of type ``t`` starting at ``pos``; checks only its framing."""
    size = _FIXED_SIZE.get(t)
    if size is not None:
        stop = pos + size
    elif t in (0x02, 0x0D, 0x0E):  # string, code, symbol: int32 length + bytes incl. NUL
        if pos + 4 > end:
            raise _bad("truncated string length", pos)
        (n,) = _INT32.unpack_from(buf, pos)
        stop = pos + 4 + n
        if n < 1 or stop > end or buf[stop - 1] != 0:
            raise _bad(f"bad string length {n}", pos)
    elif t in (0x03, 0x04, 0x0F):  # document, array, code-with-scope: int32 total size
        if pos + 4 > end:
            raise _bad("truncated length", pos)
        (n,) = _INT32.unpack_from(buf, pos)
        stop = pos + n
        if n < _MIN_DOC or stop > end:
            raise _bad(f"bad embedded length {n}", pos)
    elif t == 0x05:  # binary: int32 length + subtype + bytes
        if pos + 5 > end:
            raise _bad("truncated binary length", pos)
        (n,) = _INT32.unpack_from(buf, pos)
        stop = pos + 5 + n
        if n < 0 or stop > end:
            raise _bad(f"bad binary length {n}", pos)
    elif t == 0x0B:  # regex: two cstrings
        p1 = buf.find(_NUL, pos, end)
        p2 = buf.find(_NUL, p1 + 1, end) if p1 >= 0 else -1
        if p2 < 0:
            raise _bad("unterminated regex", pos)
        stop = p2 + 1
    elif t == 0x0C:  # DBPointer: string + 12-byte ObjectId
        stop = _value_end(buf, 0x02, pos, end) + 12
    else:
        raise _bad(f"unknown BSON type 0x{t:02x}", pos - 1)
    if stop > end:
        raise _bad(f"value of type 0x{t:02x} overruns the document", pos)
    return stop


#: full-depth decoding that accepts every representable datetime (years < 1 or > 9999 too):
#: DATETIME_AUTO makes ``DatetimeMS`` only outside ``datetime``'s range (it accepts every
#: int64 as DATETIME_MS does) and decodes faster; the check keeps no value
_CHECK_OPTIONS: CodecOptions[dict[str, Any]] = CodecOptions(
    datetime_conversion=DatetimeConversion.DATETIME_AUTO
)


def exact_record_checked(raw_doc: bytes) -> tuple[bytes, bytes]:
    """:func:`exact_record` after a full BSON decode of the document (the check a reader does
    with ``validate="full"``). Fingerprinting runs this in its worker processes so that the
    deep check is spread over the cores while the reader only frames documents."""
    try:
        bson.decode(raw_doc, _CHECK_OPTIONS)
    except (InvalidBSON, ValueError, OverflowError) as exc:
        raise FormatError(f"malformed BSON document ({exc})") from exc
    return exact_record(raw_doc)


def exact_record(raw_doc: bytes) -> tuple[bytes, bytes]:
    """The ``exact`` record of a BSON document: ``(raw _id element, raw document)``.

    The key is the ``_id`` element exactly as stored: type byte, ``b"_id\\x00"`` and the value
    bytes. Only the top-level element framing up to ``_id`` is walked (``_id`` is first in
    every document mongod writes, so that is O(1)); the rest of the document is not inspected.
    Raises ``FormatError`` when there is no top-level ``_id`` or the framing is broken.
    """
    end = len(raw_doc) - 1  # offset of the document's trailing NUL
    if end < 4 or raw_doc[end] != 0:
        raise _bad("bad document framing", 0)
    pos = 4
    buf = raw_doc
    while pos < end:
        t = buf[pos]
        if t == 0:
            break
        name_start = pos + 1
        name_end = buf.find(_NUL, name_start, end)
        if name_end < 0:
            raise _bad("unterminated field name", name_start)
        stop = _value_end(buf, t, name_end + 1, end)
        if buf[name_start : name_end + 1] == _ID_NAME:
            return bytes(buf[pos:stop]), raw_doc
        pos = stop
    raise FormatError(
        "document has no top-level _id field",
        hint="the exact profile keys records by _id; every MongoDB collection document has one",
    )


# value size by type byte, -1 where it is variable or unknown (for exact_key_spans' fast path)
_FIXED_BY_TYPE: Final[tuple[int, ...]] = tuple(_FIXED_SIZE.get(t, -1) for t in range(256))
_STRING = 0x02


def _document_key(buffer: bytes, a: int, b: int) -> bytes:
    """The :func:`exact_record` key of the document ``buffer[a:b]``: read directly when
    ``_id`` is its first element with a fixed-size or string value (every document mongod
    writes), else through :func:`exact_record` itself (which raises for a bad document)."""
    last = b - 1  # the document's trailing NUL
    if a + 9 <= last and buffer[a + 5 : a + 9] == _ID_NAME:
        t = buffer[a + 4]
        size = _FIXED_BY_TYPE[t]
        if size >= 0:
            stop = a + 9 + size
            if stop <= last:
                return buffer[a + 4 : stop]
        elif t == _STRING and a + 13 <= last:
            (n,) = _INT32.unpack_from(buffer, a + 9)
            stop = a + 13 + n
            if n >= 1 and stop <= last and buffer[stop - 1] == 0:
                return buffer[a + 4 : stop]
    return exact_record(buffer[a:b])[0]


def exact_keys(buffer: bytes, starts: list[int]) -> list[bytes]:
    """The :func:`exact_record` key of each document of a framed batch (the documents are
    ``buffer[starts[i]:starts[i + 1]]``, the last one running to the end of ``buffer``).

    When ``_id`` is the first element (every document mongod writes) with a fixed-size or
    string value, its bounds are read directly; any other document goes through
    :func:`exact_record` itself. Raises what :func:`exact_record` raises, for the first
    document without a usable ``_id``."""
    ends = starts[1:]
    ends.append(len(buffer))
    return [_document_key(buffer, a, b) for a, b in zip(starts, ends, strict=True)]


def frame_exact_keys(buffer: bytes) -> tuple[list[int], list[bytes], int]:
    """Frame the whole documents at the start of ``buffer`` and take the :func:`exact_record`
    key of each, in one pass: ``(starts, keys, stop)``, where ``stop`` is the offset after the
    last whole document (a document that ``buffer`` cuts off is left for the caller to carry
    over). The framing checks are :class:`~affidavit.formats.base.BsonFramer`'s (length
    within ``5..MAX_BSON_DOCUMENT_SIZE``, last byte NUL). Raises ``FormatError`` at the first
    malformed frame or document without a usable ``_id``, without the reader's precise
    wording: a caller that reports defects re-reads with the reader to word them."""
    return _frame_exact_keys(buffer, 0, None)


def _frame_exact_keys(
    buffer: bytes, pos: int, limit: int | None
) -> tuple[list[int], list[bytes], int]:
    """:func:`frame_exact_keys` from offset ``pos`` on, for at most ``limit`` documents."""
    unpack = _INT32.unpack_from
    starts: list[int] = []
    keys: list[bytes] = []
    add_start, add_key = starts.append, keys.append
    end = len(buffer)
    while pos + 4 <= end and (limit is None or len(starts) < limit):
        (length,) = unpack(buffer, pos)
        if length < _MIN_DOC or length > MAX_BSON_DOCUMENT_SIZE:
            raise _bad(f"implausible document length {length}", 0)
        stop = pos + length
        if stop > end:
            break
        last = stop - 1
        if buffer[last] != 0:
            raise _bad("last byte is not NUL", length - 1)
        add_start(pos)
        add_key(_document_key(buffer, pos, stop))
        pos = stop
    return starts, keys, pos


def _load_native() -> ModuleType | None:
    """The compiled fast path (``_native.c``), or None when it is not built, when its limits
    are not this module's, or when the environment sets ``AFFIDAVIT_PURE_PYTHON=1`` (the
    pure-Python path gives the same results; the switch exists to compare them and to rule
    the extension out)."""
    native = load_native("affidavit.formats.bson_codec._native")
    if native is not None and native.MAX_DOCUMENT != MAX_BSON_DOCUMENT_SIZE:  # pragma: no cover
        return None  # a stale build
    return native


#: the compiled fast path of :func:`frame_exact_pairs`, or None (see :func:`_load_native`)
_NATIVE: ModuleType | None = _load_native()


def frame_exact_pairs(
    buffer: bytes, tag: bytes, *, keys: bool = True
) -> tuple[bytes, list[bytes] | None, int]:
    """:func:`frame_exact_keys` and the record hashing of its documents in one step:
    ``(pairs, keys, stop)``, ``pairs`` being ``RecordHasher(tag).pairs_framed`` of the whole
    documents at the start of ``buffer`` (``key_hash || record_hash`` each, concatenated),
    ``keys`` their keys (None unless ``keys``), ``stop`` the offset after the last whole
    document. Raises what :func:`frame_exact_keys` raises, at the same document.

    The compiled module frames, keys and hashes the documents it can read with certainty
    (``_id`` first, of a type whose bounds it checks exactly; see ``_native.c``) and stops at
    any other; this function then reads that one document with :func:`frame_exact_keys`' code
    (which raises for a defect, with its own wording) and hands the rest back to the
    compiled module. Without it (not built, or ``AFFIDAVIT_PURE_PYTHON=1``) the pure-Python
    path gives the same bytes."""
    native = _NATIVE
    if native is None:
        starts, found, stop = frame_exact_keys(buffer)
        pairs = RecordHasher(tag).pairs_framed(buffer, starts, found, stop) if starts else b""
        return pairs, found if keys else None, stop
    chunks: list[bytes] = []
    all_keys: list[bytes] | None = [] if keys else None
    hasher: RecordHasher | None = None
    pos = 0
    more = native.MORE
    while True:
        pos, pairs, got, status = native.frame(buffer, pos, tag, keys)
        chunks.append(pairs)
        if all_keys is not None and got:
            all_keys += got
        if status == more:
            break
        # a document for the Python path: it raises, or reads this one document
        starts, found, stop = _frame_exact_keys(buffer, pos, 1)
        if not starts:  # pragma: no cover - the compiled module stops only at a whole one
            break
        hasher = hasher or RecordHasher(tag)
        chunks.append(hasher.pairs_framed(buffer, starts, found, stop))
        if all_keys is not None:
            all_keys += found
        pos = stop
    return b"".join(chunks), all_keys, pos


def exact_pairs_framed(
    buffer: bytes, starts: list[int], tag: bytes
) -> tuple[bytes, list[bytes]] | None:
    """The compiled fast path of ``RecordHasher(tag).pairs_framed(buffer, starts,
    exact_keys(buffer, starts))`` for a framed batch (documents back to back from offset 0
    to the end, ``starts`` their offsets): ``(pairs, keys)``, or None when the compiled module
    is not there or does not take every document of the batch (then the caller takes the
    pure-Python path, which gives the same bytes or raises)."""
    native = _NATIVE
    if native is None:
        return None
    stop, pairs, keys, _ = native.frame(buffer, 0, tag, True, starts)
    if stop != len(buffer) or len(pairs) != 64 * len(starts) or keys is None:
        return None
    return pairs, keys


#: pymongo's C decoder: the reference whose acceptance ``_native.validate``'s is a subset of
_PYMONGO_C: Final = bson.has_c()
#: ``_native.validate``'s own nesting limit (MongoDB's)
_VALIDATE_MAX_DEPTH: Final = 100
#: Python frames kept free for the Python calls pymongo's decoder makes (ObjectId, DBRef,
#: Decimal128.from_bid, ...) on top of its recursion units (see :func:`_validate_depth`)
_RECURSION_MARGIN: Final = 64


def check_documents(buffer: bytes | memoryview, starts: list[int] | None) -> None:
    """Decode every document of a framed batch in full (the check of
    :func:`exact_record_checked`), in one C call for the whole batch. Raises the
    ``FormatError`` :func:`exact_record_checked` raises for the first malformed document.
    ``starts`` (the documents' offsets) may be None: they are then found by framing the
    batch again, when a document is malformed.

    The compiled validator (``_native.validate``, GIL released) walks the documents first
    and stops at the first one it does not accept. It accepts only documents that pymongo's
    decoder accepts too (see ``_native.c``), so pymongo decodes only the rest of the batch,
    from that document on, and its verdict and messages are exactly what they were. Without
    it (not built, ``AFFIDAVIT_PURE_PYTHON=1``, or pymongo without its C decoder) pymongo
    decodes the whole batch."""
    native = _NATIVE
    if native is not None and _PYMONGO_C:
        stop = native.validate(buffer, 0, _validate_depth())
        if stop == len(buffer):
            return
        if stop:
            buffer, starts = _rest_of_batch(buffer, starts, stop)
    collecting = gc.isenabled()
    gc.disable()  # thousands of fresh dicts without cycles: a collection would only rescan
    try:
        bson.decode_all(buffer, _CHECK_OPTIONS)
        return
    except (InvalidBSON, ValueError, OverflowError):
        pass  # found below, document by document, with the exact message
    finally:
        if collecting:
            gc.enable()
    if starts is None:
        starts = _frame_starts(buffer)
    ends = starts[1:]
    ends.append(len(buffer))
    for a, b in zip(starts, ends, strict=True):
        try:
            bson.decode(bytes(buffer[a:b]), _CHECK_OPTIONS)
        except (InvalidBSON, ValueError, OverflowError) as exc:
            raise FormatError(f"malformed BSON document ({exc})") from exc
    raise FormatError("malformed BSON document batch")  # pragma: no cover - decode_all only


def _rest_of_batch(
    buffer: bytes | memoryview, starts: list[int] | None, stop: int
) -> tuple[bytes | memoryview, list[int] | None]:
    """The part of a batch that :func:`check_documents` leaves to pymongo once the compiled
    validator has accepted every document before ``stop``: ``(buffer[stop:], its starts)``,
    or the whole batch unchanged when cutting it could change a word of the outcome (the
    documents before ``stop`` are not the batch's framing, or ``starts`` disagrees with it).
    pymongo decodes each document before ``stop`` without an error, so it reports the same
    first defect, with the same message, from either. Runs only when a batch has a document
    the validator does not accept."""
    framed = _frame_starts(buffer)  # the length prefixes, which the validator followed too
    try:
        i = framed.index(stop)
    except ValueError:
        return buffer, starts
    if starts is not None and starts[: i + 1] != framed[: i + 1]:
        return buffer, starts
    rest_starts = (framed if starts is None else starts)[i:]
    return memoryview(buffer)[stop:], [a - stop for a in rest_starts]


def _validate_depth() -> int:
    """The nesting depth ``_native.validate`` may accept from here: its own limit, and no
    more than pymongo could decode from this call stack. pymongo's C decoder spends the
    interpreter's recursion budget (``Py_EnterRecursiveCall``: one unit per embedded
    document and one per array element, so at most 2 per level and 1 for the top-level
    document), which on Python 3.11 the Python frames below this one share: a document that
    pymongo would refuse with "maximum recursion depth exceeded" is never accepted."""
    import sys

    frame: Any = sys._getframe()  # a FrameType, then its callers' down to None
    depth = 0
    while frame is not None:
        depth += 1
        frame = frame.f_back
    budget = sys.getrecursionlimit() - depth - _RECURSION_MARGIN
    return max(0, min(_VALIDATE_MAX_DEPTH, (budget - 1) // 2))


def _frame_starts(buffer: bytes | memoryview) -> list[int]:
    """The offsets of the documents of a framed batch (length prefixes only)."""
    starts: list[int] = []
    pos, end = 0, len(buffer)
    while pos + 4 <= end:
        (length,) = _INT32.unpack_from(buffer, pos)
        if length < _MIN_DOC:
            break
        starts.append(pos)
        pos += length
    return starts


# --- logical: the value model -----------------------------------------------------------

_Tag = cbor2.CBORTag
_MINKEY = _Tag(TAG_MINKEY, None)
_MAXKEY = _Tag(TAG_MAXKEY, None)


def _datetime_ms(ms: int) -> Any:
    seconds, millis = divmod(ms, 1000)
    return _Tag(TAG_EXTENDED_TIME, {1: seconds, -3: millis})


def _decimal(d128: Decimal128) -> Any:
    dec: Decimal = d128.to_decimal()
    if dec.is_finite() and not (dec.is_zero() and dec.is_signed()):
        sign, digits, exponent = dec.as_tuple()
        mantissa = int("".join(map(str, digits))) if digits else 0
        assert isinstance(exponent, int)
        return _Tag(TAG_DECIMAL_FRACTION, [exponent, -mantissa if sign else mantissa])
    return _Tag(TAG_DECIMAL_SPECIAL, str(d128))


def _binary(subtype: int, data: bytes) -> Any:
    if subtype == 0:
        return data
    if subtype == 4 and len(data) == 16:
        return _Tag(TAG_UUID, data)
    return _Tag(TAG_BINARY, [subtype, data])


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
            return _Tag(TAG_CODE, str(value))
        return _Tag(TAG_CODE_WITH_SCOPE, [str(value), logical_value(value.scope, _depth + 1)])
    if isinstance(value, str):
        return str(value)
    if isinstance(value, ObjectId):
        return _Tag(TAG_OBJECTID, value.binary)
    if isinstance(value, Binary):  # before bytes: Binary is a bytes
        return _binary(value.subtype, bytes(value))
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    if isinstance(value, DatetimeMS):
        return _datetime_ms(int(value))
    if isinstance(value, datetime):
        aware = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
        delta = aware - datetime(1970, 1, 1, tzinfo=UTC)
        return _datetime_ms(delta // _ONE_MS)
    if isinstance(value, Decimal128):
        return _decimal(value)
    if isinstance(value, Regex):
        return _Tag(TAG_REGEX, [str(value.pattern), _regex_flags(value.flags)])
    if isinstance(value, Timestamp):
        return _Tag(TAG_TIMESTAMP, [value.time, value.inc])
    if isinstance(value, MinKey):
        return _MINKEY
    if isinstance(value, MaxKey):
        return _MAXKEY
    if isinstance(value, uuid.UUID):
        return _Tag(TAG_UUID, value.bytes)
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


_ONE_MS = datetime(1970, 1, 1, 0, 0, 0, 1000, tzinfo=UTC) - datetime(1970, 1, 1, tzinfo=UTC)


def logical_encode(value: Any) -> bytes:
    """Deterministic CBOR (RFC 8949 §4.2.1: shortest integers and floats, map keys sorted
    bytewise by their encodings, definite lengths) of ``logical_value(value)``."""
    return _cbor(logical_value(value))


def _cbor(model: Any) -> bytes:
    try:
        return cbor2.dumps(model, canonical=True)
    except (ValueError, TypeError, cbor2.CBOREncodeError) as exc:  # pragma: no cover
        raise FormatError(f"value cannot be encoded as CBOR: {exc}") from exc


# --- logical: from raw BSON ----------------------------------------------------------------


def _string(buf: bytes, pos: int, end: int) -> tuple[str, int]:
    if pos + 4 > end:
        raise _bad("truncated string length", pos)
    (n,) = _INT32.unpack_from(buf, pos)
    stop = pos + 4 + n
    if n < 1 or stop > end or buf[stop - 1] != 0:
        raise _bad(f"bad string length {n}", pos)
    try:
        return buf[pos + 4 : stop - 1].decode("utf-8"), stop
    except UnicodeDecodeError as exc:
        raise _bad("string is not valid UTF-8", pos) from exc


def _cstring(buf: bytes, pos: int, end: int) -> tuple[str, int]:
    stop = buf.find(_NUL, pos, end)
    if stop < 0:
        raise _bad("unterminated cstring", pos)
    try:
        return buf[pos:stop].decode("utf-8"), stop + 1
    except UnicodeDecodeError as exc:
        raise _bad("name is not valid UTF-8", pos) from exc


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
        raise _bad("truncated document length", start)
    (size,) = _INT32.unpack_from(buf, start)
    end = start + size - 1  # offset of the trailing NUL
    if size < _MIN_DOC or end >= limit or buf[end] != 0:
        raise _bad(f"bad document length {size}", start)
    items: list[Any] = []
    out: dict[str, Any] = {}
    pos = start + 4
    child = depth + 1
    while True:
        t = buf[pos]
        if t == 0:
            if pos != end:
                raise _bad("document ends before its length says", pos)
            break
        name_start = pos + 1
        name_end = buf.find(_NUL, name_start, end)
        if name_end < 0:
            raise _bad("unterminated field name", name_start)
        vpos = name_end + 1
        value: Any
        if t == 0x02:
            value, pos = _string(buf, vpos, end)
        elif t == 0x10:
            if vpos + 4 > end:
                raise _bad("truncated int32", vpos)
            (value,) = _INT32.unpack_from(buf, vpos)
            pos = vpos + 4
        elif t == 0x01:
            if vpos + 8 > end:
                raise _bad("truncated double", vpos)
            (value,) = _DOUBLE.unpack_from(buf, vpos)
            pos = vpos + 8
        elif t in (0x03, 0x04):
            (n,) = _INT32.unpack_from(buf, vpos) if vpos + 4 <= end else (0,)
            value = _bson_document(buf, vpos, end, child, array=t == 0x04)
            pos = vpos + n
        elif t == 0x07:
            pos = vpos + 12
            if pos > end:
                raise _bad("truncated ObjectId", vpos)
            value = _Tag(TAG_OBJECTID, buf[vpos:pos])
        elif t == 0x12:
            if vpos + 8 > end:
                raise _bad("truncated int64", vpos)
            (value,) = _INT64.unpack_from(buf, vpos)
            pos = vpos + 8
        elif t == 0x08:
            if vpos + 1 > end or buf[vpos] > 1:
                raise _bad("bad boolean", vpos)
            value = buf[vpos] == 1
            pos = vpos + 1
        elif t == 0x0A:
            value, pos = None, vpos
        elif t == 0x09:
            if vpos + 8 > end:
                raise _bad("truncated datetime", vpos)
            (ms,) = _INT64.unpack_from(buf, vpos)
            value = _datetime_ms(ms)
            pos = vpos + 8
        elif t == 0x05:
            if vpos + 5 > end:
                raise _bad("truncated binary", vpos)
            (n,) = _INT32.unpack_from(buf, vpos)
            subtype = buf[vpos + 4]
            pos = vpos + 5 + n
            if n < 0 or pos > end:
                raise _bad(f"bad binary length {n}", vpos)
            data = buf[vpos + 5 : pos]
            if subtype == 2:  # old binary: an inner int32 length repeats the size
                if n < 4 or _INT32.unpack_from(data, 0)[0] != n - 4:
                    raise _bad("binary subtype 2 with a wrong inner length", vpos)
                data = data[4:]
            value = _binary(subtype, data)
        elif t == 0x11:
            if vpos + 8 > end:
                raise _bad("truncated timestamp", vpos)
            inc, secs = _TS.unpack_from(buf, vpos)
            value = _Tag(TAG_TIMESTAMP, [secs, inc])
            pos = vpos + 8
        elif t == 0x13:
            pos = vpos + 16
            if pos > end:
                raise _bad("truncated decimal128", vpos)
            value = _decimal(Decimal128.from_bid(buf[vpos:pos]))
        elif t == 0x0B:
            pattern, p = _cstring(buf, vpos, end)
            options, pos = _cstring(buf, p, end)
            value = _Tag(TAG_REGEX, [pattern, options])
        elif t == 0x0D:
            code, pos = _string(buf, vpos, end)
            value = _Tag(TAG_CODE, code)
        elif t == 0x0E:
            sym, pos = _string(buf, vpos, end)
            value = _Tag(TAG_SYMBOL, sym)
        elif t == 0x0F:
            if vpos + 4 > end:
                raise _bad("truncated code with scope", vpos)
            (n,) = _INT32.unpack_from(buf, vpos)
            pos = vpos + n
            if n < 14 or pos > end:
                raise _bad(f"bad code-with-scope length {n}", vpos)
            code, p = _string(buf, vpos + 4, pos)
            scope = _bson_document(buf, p, pos, child, array=False)
            (scope_size,) = _INT32.unpack_from(buf, p)
            if p + scope_size != pos:
                raise _bad("code-with-scope length does not match its parts", vpos)
            value = _Tag(TAG_CODE_WITH_SCOPE, [code, scope])
        elif t == 0x0C:
            ns, p = _string(buf, vpos, end)
            pos = p + 12
            if pos > end:
                raise _bad("truncated DBPointer", vpos)
            value = _Tag(TAG_DBPOINTER, [ns, _Tag(TAG_OBJECTID, buf[p:pos])])
        elif t == 0x06:
            value, pos = cbor2.undefined, vpos
        elif t == 0xFF:
            value, pos = _MINKEY, vpos
        elif t == 0x7F:
            value, pos = _MAXKEY, vpos
        else:
            raise _bad(f"unknown BSON type 0x{t:02x}", pos)
        if pos > end:
            raise _bad("value overruns the document", vpos)
        if array:
            items.append(value)
        else:
            try:
                key = buf[name_start:name_end].decode("utf-8")
            except UnicodeDecodeError as exc:
                raise _bad("field name is not valid UTF-8", name_start) from exc
            if key in out:
                raise _bad(f"duplicate field name {key!r}", name_end)
            out[key] = value
    return items if array else out


def logical_record_from_bson(raw_doc: bytes) -> tuple[bytes, bytes]:
    """The ``logical`` record of a raw BSON document: ``(logical(_id), logical(document))``.

    Walks and validates the whole document (every length, UTF-8 string, type byte, nesting
    depth, duplicate names). Raises ``FormatError`` when malformed, nested deeper than
    :data:`MAX_NESTING`, or without ``_id``.
    """
    model = _bson_document(raw_doc, 0, len(raw_doc), 0, array=False)
    (size,) = _INT32.unpack_from(raw_doc, 0)
    if size != len(raw_doc):
        raise _bad(f"length prefix {size} differs from the record's {len(raw_doc)} bytes", 0)
    return _record(model)


def _record(model: dict[str, Any]) -> tuple[bytes, bytes]:
    if "_id" not in model:
        raise FormatError(
            "document has no top-level _id field",
            hint="records are keyed by _id; every MongoDB collection document has one",
        )
    return _cbor(model["_id"]), _cbor(model)


# --- logical: from Extended JSON -------------------------------------------------------------


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        seen: set[str] = set()
        dup = next(k for k, _ in pairs if k in seen or seen.add(k))  # type: ignore[func-returns-value]
        raise FormatError(f"Extended JSON object has a duplicate key {dup!r}")
    return out


def _ext_int(text: Any, what: str, lo: int, hi: int) -> int:
    if not isinstance(text, str) or not _INT_RE.fullmatch(text):
        raise FormatError(f"Extended JSON {what} must be a decimal string, got {text!r}")
    number = int(text)
    if not lo <= number <= hi:
        raise FormatError(f"Extended JSON {what} {text} is out of range")
    return number


_INT_RE = re.compile(r"-?[0-9]+")
_HEX24 = re.compile(r"[0-9a-fA-F]{24}")
_I32_MIN, _I32_MAX = -(2**31), 2**31 - 1
_I64_MIN, _I64_MAX = -(2**63), 2**63 - 1
_SPECIAL_DOUBLES = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


def _ext_oid(value: Any) -> Any:
    if not isinstance(value, str) or not _HEX24.fullmatch(value):
        raise FormatError(f"Extended JSON $oid must be 24 hex digits, got {value!r}")
    return _Tag(TAG_OBJECTID, bytes.fromhex(value))


def _ext_binary(spec: Any) -> Any:
    import base64
    import binascii

    if not isinstance(spec, dict) or set(spec) != {"base64", "subType"}:
        raise FormatError("Extended JSON $binary needs exactly base64 and subType")
    sub = spec["subType"]
    if not isinstance(sub, str) or not re.fullmatch(r"[0-9a-fA-F]{1,2}", sub):
        raise FormatError(f"Extended JSON $binary subType must be 1-2 hex digits, got {sub!r}")
    try:
        data = base64.b64decode(spec["base64"], validate=True)
    except (binascii.Error, TypeError, ValueError) as exc:
        raise FormatError("Extended JSON $binary base64 is invalid") from exc
    return _binary(int(sub, 16), data)


def _ext_date(spec: Any) -> Any:
    if isinstance(spec, dict) and set(spec) == {"$numberLong"}:
        return _datetime_ms(_ext_int(spec["$numberLong"], "$date", _I64_MIN, _I64_MAX))
    if isinstance(spec, str):  # relaxed: ISO-8601
        try:
            parsed = datetime.fromisoformat(spec.replace("Z", "+00:00"))
        except ValueError as exc:
            raise FormatError(f"Extended JSON $date {spec!r} is not ISO-8601") from exc
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)
        delta = parsed - datetime(1970, 1, 1, tzinfo=UTC)
        return _datetime_ms(delta // _ONE_MS)
    if isinstance(spec, int) and not isinstance(spec, bool):  # legacy: bare millis
        return _datetime_ms(spec)
    raise FormatError(f"Extended JSON $date has an unknown form: {spec!r}")


def _ext_decimal(text: Any) -> Any:
    if not isinstance(text, str):
        raise FormatError("Extended JSON $numberDecimal must be a string")
    try:
        return _decimal(Decimal128(text))
    except Exception as exc:  # bson raises InvalidOperation/ValueError/decimal signals
        raise FormatError(f"Extended JSON $numberDecimal {text!r} is invalid") from exc


def _ext_double(text: Any) -> float:
    if not isinstance(text, str):
        raise FormatError("Extended JSON $numberDouble must be a string")
    if text in _SPECIAL_DOUBLES:
        return _SPECIAL_DOUBLES[text]
    try:
        number = float(text)
    except ValueError as exc:
        raise FormatError(f"Extended JSON $numberDouble {text!r} is invalid") from exc
    if math.isnan(number) or math.isinf(number):
        raise FormatError(f"Extended JSON $numberDouble {text!r} is not canonical")
    return number


def _ext_single(key: str, arg: Any, depth: int) -> Any:
    """The value of a one-key type wrapper, or ``_NOT_WRAPPER``."""
    if key == "$oid":
        return _ext_oid(arg)
    if key == "$numberInt":
        return _ext_int(arg, "$numberInt", _I32_MIN, _I32_MAX)
    if key == "$numberLong":
        return _ext_int(arg, "$numberLong", _I64_MIN, _I64_MAX)
    if key == "$numberDouble":
        return _ext_double(arg)
    if key == "$numberDecimal":
        return _ext_decimal(arg)
    if key == "$binary":
        return _ext_binary(arg)
    if key == "$date":
        return _ext_date(arg)
    if key == "$symbol":
        if not isinstance(arg, str):
            raise FormatError("Extended JSON $symbol must be a string")
        return _Tag(TAG_SYMBOL, arg)
    if key == "$code":
        if not isinstance(arg, str):
            raise FormatError("Extended JSON $code must be a string")
        return _Tag(TAG_CODE, arg)
    if key == "$timestamp":
        if (
            not isinstance(arg, dict)
            or set(arg) != {"t", "i"}
            or not all(
                isinstance(arg[k], int) and not isinstance(arg[k], bool) and 0 <= arg[k] < 2**32
                for k in ("t", "i")
            )
        ):
            raise FormatError("Extended JSON $timestamp needs unsigned 32-bit t and i")
        return _Tag(TAG_TIMESTAMP, [arg["t"], arg["i"]])
    if key == "$regularExpression":
        if (
            not isinstance(arg, dict)
            or set(arg) != {"pattern", "options"}
            or not all(isinstance(arg[k], str) for k in ("pattern", "options"))
        ):
            raise FormatError("Extended JSON $regularExpression needs pattern and options")
        return _Tag(TAG_REGEX, [arg["pattern"], arg["options"]])
    if key == "$dbPointer":
        if not isinstance(arg, dict) or set(arg) != {"$ref", "$id"}:
            raise FormatError("Extended JSON $dbPointer needs exactly $ref and $id")
        ns, oid = arg["$ref"], arg["$id"]
        if not isinstance(ns, str) or not isinstance(oid, dict) or set(oid) != {"$oid"}:
            raise FormatError("Extended JSON $dbPointer needs a string $ref and an $oid $id")
        return _Tag(TAG_DBPOINTER, [ns, _ext_oid(oid["$oid"])])
    if key == "$minKey":
        if arg != 1:
            raise FormatError("Extended JSON $minKey must be 1")
        return _MINKEY
    if key == "$maxKey":
        if arg != 1:
            raise FormatError("Extended JSON $maxKey must be 1")
        return _MAXKEY
    if key == "$undefined":
        if arg is not True:
            raise FormatError("Extended JSON $undefined must be true")
        return cbor2.undefined
    if key == "$uuid":
        try:
            return _Tag(TAG_UUID, uuid.UUID(arg).bytes)
        except (ValueError, TypeError, AttributeError) as exc:
            raise FormatError(f"Extended JSON $uuid {arg!r} is invalid") from exc
    return _NOT_WRAPPER


_NOT_WRAPPER: Final = object()


def _ext_value(value: Any, depth: int) -> Any:
    """The value model of a parsed Extended JSON value at nesting ``depth``."""
    if isinstance(value, dict):
        if depth > MAX_NESTING:
            raise FormatError(f"document nested deeper than {MAX_NESTING} levels")
        if len(value) == 1:
            ((key, arg),) = value.items()
            if key.startswith("$"):
                special = _ext_single(key, arg, depth)
                if special is not _NOT_WRAPPER:
                    return special
        elif len(value) == 2 and "$code" in value and "$scope" in value:
            code, scope = value["$code"], value["$scope"]
            if not isinstance(code, str) or not isinstance(scope, dict):
                raise FormatError("Extended JSON $code/$scope needs a string and an object")
            return _Tag(TAG_CODE_WITH_SCOPE, [code, _ext_value(scope, depth + 1)])
        return {k: _ext_value(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list):
        if depth > MAX_NESTING:
            raise FormatError(f"document nested deeper than {MAX_NESTING} levels")
        return [_ext_value(v, depth + 1) for v in value]
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int):  # relaxed mode: a bare integer is Int32 or Int64
        if not _I64_MIN <= value <= _I64_MAX:
            raise FormatError(f"integer {value} does not fit in 64 bits")
        return value
    if isinstance(value, float):  # relaxed mode: a bare fractional number is a double
        return value
    raise FormatError(f"unexpected JSON value {value!r}")  # pragma: no cover


def _json_constant(name: str) -> Any:
    raise FormatError(f"bare {name} is not JSON (Extended JSON writes {{$numberDouble: ...}})")


def logical_record_from_extjson(line: bytes) -> tuple[bytes, bytes]:
    """The ``logical`` record of one line of MongoDB Extended JSON v2 (canonical; relaxed
    numbers, ISO dates and ``$uuid`` are accepted too): ``(logical(_id), logical(doc))``.

    Equal to :func:`logical_record_from_bson` of the same document. Raises ``FormatError``
    when the line is not a JSON object, a type wrapper is malformed, keys repeat, nesting
    exceeds :data:`MAX_NESTING` or there is no ``_id``.
    """
    try:
        parsed = json.loads(line, object_pairs_hook=_pairs, parse_constant=_json_constant)
    except (ValueError, RecursionError) as exc:
        raise FormatError(f"line is not valid JSON: {exc}") from exc
    if not isinstance(parsed, dict):
        raise FormatError("line is not a JSON object")
    model = _ext_value(parsed, 0)
    if not isinstance(model, dict):
        raise FormatError("line is an Extended JSON scalar, not a document")
    return _record(model)
