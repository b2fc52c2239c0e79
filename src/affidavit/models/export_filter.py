"""An export spec's query filter (``[input] filter``, docs/exports.md "The query filter"): a
MongoDB filter document restricted to a safe subset, checked once when the spec is parsed and
evaluated here, in Python, on the canonical Extended JSON v2 values of a document, with
MongoDB's semantics for that subset (the same records a MongoDB server's ``find`` returns;
``tests/integration/test_export_filter_mongo.py`` checks that against a real server).

The subset:

- top level: ``path = value`` (equality), ``path = { op = ..., ... }`` (every operator must
  hold, each on its own), ``"$and" = [ {...}, ... ]`` and ``"$or" = [ {...}, ... ]``
  (non-empty lists of filters, nested at most :data:`MAX_DEPTH` deep);
- operators: ``$eq``, ``$in`` (a list), ``$gt``, ``$gte``, ``$lt``, ``$lte``, ``$exists``
  (a boolean);
- values: strings, integers, floats (not NaN), booleans and TOML offset date-times;
- a path is a field name or a dotted path (``address.city``); no segment starts with ``$``,
  none is a number (array positions are not in the subset).

Anything else is refused with :class:`~affidavit.errors.InputError` (exit 2) naming it; in
particular ``$where``, ``$function``, ``$expr``, ``$accumulator`` (server-side code) and every
operator not listed.

Semantics (MongoDB's, for the subset): a path is followed through documents; an array met on
the way is expanded (each of its documents followed; arrays directly inside arrays are not);
the values found are the candidates, and a candidate that is an array also offers each of its
elements. Equality and ``$in`` match when a candidate equals a value; comparisons compare only
within a type bracket (numbers with numbers: ``int``, ``long``, ``double`` and ``decimal`` by
value; strings with strings by code point, as MongoDB's simple collation does; dates with
dates; booleans with booleans) and match when some candidate compares; ``$exists: true``
matches when the path leads to a value (``null`` included), ``false`` when it does not.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any, Final

from affidavit.errors import InputError

MAX_DEPTH: Final = 16
"""How deep ``$and`` / ``$or`` may nest."""
COMPARISONS: Final = ("$gt", "$gte", "$lt", "$lte")
OPERATORS: Final = frozenset({"$eq", "$in", "$exists", *COMPARISONS})
LOGICAL: Final = frozenset({"$and", "$or"})
_SEGMENT = re.compile(r"[^$.\x00][^.\x00]{0,254}")
_HINT: Final = (
    "the filter takes equality, $eq, $in, $gt, $gte, $lt, $lte, $exists, $and and $or "
    "(docs/exports.md, the query filter)"
)

Key = tuple[str, Any]
"""A comparable value: its type bracket and the value within it."""
Match = Callable[[Mapping[str, Any]], bool]
"""A compiled filter: a document's canonical Extended JSON fields in, matched or not."""


def _refuse(message: str) -> InputError:
    return InputError(f"input.filter: {message}", hint=_HINT)


def _path(text: str) -> tuple[str, ...]:
    parts = tuple(text.split("."))
    for part in parts:
        if not _SEGMENT.fullmatch(part):
            raise _refuse(f"{text[:80]!r} is not a field path (a.b.c; no segment starting $)")
        if part.isdigit():
            raise _refuse(f"{text[:80]!r} names an array position; positions are not supported")
    return parts


