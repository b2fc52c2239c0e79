"""Open Data Contract Standard (ODCS v3.0.x, v3.1.0, v3.2.0) documents as export contracts.

A spec may hold its contract as an ODCS document (YAML or JSON, inline in the spec's TOML:
``[contract] odcs = '''...'''``, docs/exports.md "ODCS contracts"). :func:`parse_odcs`
checks the document against the **official** ODCS JSON Schema (``schema.json`` of the
pinned ``open-data-contract-standard`` package, draft 2019-09, with its formats asserted),
then what that schema cannot say (the members each ``apiVersion`` defines, what affidavit
understands), and translates what affidavit can check into the internal contract: a JSON
Schema on the relaxed Extended JSON form of each output record, row-count bounds, null limits
(rows or percent) and uniqueness. Everything it cannot check (``type: sql`` or ``custom``
quality rules, an unknown library rule or logical type, a comparison it cannot express, a
relationship) is refused with an :class:`~affidavit.errors.InputError` naming the rule: a
contract is never silently weaker than the document it came from.
"""

from __future__ import annotations

import copy
import datetime as dt
import functools
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from importlib import resources
from typing import Any, Final

import jsonschema
import yaml  # type: ignore[import-untyped]

from affidavit.crypto.digest import sha256_hex
from affidavit.errors import InputError

