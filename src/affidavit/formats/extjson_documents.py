"""MongoDB documents as canonical Extended JSON v2 objects, the value model of exports.

An export reads raw BSON documents out of a backup and works on their canonical Extended
JSON form: plain JSON (objects, arrays, strings, booleans, null) in which every BSON type that
JSON lacks is a one-key wrapper (``{"$oid": ...}``, ``{"$numberInt": "42"}``,
``{"$date": {"$numberLong": "..."}}``, ...). Field order is the document's. The contract of
an export is checked on the *relaxed* form of the same document (numbers as JSON numbers,
dates as ISO-8601 strings where they fit), which is what a JSON Schema author expects.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import bson
from bson.codec_options import CodecOptions
from bson.errors import BSONError
from bson.json_util import CANONICAL_JSON_OPTIONS, RELAXED_JSON_OPTIONS, dumps, loads

from affidavit.errors import FormatError

__all__ = ["canonical_document", "relaxed_document"]

_OPTIONS: CodecOptions[dict[str, Any]] = CodecOptions(
    datetime_conversion=bson.DatetimeConversion.DATETIME_AUTO
)


def canonical_document(raw: bytes) -> dict[str, Any]:
    """The canonical Extended JSON object of one raw BSON document (field order kept).
    Raises :class:`FormatError` for bytes that are not one BSON document."""
    try:
        doc = bson.decode(raw, _OPTIONS)
        text = dumps(doc, json_options=CANONICAL_JSON_OPTIONS)
    except (BSONError, ValueError, TypeError, OverflowError) as exc:
        raise FormatError(f"not a BSON document: {exc}") from exc
    parsed: dict[str, Any] = json.loads(text)
    return parsed


def relaxed_document(document: Mapping[str, Any]) -> dict[str, Any]:
    """The relaxed Extended JSON form of a canonical Extended JSON object. Raises
    :class:`FormatError` when a type wrapper is malformed."""
    try:
        value = loads(json.dumps(dict(document)), json_options=_json_options())
        text = dumps(value, json_options=RELAXED_JSON_OPTIONS)
    except (BSONError, ValueError, TypeError, OverflowError, KeyError) as exc:
        raise FormatError(f"not Extended JSON: {exc}") from exc
    out: dict[str, Any] = json.loads(text)
    return out


def _json_options() -> Any:
    return CANONICAL_JSON_OPTIONS.with_options(
        datetime_conversion=bson.DatetimeConversion.DATETIME_AUTO
    )