def _key_of_filter_value(value: Any, where: str) -> Key:
    """A filter value as a comparable key; refuses what the subset does not take."""
    if isinstance(value, bool):
        return ("bool", value)
    if isinstance(value, int):
        if abs(value) >= 2**63:
            raise _refuse(f"{where}: {value} is outside the 64-bit integer range")
        return ("number", Decimal(value))
    if isinstance(value, float):
        if math.isnan(value):
            raise _refuse(f"{where}: NaN is not a filter value")
        return ("number", Decimal(value) if math.isfinite(value) else Decimal(str(value)))
    if isinstance(value, str):
        return ("string", value)
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise _refuse(f"{where}: a date-time needs an offset (e.g. 2026-01-01T00:00:00Z)")
        delta = value.astimezone(UTC) - datetime(1970, 1, 1, tzinfo=UTC)
        millis = (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000
        return ("date", millis)
    kind = "a table" if isinstance(value, Mapping) else type(value).__name__
    if isinstance(value, list):
        kind = "a list"
    raise _refuse(f"{where}: {kind} is not a filter value (strings, numbers, booleans, dates)")


def _ejson_of_filter_value(value: Any) -> Any:
    """A filter value as canonical Extended JSON (for the manifest: no floats in it)."""
    if isinstance(value, bool | str):
        return value
    if isinstance(value, int):
        return {"$numberInt" if -(2**31) <= value < 2**31 else "$numberLong": str(value)}
    if isinstance(value, float):
        return {"$numberDouble": repr(value) if math.isfinite(value) else str(value).title()}
    if isinstance(value, datetime):
        return {"$date": {"$numberLong": str(_key_of_filter_value(value, "")[1])}}
    if isinstance(value, list):
        return [_ejson_of_filter_value(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _ejson_of_filter_value(v) for k, v in value.items()}
    raise TypeError(type(value).__name__)  # pragma: no cover - parse refused it


def key_of_value(value: Any) -> Key | None:
    """A canonical Extended JSON value as a comparable key (None: a type no filter value
    has, e.g. an ObjectId, binary data, a document)."""
    kind = type(value)
    if kind is str:
        return ("string", value)
    if kind is bool:
        return ("bool", value)
    if value is None:
        return ("null", None)
    if kind is dict and len(value) == 1:
        ((tag, inner),) = value.items()
        if tag in ("$numberInt", "$numberLong", "$numberDecimal") and type(inner) is str:
            try:
                number = Decimal(inner)
            except InvalidOperation:
                return None
            return None if number.is_nan() else ("number", number)
        if tag == "$numberDouble" and type(inner) is str:
            if inner == "NaN":
                return None
            try:
                return ("number", Decimal(inner))
            except InvalidOperation:
                return None
        if tag == "$date" and type(inner) is dict and set(inner) == {"$numberLong"}:
            try:
                return ("date", int(inner["$numberLong"]))
            except ValueError:
                return None
    return None


def candidates(value: Any, path: Sequence[str]) -> list[Any]:
    """The values ``path`` leads to from ``value`` (arrays on the way expanded one level)."""
    current = [value]
    for part in path:
        found = []
        for item in current:
            if type(item) is dict:
                if part in item:
                    found.append(item[part])
            elif type(item) is list:
                found.extend(e[part] for e in item if type(e) is dict and part in e)
        current = found
    return current


def _offered(values: list[Any]) -> list[Key]:
    """Every comparable key the candidates offer (an array: itself and its elements)."""
    keys = []
    for value in values:
        items = value if type(value) is list else [value]
        for item in items:
            key = key_of_value(item)
            if key is not None:
                keys.append(key)
    return keys


_TESTS: Final[dict[str, Callable[[Any, Any], bool]]] = {
    "$gt": lambda a, b: a > b,
    "$gte": lambda a, b: a >= b,
    "$lt": lambda a, b: a < b,
    "$lte": lambda a, b: a <= b,
}


def _field_test(path: tuple[str, ...], op: str, arg: Any, where: str) -> Match:
    top, rest = path[0], path[1:]
    if op == "$exists":
        if not isinstance(arg, bool):
            raise _refuse(f"{where}: $exists takes true or false")
        want = arg
        return lambda doc: (top in doc and bool(candidates(doc[top], rest))) is want
    if op == "$in":
        if not isinstance(arg, list):
            raise _refuse(f"{where}: $in takes a list")
        options = frozenset(_key_of_filter_value(v, f"{where}[{i}]") for i, v in enumerate(arg))
        return lambda doc: (
            top in doc and any(k in options for k in _offered(candidates(doc[top], rest)))
        )
    key = _key_of_filter_value(arg, where)
    if op == "$eq":
        return lambda doc: top in doc and key in _offered(candidates(doc[top], rest))
    test, bracket, bound = _TESTS[op], key[0], key[1]
    return lambda doc: (
        top in doc
        and any(k[0] == bracket and test(k[1], bound) for k in _offered(candidates(doc[top], rest)))
    )


def _all_of(subs: Sequence[Match]) -> Match:
    return lambda doc: all(s(doc) for s in subs)


def _any_of(subs: Sequence[Match]) -> Match:
    return lambda doc: any(s(doc) for s in subs)


def _compile(raw: Any, depth: int, where: str) -> Match:
    if not isinstance(raw, Mapping):
        raise _refuse(f"{where} must be a table (a filter document)")
    if not raw:
        raise _refuse(f"{where} is empty (leave the filter out to export every record)")
    if depth > MAX_DEPTH:
        raise _refuse(f"$and/$or nest deeper than {MAX_DEPTH}")
    tests: list[Match] = []
    for key, value in raw.items():
        name = str(key)
        if name.startswith("$"):
            if name not in LOGICAL:
                raise _refuse(f"operator {name[:40]} is not allowed at {where}")
            if not isinstance(value, list) or not value:
                raise _refuse(f"{where}.{name} takes a non-empty list of filter tables")
            subs = [_compile(v, depth + 1, f"{where}.{name}[{i}]") for i, v in enumerate(value)]
            tests.append(_all_of(subs) if name == "$and" else _any_of(subs))
            continue
        path = _path(name)
        here = f"{where}.{name}"
        if isinstance(value, Mapping):
            ops = [str(k) for k in value]
            plain = [k for k in ops if not k.startswith("$")]
            if plain or not ops:
                raise _refuse(
                    f"{here}: equality with a document is not supported"
                    if not any(k.startswith("$") for k in ops)
                    else f"{here} mixes operators and field names"
                )
            for op in ops:
                if op not in OPERATORS:
                    raise _refuse(f"operator {op[:40]} is not allowed ({here})")
                tests.append(_field_test(path, op, value[op], f"{here}.{op}"))
            continue
        tests.append(_field_test(path, "$eq", value, here))
    every = tuple(tests)
    return lambda doc: all(t(doc) for t in every)


def _tops(raw: Mapping[str, Any], into: set[str]) -> None:
    for name, value in raw.items():
        if name in LOGICAL:
            for sub in value:
                _tops(sub, into)
        else:
            into.add(str(name).split(".", 1)[0])


@dataclass(frozen=True, slots=True)
class QueryFilter:
    """A checked filter: the document as the spec wrote it (TOML values), the top-level
    fields it reads, and its compiled test (on canonical Extended JSON fields)."""

    document: Mapping[str, Any]
    fields: frozenset[str]
    match: Match

    @classmethod
    def parse(cls, raw: Any) -> QueryFilter:
        """Check ``raw`` (the spec's ``input.filter``); raises :class:`InputError`."""
        test = _compile(raw, 0, "filter")
        tops: set[str] = set()
        _tops(raw, tops)
        return cls(document=raw, fields=frozenset(tops), match=test)

    def to_json(self) -> dict[str, Any]:
        """The filter as canonical Extended JSON (manifests, events; no floats)."""
        out: dict[str, Any] = _ejson_of_filter_value(self.document)
        return out

    def to_mongo(self) -> dict[str, Any]:
        """The filter as a MongoDB query (Python values a driver encodes: ``int``, ``float``,
        ``str``, ``bool``, aware ``datetime``)."""
        return dict(self.document)
