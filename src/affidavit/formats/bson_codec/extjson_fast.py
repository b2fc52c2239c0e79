"""Fast paths to the forms of :mod:`affidavit.formats.extjson_documents`, for exports.

An export reads many documents and keeps a few of their fields; converting every document
to text through ``bson.json_util`` and parsing it back is what made it slow. Here:

- :func:`decode_document` decodes the raw BSON once (every field, so a malformed document is
  refused as before) and :func:`canonical_value` turns only the fields that are needed into
  canonical Extended JSON v2;
- :func:`relaxed_value` turns a canonical value into its relaxed form (what the contract's
  JSON Schema sees);
- :func:`logical_model` turns a canonical document into the value model of the ``logical``
  codec, what :func:`~.logical_extjson.logical_record_from_extjson` computes from
  the document's JSON line.

Each handles the common types itself and hands anything else to the general code (the same
``bson.json_util`` conversions), so the results are always equal to the general path's;
``tests/unit/formats/test_extjson_fast.py`` compares them over every BSON type.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import bson
from bson.codec_options import CodecOptions
from bson.errors import BSONError
from bson.int64 import Int64
from bson.json_util import CANONICAL_JSON_OPTIONS, RELAXED_JSON_OPTIONS, dumps, loads
from bson.objectid import ObjectId

from affidavit.errors import FormatError
from affidavit.formats.bson_codec.logical_extjson import _ext_value
from affidavit.formats.bson_codec.values import datetime_value, logical_record, objectid_value

__all__ = [
    "canonical_value",
    "decode_document",
    "logical_model",
    "logical_record_of",
    "relaxed_value",
]

_OPTIONS: Final[CodecOptions[dict[str, Any]]] = CodecOptions(
    datetime_conversion=bson.DatetimeConversion.DATETIME_AUTO
)
_LOAD_OPTIONS: Final = CANONICAL_JSON_OPTIONS.with_options(
    datetime_conversion=bson.DatetimeConversion.DATETIME_AUTO
)
_EPOCH: Final = datetime(1970, 1, 1)
_EPOCH_AWARE: Final = datetime(1970, 1, 1, tzinfo=UTC)
_MS: Final = timedelta(milliseconds=1)
_I32_LO, _I32_HI = -(2**31), 2**31
_MAX_ISO_MS: Final = 253402300799999  # 9999-12-31T23:59:59.999Z, the last ISO-8601 date


def _relaxed_general(document: dict[str, Any]) -> dict[str, Any]:
    """The general path (``extjson_documents.relaxed_document``, which a sibling module may
    not import): through ``bson.json_util``."""
    try:
        value = loads(json.dumps(document), json_options=_LOAD_OPTIONS)
        text = dumps(value, json_options=RELAXED_JSON_OPTIONS)
    except (BSONError, ValueError, TypeError, OverflowError, KeyError) as exc:
        raise FormatError(f"not Extended JSON: {exc}") from exc
    out: dict[str, Any] = json.loads(text)
    return out


class _Fallback(Exception):
    """A value the fast path leaves to the general code."""


def decode_document(raw: bytes) -> dict[str, Any]:
    """One raw BSON document decoded (every field checked; datetimes out of Python's range
    as ``DatetimeMS``). Raises :class:`FormatError` for bytes that are not one document."""
    try:
        return bson.decode(raw, _OPTIONS)
    except (BSONError, ValueError, TypeError, OverflowError) as exc:
        raise FormatError(f"not a BSON document: {exc}") from exc


def _general(value: Any) -> Any:
    try:
        return json.loads(dumps(value, json_options=CANONICAL_JSON_OPTIONS))
    except (BSONError, ValueError, TypeError, OverflowError) as exc:
        raise FormatError(f"not a BSON document: {exc}") from exc


def canonical_value(value: Any) -> Any:
    """The canonical Extended JSON v2 form of one decoded value (what
    :func:`affidavit.formats.extjson_documents.canonical_document` gives for it)."""
    kind = type(value)
    if kind is str or value is None or kind is bool:
        return value
    if kind is int:
        if _I32_LO <= value < _I32_HI:
            return {"$numberInt": str(value)}
        return {"$numberLong": str(value)}
    if kind is Int64:
        return {"$numberLong": str(int(value))}
    if kind is ObjectId:
        return {"$oid": str(value)}
    if kind is datetime:
        moment = value if value.tzinfo is None else value.astimezone(UTC).replace(tzinfo=None)
        return {"$date": {"$numberLong": str((moment - _EPOCH) // _MS)}}
    if kind is float:
        if not math.isfinite(value):
            return _general(value)
        return {"$numberDouble": repr(value)}
    if kind is dict:
        return {k: canonical_value(v) for k, v in value.items()}
    if kind is list:
        return [canonical_value(v) for v in value]
    return _general(value)


def _relaxed(value: Any) -> Any:
    kind = type(value)
    if kind is str or value is None or kind is bool:
        return value
    if kind is list:
        return [_relaxed(v) for v in value]
    if kind is not dict:
        raise _Fallback
    if len(value) == 1:
        ((key, arg),) = value.items()
        if key.startswith("$"):
            if type(arg) is str:
                if key in {"$numberInt", "$numberLong"}:
                    if not arg.lstrip("-").isdigit() or not arg.isascii():
                        raise _Fallback
                    return int(arg)
                if key == "$numberDouble":
                    number = float(arg)  # ValueError: the general path says why
                    if not math.isfinite(number):
                        raise _Fallback
                    return number
                if key == "$oid":
                    return value
            if key == "$date" and type(arg) is dict and len(arg) == 1:
                text = arg.get("$numberLong")
                if type(text) is str and text.lstrip("-").isdigit() and text.isascii():
                    millis = int(text)
                    if 0 <= millis <= _MAX_ISO_MS:
                        moment = _EPOCH_AWARE + timedelta(milliseconds=millis)
                        fraction = f".{millis % 1000:03d}" if millis % 1000 else ""
                        return {"$date": moment.strftime("%Y-%m-%dT%H:%M:%S") + fraction + "Z"}
            raise _Fallback
    for key in value:
        if key.startswith("$"):
            raise _Fallback
    return {k: _relaxed(v) for k, v in value.items()}


def relaxed_value(document: dict[str, Any]) -> dict[str, Any]:
    """The relaxed Extended JSON form of a canonical Extended JSON object (what
    :func:`affidavit.formats.extjson_documents.relaxed_document` gives). Raises
    :class:`FormatError` when a type wrapper is malformed."""
    try:
        out = _relaxed(document)
    except (_Fallback, ValueError, RecursionError):
        return _relaxed_general(document)
    assert isinstance(out, dict)
    return out


def logical_model(document: dict[str, Any], *, plain_keys: bool = False) -> dict[str, Any]:
    """The ``logical`` value model of a canonical Extended JSON object (what the codec of
    Extended JSON lines builds from its JSON text; ``plain_keys``: the caller knows that no
    top-level key starts with ``$``). Raises :class:`FormatError` for a malformed type wrapper
    or nesting deeper than MongoDB allows."""
    if not plain_keys and any(key.startswith("$") for key in document):  # a type wrapper?
        model = _ext_value(document, 0)
        if not isinstance(model, dict):
            raise FormatError("line is an Extended JSON scalar, not a document")
        return model
    out: dict[str, Any] = {}
    for key, value in document.items():
        kind = type(value)
        out[key] = value if kind is str or value is None or kind is bool else _model_value(value)
    return out


def logical_record_of(document: dict[str, Any], *, plain_keys: bool = False) -> tuple[bytes, bytes]:
    """The ``logical`` record ``(key, value)`` of a canonical Extended JSON object: equal to
    ``logical_record_from_extjson`` of its JSON line (``plain_keys``: as for
    :func:`logical_model`)."""
    return logical_record(logical_model(document, plain_keys=plain_keys))


def _decimal(text: Any, lo: int, hi: int) -> int:
    if type(text) is not str or not text.isascii() or not text.lstrip("-").isdigit():
        raise _Fallback
    try:
        number = int(text)
    except ValueError:
        raise _Fallback from None
    if not lo <= number <= hi:
        raise _Fallback
    return number


_HEX: Final = frozenset("0123456789abcdefABCDEF")


def _model_value(value: Any) -> Any:
    """The logical value model of one canonical value below the top level: the common
    wrappers (``$oid``, ``$numberInt``, ``$numberLong``, ``$date``) here, anything else by
    the codec of Extended JSON (which also says what is wrong with a malformed one)."""
    if type(value) is dict and len(value) == 1:
        ((key, arg),) = value.items()
        try:
            if key == "$oid":
                if type(arg) is str and len(arg) == 24 and _HEX.issuperset(arg):
                    return objectid_value(bytes.fromhex(arg))
            elif key == "$numberInt":
                return _decimal(arg, -(2**31), 2**31 - 1)
            elif key == "$numberLong":
                return _decimal(arg, -(2**63), 2**63 - 1)
            elif key == "$date" and type(arg) is dict and len(arg) == 1:
                return datetime_value(_decimal(arg.get("$numberLong"), -(2**63), 2**63 - 1))
        except _Fallback:
            pass
    return _ext_value(value, 1)