MAX_ODCS_BYTES: Final = 128 * 1024
MAX_PROPERTY_DEPTH: Final = 8
"""Properties nested in properties (``properties`` or ``items``), at most: a field that
leaves is a path of at most 8 segments (``models.export.MAX_PATH_DEPTH``), and the official
schema's validator takes about three times longer per level (12 levels: minutes)."""
NESTING_BUDGET: Final = 20_000
"""The sum over a document's properties of 3 ** (the property's depth), at most: the
official schema's validator takes about 0.2 ms per unit (a property at depth 8 about 1.4 s,
so 40 of them a minute), so a document is refused above about 4 s of it. A flat document
of 128 KiB (about 3,000 properties) costs about 9,000."""
MAX_NESTING: Final = 64
"""Mappings and lists nested in the document, at most (a usual document: about 20)."""
API_VERSIONS: Final = ("v3.0.0", "v3.0.1", "v3.0.2", "v3.1.0", "v3.2.0")
"""The ODCS versions read (``apiVersion``); the official schema also lists v2.2.x, refused."""
SCHEMA_PACKAGE: Final = "open_data_contract_standard"
"""The package holding the official ODCS JSON Schema (``schema.json``), pinned exactly in
pyproject.toml: its schema decides which documents are ODCS."""
METRICS: Final = ("rowCount", "nullValues", "duplicateValues", "invalidValues")
"""The library quality rules translated (``metric``, or ``rule`` as v3.0 names it)."""
_ALIASES: Final = {"duplicateCount": "duplicateValues", "nullCount": "nullValues"}
_COMPARISONS: Final = (
    "mustBe",
    "mustBeGreaterThan",
    "mustBeGreaterOrEqualTo",
    "mustBeLessThan",
    "mustBeLessOrEqualTo",
    "mustBeBetween",
)
_LARGEST: Final = 2**53 - 1  # the manifest's canonical JSON holds integers up to this
_NAME: Final = re.compile(r"[^$.\x00][^.\x00]{0,254}")
_HINT: Final = "docs/exports.md, ODCS contracts, lists what is translated"
_INT_FORMATS: Final = {
    f"{sign}{bits}": (
        (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if sign == "i" else (0, 2**bits - 1)
    )
    for sign in ("i", "u")
    for bits in (8, 16, 32, 64)
}

# What the official schema cannot say. It is one schema for every apiVersion (the union of
# v3.0.0 ... v3.2.0), so a member, a logical type or a required member of one version only
# is checked here, after it, from the versions' own schemas (bitol-io/open-data-contract-
# standard, schema/odcs-json-schema-v3.0.2.json and -v3.1.0.json).
_ELEMENT: Final = frozenset(
    {
        "name",
        "physicalType",
        "description",
        "businessName",
        "authoritativeDefinitions",
        "tags",
        "customProperties",
        "id",  # v3.1.0
        "deprecated",  # v3.2.0
        "synonyms",  # v3.2.0
    }
)
_OBJECT_MEMBERS: Final = _ELEMENT | {
    "logicalType",
    "physicalName",
    "dataGranularityDescription",
    "properties",
    "quality",
    "context",  # v3.2.0
}
"""The members of a schema object affidavit understands (translated or descriptive only)."""
_PROPERTY_MEMBERS: Final = _ELEMENT | {
    "primaryKey",
    "primaryKeyPosition",
    "logicalType",
    "logicalTypeOptions",
    "physicalName",
    "required",
    "unique",
    "partitioned",
    "partitionKeyPosition",
    "classification",
    "encryptedName",
    "transformSourceObjects",
    "transformLogic",
    "transformDescription",
    "examples",
    "criticalDataElement",
    "quality",
    "properties",
    "items",
    "semanticType",  # v3.2.0
    "enum",  # v3.2.0
}
"""The members of a property affidavit understands; the official schema also allows
``relationships`` (v3.1.0: foreign keys into other objects, which one export cannot check)
and ``map`` (v3.2.0), refused."""
_SINCE: Final = {
    "v3.1.0": frozenset({"id", "relationships", "timestamp", "time"}),
    "v3.2.0": frozenset(
        {"deprecated", "synonyms", "context", "enum", "semanticType", "map", "vector"}
    ),
}
"""Members (and logical types) by the ODCS version that introduced them."""
_STATUS_REQUIRED: Final = ("v3.0.0", "v3.0.1", "v3.0.2", "v3.1.0")
"""The versions whose own schema requires ``status`` (v3.2.0 no longer does)."""
_RFC3339: Final = re.compile(
    r"(\d{4}-\d{2}-\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(\.\d+)?(?:[Zz]|[+-]([01]\d|2[0-3]):[0-5]\d)"
)
_URI: Final = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*:[^\s\x00-\x1f\x7f]*")


@dataclass(frozen=True, slots=True, kw_only=True)
class CountedRule:
    """A ``duplicateValues`` or ``invalidValues`` rule whose limit is not zero: the records
    shipped with a duplicate (a value an earlier shipped record holds) or an invalid value
    (not null, and outside ``valid``: a JSON Schema ``enum`` and/or ``pattern`` on the relaxed
    value) at ``path`` are counted, and the count (``unit`` rows, or percent of the records
    shipped) must lie within the bounds (decimal text; None: unbounded on that side). Null or
    missing values count for neither (``nullValues`` limits them). docs/exports.md, "ODCS
    contracts"."""

    metric: str  # duplicateValues | invalidValues
    path: str
    unit: str  # rows | percent
    low: str | None = None
    low_inclusive: bool = True
    high: str | None = None
    high_inclusive: bool = True
    valid: Mapping[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        """The rule named for people: ``duplicateValues(email)``."""
        return f"{self.metric}({self.path})"

    def limit_text(self) -> str:
        """The bounds in words: ``at most 2 rows``, ``under 5%``, ``exactly 3 rows``."""
        unit = "%" if self.unit == "percent" else " rows"
        if self.low is not None and self.high is not None and self.low == self.high:
            return f"exactly {self.high}{unit}"
        parts = []
        if self.low is not None:
            parts.append(f"{'at least' if self.low_inclusive else 'over'} {self.low}{unit}")
        if self.high is not None:
            parts.append(f"{'at most' if self.high_inclusive else 'under'} {self.high}{unit}")
        return " and ".join(parts) or "any number"

    def within(self, count: int, shipped: int) -> bool:
        """Whether ``count`` of ``shipped`` records meets the bounds (percent: exactly, as
        ``count * 100`` against ``limit * shipped``; no records, nothing over a limit)."""
        share = Decimal(count) * (100 if self.unit == "percent" else 1)
        scale = shipped if self.unit == "percent" else 1
        if self.high is not None:
            bound = Decimal(self.high) * scale
            if share > bound or (not self.high_inclusive and share == bound and count):
                return False
        if self.low is not None:
            bound = Decimal(self.low) * scale
            if share < bound or (not self.low_inclusive and share == bound):
                return False
        return True

    def to_json(self) -> dict[str, Any]:
        """JSON-ready (the manifest's ``contract.rules.counted``)."""
        out: dict[str, Any] = {
            "metric": self.metric,
            "path": self.path,
            "unit": self.unit,
            "low": self.low,
            "low_inclusive": self.low_inclusive,
            "high": self.high,
            "high_inclusive": self.high_inclusive,
        }
        if self.valid:
            out["valid"] = dict(self.valid)
        return out

    @classmethod
    def from_json(cls, data: Any) -> CountedRule:
        """The rule :meth:`to_json` wrote; raises :class:`InputError`."""
        if not isinstance(data, Mapping):
            raise InputError("contract.counted: each rule must be a table")
        metric, path, unit = data.get("metric"), data.get("path"), data.get("unit")
        low, high = data.get("low"), data.get("high")
        valid = data.get("valid", {})
        if (
            metric not in ("duplicateValues", "invalidValues")
            or not isinstance(path, str)
            or unit not in ("rows", "percent")
            or not all(b is None or isinstance(b, str) for b in (low, high))
            or not isinstance(data.get("low_inclusive", True), bool)
            or not isinstance(data.get("high_inclusive", True), bool)
            or not isinstance(valid, Mapping)
            or set(valid) - {"enum", "pattern"}
        ):
            raise InputError(f"contract.counted: a malformed rule {str(dict(data))[:120]}")
        for bound in (low, high):
            try:
                if bound is not None and not Decimal(bound).is_finite():
                    raise InvalidOperation
            except InvalidOperation:
                raise InputError(f"contract.counted: {str(bound)[:40]!r} is not a number") from None
        return cls(
            metric=metric,
            path=path,
            unit=unit,
            low=low,
            low_inclusive=bool(data.get("low_inclusive", True)),
            high=high,
            high_inclusive=bool(data.get("high_inclusive", True)),
            valid=dict(valid),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class OdcsContract:
    """What an ODCS document says, translated: the JSON Schema of a record, row bounds,
    null limits (``max_null_percent``: ``(percent, inclusive)``), unique fields, and the
    dotted paths of every property it describes."""

    api_version: str
    id: str
    version: str
    sha256: str  # of the document's text (UTF-8)
    schema: dict[str, Any]
    min_records: int = 0
    max_records: int | None = None
    max_nulls: dict[str, int] = field(default_factory=dict)
    max_null_percent: dict[str, tuple[str, bool]] = field(default_factory=dict)
    unique: tuple[str, ...] = ()
    paths: tuple[str, ...] = ()
    counted: tuple[CountedRule, ...] = ()


def _duplicate(key: object) -> InputError:
    return InputError(
        f"the ODCS document gives the member {_line(str(key), 40)!r} twice in one mapping",
        hint="write each member once: YAML and JSON readers keep the last one silently, so the "
        "document would not mean what its first one reads as",
    )


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object, refusing a member given twice (``json`` keeps the last silently)."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _duplicate(key)
        out[key] = value
    return out


class _NoAliasLoader(yaml.SafeLoader):  # type: ignore[misc]
    """``yaml.safe_load`` without aliases (no "billion laughs"), without merge keys (``<<``)
    and without a member given twice in one mapping (PyYAML keeps the last silently), with
    timestamps as the strings they are written as."""

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        seen: set[Any] = set()
        for key_node, _ in getattr(node, "value", []):
            if key_node.tag == "tag:yaml.org,2002:merge":
                raise InputError(
                    "the ODCS document uses a YAML merge key (<<)",
                    hint="write the merged members out in full",
                )
            if isinstance(key_node, yaml.ScalarNode):
                key = self.construct_object(key_node)
                try:
                    duplicate = key in seen
                except TypeError:
                    continue  # unhashable: the constructor below refuses it
                if duplicate:
                    raise _duplicate(key)
                seen.add(key)
        return super().construct_mapping(node, deep=deep)

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            raise InputError(
                "the ODCS document uses a YAML alias (*name)",
                hint="write the aliased part out in full",
            )
        return super().compose_node(parent, index)


_NoAliasLoader.add_constructor(
    "tag:yaml.org,2002:timestamp",
    lambda loader, node: loader.construct_scalar(node),
)


def load_document(text: str) -> Any:
    """The data of an ODCS document's YAML (or JSON) text; raises :class:`InputError`."""
    if len(text.encode("utf-8")) > MAX_ODCS_BYTES:
        raise InputError(f"the ODCS document is larger than {MAX_ODCS_BYTES // 1024} KiB")
    try:
        if text.lstrip().startswith("{"):
            data = json.loads(text, object_pairs_hook=_pairs)
        else:
            data = yaml.load(text, Loader=_NoAliasLoader)  # noqa: S506 - a safe loader
    except RecursionError:
        raise InputError(
            "the ODCS document nests too deeply", hint="an ODCS document is a few levels deep"
        ) from None
    except (ValueError, yaml.YAMLError) as exc:
        shown = " ".join(str(exc).split())[:200]
        raise InputError(
            f"the ODCS document is not valid YAML or JSON: {shown}",
            hint="contract.odcs holds the document's text (a TOML multi-line string)",
        ) from None
    _check_nesting(data)
    return data


def _check_nesting(data: Any) -> None:
    """Refuse a document nested deeper than :data:`MAX_NESTING` (a stack, not recursion)."""
    stack: list[tuple[Any, int]] = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > MAX_NESTING:
            raise InputError(
                f"the ODCS document nests more than {MAX_NESTING} levels deep",
                hint="an ODCS document is a few levels deep",
            )
        if isinstance(value, dict):
            stack.extend((v, depth + 1) for v in value.values())
        elif isinstance(value, list):
            stack.extend((v, depth + 1) for v in value)


def _check_property_depth(data: Mapping[str, Any]) -> None:
    """Refuse properties nested deeper than :data:`MAX_PROPERTY_DEPTH` before the official
    schema sees them (its validator's time grows about threefold per level)."""
    stack: list[tuple[Any, int]] = []
    for obj in data.get("schema") or []:
        if isinstance(obj, dict) and isinstance(obj.get("properties"), list):
            stack.extend((p, 1) for p in obj["properties"])
    cost = 0
    while stack:
        prop, depth = stack.pop()
        if not isinstance(prop, dict):
            continue
        if depth > MAX_PROPERTY_DEPTH:
            raise InputError(
                f"the ODCS document nests properties more than {MAX_PROPERTY_DEPTH} levels deep",
                hint=f"a field that leaves is a path of at most {MAX_PROPERTY_DEPTH} segments",
            )
        cost += 3**depth
        if cost > NESTING_BUDGET:
            raise InputError(
                "the ODCS document nests too many properties too deeply to be checked in "
                "reasonable time",
                hint="fewer properties deep inside objects and arrays (docs/exports.md, ODCS "
                "contracts)",
            )
        children = prop.get("properties")
        if isinstance(children, list):
            stack.extend((c, depth + 1) for c in children)
        if "items" in prop:
            stack.append((prop["items"], depth + 1))


def _date_time(instance: object) -> bool:
    """RFC 3339 ``date-time`` (as JSON Schema defines the format), with the standard library
    only: the verdict is the same on every machine."""
    if not isinstance(instance, str):
        return True
    match = _RFC3339.fullmatch(instance)
    if match is None:
        return False
    day, hour, minute, second = match.group(1, 2, 3, 4)
    try:
        dt.date.fromisoformat(day)
    except ValueError:
        return False
    return int(hour) < 24 and int(minute) < 60 and int(second) <= 60  # 60: a leap second


def _date(instance: object) -> bool:
    if not isinstance(instance, str):
        return True
    if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", instance):
        return False
    try:
        dt.date.fromisoformat(instance)
    except ValueError:
        return False
    return True


def _uri(instance: object) -> bool:
    return not isinstance(instance, str) or _URI.fullmatch(instance) is not None


def _guard_logical_types(schema: dict[str, Any]) -> None:
    """Apply the upstream fix of bitol-io/open-data-contract-standard#322 (pull requests 324
    and 328, merged after the 3.2.0 package was cut) to ``schema``: the ``logicalType: map``
    and ``vector`` conditionals of ``SchemaBaseProperty`` apply only when ``logicalType`` is
    present. Unfixed, every property without a ``logicalType`` must carry a ``map`` block,
    which refuses valid v3.0.x, v3.1.0 and v3.2.0 documents. The rule itself is unchanged;
    raises :class:`RuntimeError` when the schema is not the one this fix was written for."""
    branches = schema["$defs"]["SchemaBaseProperty"]["allOf"]
    guarded = 0
    for branch in branches:
        condition = branch.get("if")
        if condition in (
            {"properties": {"logicalType": {"const": "map"}}},
            {"properties": {"logicalType": {"const": "vector"}}},
        ):
            condition["required"] = ["logicalType"]
            guarded += 1
    if guarded != 2:
        raise RuntimeError("the ODCS JSON Schema is not open-data-contract-standard 3.2.0's")


@functools.cache
def official_validator() -> Any:
    """A Draft 2019-09 validator of the official ODCS JSON Schema (``schema.json`` of the
    ``open-data-contract-standard`` package), asserting the formats it uses (``date-time``,
    ``date``, ``uri``) with checks of the standard library, so that no optional package
    decides what is accepted."""
    text = resources.files(SCHEMA_PACKAGE).joinpath("schema.json").read_text(encoding="utf-8")
    schema = json.loads(text)
    _guard_logical_types(schema)
    checker = jsonschema.FormatChecker(formats=())
    checker.checks("date-time")(_date_time)
    checker.checks("date")(_date)
    checker.checks("uri")(_uri)
    return jsonschema.Draft201909Validator(schema, format_checker=checker)


def _path_key(error: Any) -> list[tuple[int, str]]:
    return [(0, f"{p:012d}") if isinstance(p, int) else (1, str(p)) for p in error.absolute_path]


def check_official(data: Any) -> None:
    """Raise :class:`InputError` naming the JSON path of the first place (in document order)
    where ``data`` breaks the official ODCS JSON Schema."""
    errors = sorted(official_validator().iter_errors(data), key=_path_key)
    if not errors:
        return
    first = errors[0]
    if first.validator == "unevaluatedProperties":  # often the echo of a failed branch:
        where = list(first.absolute_path)  # name the cause found inside it, when there is one
        causes = [
            e
            for e in errors
            if e.validator != "unevaluatedProperties"
            and list(e.absolute_path)[: len(where)] == where
        ]
        first = causes[0] if causes else first
    error = jsonschema.exceptions.best_match([first])  # into oneOf/anyOf: the closest
    raise InputError(
        f"the ODCS document breaks the ODCS JSON Schema at {_line(error.json_path, 120)}: "
        f"{_line(_message(error), 200)}",
        hint="ODCS v3.0.0 to v3.2.0 as the official schema has it (open-data-contract-standard "
        "3.2.0); docs/exports.md, ODCS contracts",
    )


def _message(error: Any) -> str:
    """The error's message, without the instance a ``oneOf``/``anyOf`` error quotes whole."""
    if error.validator not in ("oneOf", "anyOf"):
        return str(error.message)
    context = list(error.context or [])
    if context and all(c.validator == "required" and not c.relative_path for c in context):
        names = [n for c in context for n in c.validator_value if n not in c.instance]
        return "needs one of " + ", ".join(dict.fromkeys(names))
    if not context:  # oneOf: more than one form fits
        return "fits more than one of the forms oneOf allows (exactly one must fit)"
    return f"matches none of the forms {error.validator} allows: {context[0].message}"


def _from_v30(data: dict[str, Any]) -> dict[str, Any]:
    """A v3.0.x document in the words of the official (v3.2.0) schema, which reads every
    v3.0.x document but two: a library rule named by ``rule`` (v3.0's name; now ``metric``,
    ``rule`` deprecated) gets its ``metric`` (``duplicateCount`` -> ``duplicateValues``,
    ``nullCount`` -> ``nullValues``), and a numeric ``exclusiveMinimum``/``exclusiveMaximum``
    flag (``true``: ``minimum``/``maximum`` is exclusive) becomes the exclusive bound it
    names. Nothing else changes; a flag without its bound is left to be refused."""
    data = copy.deepcopy(data)

    def rules(element: Any) -> None:
        if not isinstance(element, dict):
            return
        for rule in element.get("quality") or []:
            if (
                isinstance(rule, dict)
                and isinstance(rule.get("rule"), str)
                and "metric" not in rule
                and rule.get("type", "library") == "library"
            ):
                rule["metric"] = _ALIASES.get(rule["rule"], rule["rule"])

    def walk(prop: Any) -> None:
        if not isinstance(prop, dict):
            return
        rules(prop)
        options = prop.get("logicalTypeOptions")
        if prop.get("logicalType") in ("integer", "number") and isinstance(options, dict):
            for flag, bound in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
                if options.get(flag) is True and bound in options:
                    options[flag] = options.pop(bound)
                elif options.get(flag) is False:
                    del options[flag]
        for child in prop.get("properties") or []:
            walk(child)
        walk(prop.get("items"))

    for obj in data.get("schema") or []:
        if isinstance(obj, dict):
            rules(obj)
            for prop in obj.get("properties") or []:
                walk(prop)
    return data


def parse_odcs(text: str) -> OdcsContract:
    """Check and translate an ODCS v3.0.x, v3.1.0 or v3.2.0 document (see the module
    docstring); raises :class:`InputError` naming what is wrong or cannot be checked, with a
    hint."""
    data = load_document(text)
    if not isinstance(data, dict):
        raise InputError("the ODCS document is not a mapping", hint=_HINT)
    api = data.get("apiVersion")
    if isinstance(api, str) and api.startswith("v2."):
        raise InputError(
            f"the ODCS document is ODCS {_line(api, 20)}: ODCS v2 is not read",
            hint="rewrite it as ODCS v3 (apiVersion " + ", ".join(API_VERSIONS) + "; the "
            "standard's v2-to-v3 migration guide)",
        )
    _check_property_depth(data)
    if isinstance(api, str) and api.startswith("v3.0."):
        data = _from_v30(data)
    check_official(data)
    api = str(data["apiVersion"])
    if api not in API_VERSIONS:  # the official schema lists no other v3 (pinned)
        raise InputError(
            f"the ODCS document's apiVersion {_line(api, 20)} is not read",
            hint="apiVersion " + ", ".join(API_VERSIONS),
        )
    if api in _STATUS_REQUIRED and "status" not in data:
        raise InputError(
            f"the ODCS document has no status, which ODCS {api} requires",
            hint="add status (proposed, draft, active, deprecated, retired), or write v3.2.0",
        )
    objects = data.get("schema") or []
    if len(objects) != 1:
        raise InputError(
            f"the ODCS document describes {len(objects)} schema objects; an export has one",
            hint="keep the one object that describes the exported records",
        )
    builder = _Builder(api)
    if "context" in data:
        builder.since("context", where="the ODCS document")
    obj = objects[0]
    builder.members(obj, _OBJECT_MEMBERS, where=f"ODCS schema object {str(obj['name'])[:80]!r}")
    schema = builder.object_schema(obj.get("properties", []), prefix="")
    if len(builder.primary_key) > 1:  # ODCS: one key of several columns (primaryKeyPosition)
        shown = ", ".join(builder.primary_key[:5])[:120]
        raise InputError(
            f"the ODCS document's primary key has several properties ({shown}): a composite "
            "key cannot be checked by affidavit",
            hint="unique values are checked field by field: mark one property primaryKey (or "
            "unique), or leave the composite key out",
        )
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    for number, rule in enumerate(obj.get("quality", []), start=1):
        builder.quality(rule, path=None, where=f"quality rule {number} of {obj['name']!r}")
    return OdcsContract(
        api_version=api,
        id=str(data["id"]),
        version=str(data["version"]),
        sha256=sha256_hex(text.encode("utf-8")),
        schema=schema,
        min_records=builder.min_records,
        max_records=builder.max_records,
        max_nulls=builder.max_nulls,
        max_null_percent=builder.max_null_percent,
        unique=tuple(builder.unique),
        paths=tuple(builder.paths),
        counted=tuple(builder.counted),
    )


def _bounds(
    rule: Mapping[str, Any], where: str
) -> tuple[Decimal | None, bool, Decimal | None, bool]:
    """``(low, low inclusive, high, high inclusive)`` of the rule's one comparison."""
    given = [k for k in _COMPARISONS if k in rule]
    for refused in ("mustNotBe", "mustNotBeBetween"):
        if refused in rule:
            raise InputError(f"{where}: {refused} cannot be checked by affidavit", hint=_HINT)
    if len(given) != 1:
        raise InputError(f"{where}: needs exactly one of {', '.join(_COMPARISONS)}", hint=_HINT)
    (kind,) = given
    raw = rule[kind]
    values = raw if kind == "mustBeBetween" else [raw]
    numbers: list[Decimal] = []
    for value in values:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise InputError(f"{where}: {kind} must be a number", hint=_HINT)
        try:
            number = Decimal(str(value))
        except InvalidOperation:
            raise InputError(f"{where}: {kind} must be a number", hint=_HINT) from None
        if not number.is_finite() or number < 0 or number > _LARGEST:
            raise InputError(
                f"{where}: {kind} must be a number >= 0 (at most 2^53 - 1)", hint=_HINT
            )
        numbers.append(number)
    if kind == "mustBe":
        return numbers[0], True, numbers[0], True
    if kind == "mustBeBetween":
        if numbers[0] > numbers[1]:
            raise InputError(f"{where}: mustBeBetween takes the smaller number first")
        return numbers[0], True, numbers[1], True
    if kind == "mustBeGreaterThan":
        return numbers[0], False, None, True
    if kind == "mustBeGreaterOrEqualTo":
        return numbers[0], True, None, True
    if kind == "mustBeLessThan":
        return None, True, numbers[0], False
    return None, True, numbers[0], True


def _count_bounds(
    low: Decimal | None, low_in: bool, high: Decimal | None, high_in: bool
) -> tuple[int, int | None]:
    """Whole-count bounds ``[lo, hi]`` of a comparison on a count."""
    lo = 0
    if low is not None:
        lo = math.ceil(low) if low_in else math.floor(low) + 1
    hi = None
    if high is not None:
        hi = math.floor(high) if high_in else math.ceil(high) - 1
    return lo, hi


class _Builder:
    """Walks the properties and quality rules, building the JSON Schema and the rules."""

    def __init__(self, api_version: str) -> None:
        self.api_version = api_version
        self.min_records = 0
        self.max_records: int | None = None
        self.max_nulls: dict[str, int] = {}
        self.max_null_percent: dict[str, tuple[str, bool]] = {}
        self.unique: list[str] = []
        self.primary_key: list[str] = []  # the paths with primaryKey: true
        self.paths: list[str] = []
        self.invalid: dict[str, dict[str, Any]] = {}  # invalidValues: enum, pattern by path
        self.counted: list[CountedRule] = []  # duplicateValues, invalidValues above zero

    def since(self, name: str, *, where: str) -> None:
        """Refuse ``name`` (a member or logical type) when the document's ODCS version
        predates it: the official schema, one for every version, lets it through."""
        for version, names in _SINCE.items():
            if name in names and API_VERSIONS.index(self.api_version) < API_VERSIONS.index(version):
                raise InputError(
                    f"{where}: {name} is ODCS {version}, the document says {self.api_version}",
                    hint=f"write apiVersion: {version}, or leave {name} out",
                )

    def members(self, element: Mapping[str, Any], allowed: frozenset[str], *, where: str) -> None:
        """Refuse a member affidavit does not understand (it could carry meaning a check
        would silently drop) and one the document's ODCS version does not define."""
        for key in element:
            if key == "relationships":
                raise InputError(
                    f"{where}: relationships (foreign keys into other data) cannot be checked "
                    "by affidavit",
                    hint="an export holds one dataset: leave the relationships out",
                )
            if key not in allowed:
                raise InputError(
                    f"{where}: {_line(str(key), 40)} cannot be checked by affidavit", hint=_HINT
                )
            self.since(key, where=where)

    def object_schema(
        self, properties: Sequence[Mapping[str, Any]], *, prefix: str
    ) -> dict[str, Any]:
        props: dict[str, Any] = {}
        required: list[str] = []
        for prop in properties:
            name = str(prop["name"])
            path = prefix + name
            if not _NAME.fullmatch(name):
                raise InputError(
                    f"ODCS property {path[:80]!r}: a name without '.' that does not start with '$'",
                    hint="nested fields are properties of an object property",
                )
            if name in props:
                raise InputError(f"ODCS property {path[:80]!r} is described twice")
            self.paths.append(path)
            if "physicalName" in prop and prop["physicalName"] != name:
                raise InputError(
                    f"ODCS property {path[:80]!r}: physicalName differs from name",
                    hint="records are checked by their field names: name the field as it is "
                    "stored (name), and leave physicalName out",
                )
            props[name] = self.property_schema(prop, path=path, in_array=False)
            if prop.get("required") or prop.get("primaryKey"):
                required.append(name)
            if prop.get("primaryKey"):
                self.primary_key.append(path)
            if prop.get("unique") or prop.get("primaryKey"):
                self._unique(path)
            for number, rule in enumerate(prop.get("quality", []), start=1):
                self.quality(
                    rule, path=path, where=f"quality rule {number} of property {path[:80]!r}"
                )
            narrowed = self.invalid.pop(path, {})
            if "enum" in narrowed and "enum" in prop:
                raise InputError(
                    f"ODCS property {path[:80]!r}: enum beside an invalidValues rule with "
                    "validValues",
                    hint="keep one list of the values allowed",
                )
            if "enum" in narrowed and name in required:  # null is refused by its type
                narrowed["enum"] = [v for v in narrowed["enum"] if v is not None]
            props[name].update(narrowed)
        out: dict[str, Any] = {"type": "object", "properties": props}
        if required:
            out["required"] = required
        return out

    def _unique(self, path: str) -> None:
        if path not in self.unique:
            self.unique.append(path)

    def property_schema(
        self, prop: Mapping[str, Any], *, path: str, in_array: bool
    ) -> dict[str, Any]:
        """The JSON Schema of one property (null allowed unless it is required)."""
        where = f"ODCS property {path[:80]!r}"
        self.members(prop, _PROPERTY_MEMBERS, where=where)
        if in_array and (prop.get("unique") or prop.get("primaryKey") or prop.get("quality")):
            raise InputError(
                f"ODCS property {path[:80]!r} is inside an array: unique, primaryKey and "
                "quality rules need a field outside arrays",
                hint=_HINT,
            )
        kind = prop.get("logicalType")
        options = dict(prop.get("logicalTypeOptions") or {})
        schema = self._typed(kind, options, prop, path=path)
        _satisfiable(schema, where=where)
        if "enum" in prop:
            schema["enum"] = _enum(prop["enum"], where=where)
        if prop.get("required") or prop.get("primaryKey"):
            return schema
        if isinstance(schema.get("type"), str):
            schema["type"] = [schema["type"], "null"]
            if "enum" in schema:
                schema["enum"] = [*schema["enum"], None]
            return schema
        if not schema:
            return schema
        return {"anyOf": [{"type": "null"}, schema]}

    def _typed(
        self, kind: Any, options: dict[str, Any], prop: Mapping[str, Any], *, path: str
    ) -> dict[str, Any]:
        where = f"ODCS property {path[:80]!r}"
        if isinstance(kind, str):
            self.since(kind, where=where)
        allowed: dict[str | None, tuple[str, ...]] = {
            None: (),
            "string": ("minLength", "maxLength", "pattern", "format"),
            "integer": (
                "minimum",
                "maximum",
                "exclusiveMinimum",
                "exclusiveMaximum",
                "multipleOf",
                "format",
            ),
            "number": (
                "minimum",
                "maximum",
                "exclusiveMinimum",
                "exclusiveMaximum",
                "multipleOf",
                "format",
            ),
            "boolean": (),
            "date": ("format",),
            "timestamp": ("format",),
            "object": ("minProperties", "maxProperties", "required"),
            "array": ("minItems", "maxItems", "uniqueItems"),
        }
        if kind not in allowed:
            raise InputError(
                f"{where}: logicalType {str(kind)[:40]!r} cannot be checked",
                hint="logical types: " + ", ".join(str(k) for k in allowed if k),
            )
        stray = sorted(set(options) - set(allowed[kind]))
        if stray:
            raise InputError(
                f"{where}: logicalTypeOptions {', '.join(stray)[:80]} cannot be checked for "
                f"logicalType {kind}",
                hint=_HINT,
            )
        if kind is None:
            if "properties" in prop or "items" in prop:
                raise InputError(f"{where}: properties or items need a logicalType")
            return {}
        if kind == "object":
            schema = self.object_schema(prop.get("properties", []), prefix=path + ".")
            if "required" in options:
                schema["required"] = sorted({*schema.get("required", []), *options["required"]})
            for key in ("minProperties", "maxProperties"):
                if key in options:
                    schema[key] = _whole(options[key], f"{where}: {key}")
            return schema
        if "properties" in prop:
            raise InputError(f"{where}: properties belong to logicalType object")
        if kind == "array":
            schema = {"type": "array"}
            item = prop.get("items")
            if item is not None:
                schema["items"] = self.property_schema(item, path=path, in_array=True)
            for key in ("minItems", "maxItems"):
                if key in options:
                    schema[key] = _whole(options[key], f"{where}: {key}")
            if options.get("uniqueItems") is True:
                schema["uniqueItems"] = True
            return schema
        if "items" in prop:
            raise InputError(f"{where}: items belong to logicalType array")
        if kind in ("date", "timestamp"):  # a BSON date: {"$date": ...} in relaxed EJSON
            return {
                "type": "object",
                "required": ["$date"],
                "properties": {"$date": {}},
                "additionalProperties": False,
            }
        if kind == "boolean":
            return {"type": "boolean"}
        if kind == "string":
            schema = {"type": "string"}
            for key in ("minLength", "maxLength"):
                if key in options:
                    schema[key] = _whole(options[key], f"{where}: {key}")
            if "pattern" in options:
                pattern = options["pattern"]
                try:
                    re.compile(str(pattern))
                except re.error as exc:
                    raise InputError(
                        f"{where}: pattern is not a regular expression: {exc}"
                    ) from None
                schema["pattern"] = str(pattern)
            if "format" in options:
                schema["format"] = str(options["format"])  # an annotation, not asserted
            return schema
        return self._numeric(kind, options, where=where)

    @staticmethod
    def _numeric(kind: str, options: Mapping[str, Any], *, where: str) -> dict[str, Any]:
        schema: dict[str, Any] = {"type": kind}
        for key in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf"):
            if key in options:
                value = options[key]
                if (
                    isinstance(value, bool)
                    or not isinstance(value, int | float)
                    or not math.isfinite(value)
                    or abs(value) > _LARGEST
                ):
                    raise InputError(f"{where}: {key} must be a finite number within ±(2^53 - 1)")
                schema[key] = value
        fmt = options.get("format")
        if fmt is not None and kind == "integer":
            if fmt not in _INT_FORMATS:
                raise InputError(
                    f"{where}: integer format {str(fmt)[:20]!r} cannot be checked",
                    hint="formats: " + ", ".join(_INT_FORMATS),
                )
            lo, hi = _INT_FORMATS[fmt]  # i64/u64 bounds lie beyond what JCS holds: left out
            if lo >= -_LARGEST:
                schema["minimum"] = max(lo, schema.get("minimum", lo))
            if hi <= _LARGEST:
                schema["maximum"] = min(hi, schema.get("maximum", hi))
        elif fmt is not None and fmt not in ("f32", "f64"):
            raise InputError(f"{where}: number format {str(fmt)[:20]!r} cannot be checked")
        return schema

    def quality(self, rule: Mapping[str, Any], *, path: str | None, where: str) -> None:
        """Translate one quality rule (``path``: its property; None: the object's)."""
        self.members(rule, frozenset(rule), where=where)  # only the ODCS version's members
        kind = rule.get("type", "library")
        if kind == "text":
            checks = sorted(k for k in rule if k in {"metric", "rule", "arguments", *_COMPARISONS})
            if checks:  # it reads as a check, which a text rule is not
                raise InputError(
                    f"{where}: a text rule with {', '.join(checks)}: text rules are words for "
                    "people, so this would not be checked",
                    hint="drop type: text to make it a library rule, or drop the check",
                )
            return  # words for people: nothing to check
        if kind != "library":
            raise InputError(
                f"{where}: a {kind} rule cannot be checked by affidavit",
                hint="affidavit checks the library rules " + ", ".join(METRICS),
            )
        raw = rule.get("metric", rule.get("rule"))
        metric = _ALIASES.get(str(raw), str(raw))
        if "rule" in rule and _ALIASES.get(str(rule["rule"]), str(rule["rule"])) != metric:
            raise InputError(
                f"{where}: rule {str(rule['rule'])[:40]!r} and metric {str(raw)[:40]!r} differ",
                hint="rule is v3.0's name of metric: keep metric",
            )
        if metric not in METRICS:
            raise InputError(
                f"{where}: the quality rule {str(raw)[:40]!r} cannot be checked by affidavit",
                hint="affidavit checks the library rules " + ", ".join(METRICS),
            )
        unit = rule.get("unit", "rows")
        if unit not in ("rows", "percent"):
            raise InputError(f"{where}: unit {str(unit)[:20]!r}: rows or percent", hint=_HINT)
        low, low_in, high, high_in = _bounds(rule, where)
        args = rule.get("arguments") or {}
        if metric == "rowCount":
            self._row_count(rule, path=path, unit=unit, where=where)
            return
        if path is None:
            raise InputError(f"{where}: {metric} is a rule of a property", hint=_HINT)
        if metric == "nullValues":
            if low is not None and low > 0:
                raise InputError(
                    f"{where}: a lower bound on {metric} cannot be checked",
                    hint="state an upper bound",
                )
            if args:
                raise InputError(f"{where}: nullValues takes no arguments")
            self._nulls(path, unit=unit, high=high, high_in=high_in, where=where)
            return
        if unit == "rows":
            zero = high is not None and _count_bounds(low, low_in, high, high_in)[1] == 0
        else:
            zero = high is not None and high == 0 and high_in
        if low is not None and low == 0 and low_in:
            low = None  # a count is never below 0
        if zero and low is not None:
            raise InputError(f"{where}: no count of {metric} meets these bounds")
        if not zero:
            bounds = (low, low_in, high, high_in)
            self._counted(metric, args, path=path, unit=unit, where=where, bounds=bounds)
            return
        if metric == "duplicateValues":
            if args:
                raise InputError(f"{where}: duplicateValues takes no arguments here")
            self._unique(path)
            return
        self._invalid(args, path=path, where=where)

    def _row_count(
        self, rule: Mapping[str, Any], *, path: str | None, unit: str, where: str
    ) -> None:
        """rowCount: bounds on the number of records (several rules: all of them)."""
        if path is not None or unit != "rows":
            raise InputError(
                f"{where}: rowCount is a rule of the schema object, in rows", hint=_HINT
            )
        if rule.get("arguments"):
            raise InputError(f"{where}: rowCount takes no arguments")
        lo, hi = _count_bounds(*_bounds(rule, where))
        self.min_records = max(self.min_records, lo)
        if hi is not None:
            self.max_records = hi if self.max_records is None else min(self.max_records, hi)
        if self.max_records is not None and self.max_records < self.min_records:
            raise InputError(f"{where}: no number of records meets the rowCount rules")

    def _nulls(
        self, path: str, *, unit: str, high: Decimal | None, high_in: bool, where: str
    ) -> None:
        """nullValues: at most so many null or missing values (rows, or percent of the
        records shipped)."""
        if high is None:
            return  # no upper bound: nothing to check
        if high == 0 and not high_in:
            raise InputError(f"{where}: fewer than 0 nulls cannot be met")
        if unit == "percent":
            if high > 100:
                raise InputError(f"{where}: a percentage above 100")
            self.max_null_percent[path] = (str(high), high_in)
            return
        _, hi = _count_bounds(None, True, high, high_in)
        assert hi is not None
        self.max_nulls[path] = min(hi, self.max_nulls.get(path, hi))

    def _counted(
        self,
        metric: str,
        args: Mapping[str, Any],
        *,
        path: str,
        unit: str,
        where: str,
        bounds: tuple[Decimal | None, bool, Decimal | None, bool],
    ) -> None:
        """duplicateValues / invalidValues with a limit above zero: counted over the records
        shipped (:class:`CountedRule`), not refused one by one."""
        low, low_in, high, high_in = bounds
        if high is not None and high == 0 and not high_in:
            raise InputError(f"{where}: fewer than 0 {metric} cannot be met")
        if unit == "percent" and any(b is not None and b > 100 for b in (low, high)):
            raise InputError(f"{where}: a percentage above 100")
        valid: dict[str, Any] = {}
        if metric == "duplicateValues":
            if args:
                raise InputError(f"{where}: duplicateValues takes no arguments here")
        else:
            valid = self._narrowing(args, where=where)
            if not valid:
                raise InputError(
                    f"{where}: invalidValues needs validValues or pattern to count by",
                    hint="invalidValues takes validValues (a list) or pattern",
                )
        self.counted.append(
            CountedRule(
                metric=metric,
                path=path,
                unit=unit,
                low=str(low) if low is not None else None,
                low_inclusive=low_in,
                high=str(high) if high is not None else None,
                high_inclusive=high_in,
                valid=valid,
            )
        )

    def _invalid(self, args: Mapping[str, Any], *, path: str, where: str) -> None:
        """invalidValues: ``validValues`` (a list) or ``pattern`` narrow the property."""
        extra = self._narrowing(args, where=where)
        self.invalid[path] = {**self.invalid.get(path, {}), **extra}

    @staticmethod
    def _narrowing(args: Mapping[str, Any], *, where: str) -> dict[str, Any]:
        """The JSON Schema ``enum`` (with null) and ``pattern`` of invalidValues' arguments."""
        unknown = set(args) - {"validValues", "pattern"}
        if unknown:
            raise InputError(
                f"{where}: invalidValues argument(s) {', '.join(sorted(unknown))[:80]} cannot "
                "be checked",
                hint="invalidValues takes validValues (a list) or pattern",
            )
        extra: dict[str, Any] = {}
        if "validValues" in args:
            values = args["validValues"]
            if not isinstance(values, list) or not all(
                v is None or isinstance(v, str | int | bool) for v in values
            ):
                raise InputError(f"{where}: validValues must be a list of strings or integers")
            extra["enum"] = [*values, None]
        if "pattern" in args:
            try:
                re.compile(str(args["pattern"]))
            except re.error as exc:
                raise InputError(f"{where}: pattern is not a regular expression: {exc}") from None
            extra["pattern"] = str(args["pattern"])
        return extra


def _enum(values: Sequence[Any], *, where: str) -> list[Any]:
    """The values of a property's ``enum`` (v3.2.0: ``[{"value": ...}, ...]``, the official
    schema checked their form), as the manifest's canonical JSON can hold them."""
    out: list[Any] = []
    for item in values:
        value = item["value"]
        if isinstance(value, float) and (not math.isfinite(value) or abs(value) > _LARGEST):
            raise InputError(
                f"{where}: enum value {value} is not a finite number within ±(2^53 - 1)"
            )
        if isinstance(value, int) and not isinstance(value, bool) and abs(value) > _LARGEST:
            raise InputError(f"{where}: enum value {value} is beyond ±(2^53 - 1)")
        out.append(value)
    return out


def _ordered(schema: Mapping[str, Any], low: str, high: str, *, where: str) -> None:
    """Refuse ``low`` above ``high``: no value would meet the contract the document reads as
    a limit, so every record would fail."""
    if low in schema and high in schema and schema[low] > schema[high]:
        raise InputError(
            f"{where}: {low} {schema[low]} is above {high} {schema[high]}: no value meets it",
            hint=f"{low} is the smaller bound",
        )


def _satisfiable(schema: Mapping[str, Any], *, where: str) -> None:
    """Refuse bounds of one property's schema that no value meets: a length, item or
    member count range upside down, or numeric bounds (with those of an integer ``format``)
    that leave no number."""
    for low, high in (
        ("minLength", "maxLength"),
        ("minItems", "maxItems"),
        ("minProperties", "maxProperties"),
    ):
        _ordered(schema, low, high, where=where)
    lows = [
        (schema[k], k == "exclusiveMinimum") for k in ("minimum", "exclusiveMinimum") if k in schema
    ]
    highs = [
        (schema[k], k == "exclusiveMaximum") for k in ("maximum", "exclusiveMaximum") if k in schema
    ]
    for low, low_open in lows:
        for high, high_open in highs:
            if low > high or (low == high and (low_open or high_open)):
                raise InputError(
                    f"{where}: the bounds {low} and {high} (with its format's range) leave no "
                    "number",
                    hint="minimum (exclusiveMinimum) is the smaller bound; an integer format "
                    "narrows the range to its own",
                )


def _whole(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _LARGEST:
        raise InputError(f"{what} must be a whole number >= 0 (at most 2^53 - 1)")
    return value


def _line(text: str, limit: int) -> str:
    """``text`` as one printable line of at most ``limit`` characters (it may quote the
    document's own text)."""
    return " ".join("".join(ch if ch.isprintable() else " " for ch in text).split())[:limit]
