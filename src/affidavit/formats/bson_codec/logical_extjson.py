"""The ``logical`` codec from MongoDB Extended JSON v2: :func:`logical_record_from_extjson`
parses one line (canonical; relaxed numbers, ISO dates and ``$uuid`` too) into the value model
of :mod:`.values`, so that it equals :func:`~.logical_bson.logical_record_from_bson` of the
same document."""

from __future__ import annotations

import json
import math
import re
import uuid
from datetime import datetime
from typing import Any, Final

import cbor2
from bson.decimal128 import Decimal128

from affidavit.errors import FormatError
from affidavit.formats.bson_codec.values import (
    MAX_NESTING,
    MAXKEY_VALUE,
    MINKEY_VALUE,
    binary_value,
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


def _ext_oid(value: Any) -> bytes:
    if not isinstance(value, str) or not _HEX24.fullmatch(value):
        raise FormatError(f"Extended JSON $oid must be 24 hex digits, got {value!r}")
    return bytes.fromhex(value)


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
    return binary_value(int(sub, 16), data)


def _ext_date(spec: Any) -> Any:
    if isinstance(spec, dict) and set(spec) == {"$numberLong"}:
        return datetime_value(_ext_int(spec["$numberLong"], "$date", _I64_MIN, _I64_MAX))
    if isinstance(spec, str):  # relaxed: ISO-8601
        try:
            parsed = datetime.fromisoformat(spec.replace("Z", "+00:00"))
        except ValueError as exc:
            raise FormatError(f"Extended JSON $date {spec!r} is not ISO-8601") from exc
        return moment_value(parsed)
    if isinstance(spec, int) and not isinstance(spec, bool):  # legacy: bare millis
        return datetime_value(spec)
    raise FormatError(f"Extended JSON $date has an unknown form: {spec!r}")


def _ext_decimal(text: Any) -> Any:
    if not isinstance(text, str):
        raise FormatError("Extended JSON $numberDecimal must be a string")
    try:
        return decimal_value(Decimal128(text))
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
        return objectid_value(_ext_oid(arg))
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
        return symbol_value(arg)
    if key == "$code":
        if not isinstance(arg, str):
            raise FormatError("Extended JSON $code must be a string")
        return code_value(arg)
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
        return timestamp_value(arg["t"], arg["i"])
    if key == "$regularExpression":
        if (
            not isinstance(arg, dict)
            or set(arg) != {"pattern", "options"}
            or not all(isinstance(arg[k], str) for k in ("pattern", "options"))
        ):
            raise FormatError("Extended JSON $regularExpression needs pattern and options")
        return regex_value(arg["pattern"], arg["options"])
    if key == "$dbPointer":
        if not isinstance(arg, dict) or set(arg) != {"$ref", "$id"}:
            raise FormatError("Extended JSON $dbPointer needs exactly $ref and $id")
        ns, oid = arg["$ref"], arg["$id"]
        if not isinstance(ns, str) or not isinstance(oid, dict) or set(oid) != {"$oid"}:
            raise FormatError("Extended JSON $dbPointer needs a string $ref and an $oid $id")
        return dbpointer_value(ns, _ext_oid(oid["$oid"]))
    if key == "$minKey":
        if arg != 1:
            raise FormatError("Extended JSON $minKey must be 1")
        return MINKEY_VALUE
    if key == "$maxKey":
        if arg != 1:
            raise FormatError("Extended JSON $maxKey must be 1")
        return MAXKEY_VALUE
    if key == "$undefined":
        if arg is not True:
            raise FormatError("Extended JSON $undefined must be true")
        return cbor2.undefined
    if key == "$uuid":
        try:
            return binary_value(4, uuid.UUID(arg).bytes)  # a UUID is binary subtype 4
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
            return code_with_scope_value(code, _ext_value(scope, depth + 1))
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
    return logical_record(model)
