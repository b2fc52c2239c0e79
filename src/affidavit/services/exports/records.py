"""What happens to each record of an export, the same at the source and at the destination:
minimisation by allow-list and the per-field transforms (:class:`Minimiser`), the contract
check (:class:`ContractCheck`), and the encoding of an output line (:func:`encode_line`,
:func:`decode_line`).

Values are canonical MongoDB Extended JSON v2 (:mod:`affidavit.formats.extjson_documents`).
Transforms (``docs/exports.md`` is normative):

- ``keep``: the value as it is;
- ``redact``: the field stays with value ``null``;
- ``mask``: a string keeps its last ``keep`` characters, every other character becomes ``*``
  (all of them when it is no longer than ``keep``);
- ``generalise``: a date becomes its UTC year (``{"$numberInt": "1990"}``); a number, with
  ``width`` w, becomes the string ``"lo..hi"`` of the half-open range ``[lo, lo + w)`` that
  holds it, ``lo`` a multiple of w;
- ``pseudonymise``: the string ``HMAC-SHA-256(recipient key, recipient || field || RFC 8785
  bytes of the canonical value)`` in hex (:func:`affidavit.crypto.pseudonyms.pseudonym`), or
  with ``algorithm = "aes-siv"`` the AES-SIV encryption of those bytes under a key derived
  from the recipient key, with the recipient and the field as associated data, in hex
  (:class:`affidavit.crypto.pseudonym_siv.SivPseudonyms`: deterministic, reversible by the
  key's holder).

``null`` stays ``null`` under every transform. A value a transform cannot take (a number to
mask, a string to generalise) is a violation of the record, named with its key.
"""

from __future__ import annotations

import functools
import json
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any, Final

import jsonschema
import rfc8785
from jsonschema.exceptions import SchemaError

from affidavit.crypto.digest import sha256
from affidavit.crypto.pseudonym_hmac import field_pseudonymiser
from affidavit.crypto.pseudonym_siv import SivPseudonyms
from affidavit.errors import FormatError, InputError
from affidavit.formats.bson_codec.extjson_fast import canonical_value, relaxed_value
from affidavit.models.export import (
    Contract,
    ExportSpec,
    FieldRule,
    PseudonymAlgorithm,
    Transform,
)
from affidavit.services.exports.unique import DigestSet

MAX_LISTED_VIOLATIONS: Final = 100
"""Violations named one by one in events and manifests (all are counted)."""
_NUMBER_KEYS: Final = ("$numberInt", "$numberLong", "$numberDouble", "$numberDecimal")


class TransformRefused(ValueError):
    """A value the field's transform cannot take."""


@dataclass(frozen=True, slots=True)
class Violation:
    """One way the output breaks its contract: the record's key (None for the output as a
    whole), the rule and what is wrong."""

    key: str | None
    rule: str
    message: str

    def to_json(self) -> dict[str, Any]:
        """JSON-ready."""
        return {"key": self.key, "rule": self.rule, "message": self.message}


def key_text(document: Mapping[str, Any]) -> str:
    """A record's key as people read it: the JSON of its ``_id``."""
    return json.dumps(document.get("_id"), separators=(",", ":"), ensure_ascii=False)


def _number(value: Any) -> Decimal | None:
    if isinstance(value, Mapping) and len(value) == 1:
        ((tag, text),) = value.items()
        if tag in _NUMBER_KEYS and isinstance(text, str):
            try:
                number = Decimal(text)
            except InvalidOperation:
                return None
            return number if number.is_finite() else None
    return None


def _year(value: Any) -> int | None:
    if isinstance(value, Mapping) and set(value) == {"$date"}:
        inner = value["$date"]
        if isinstance(inner, Mapping) and set(inner) == {"$numberLong"}:
            try:
                millis = int(str(inner["$numberLong"]))
                return datetime.fromtimestamp(millis / 1000, tz=UTC).year
            except (ValueError, OverflowError, OSError):
                return None
    return None


_MISSING: Final = object()
"""No value (a path that leads nowhere, a document with no allowed leaf)."""
MISSING: Final = _MISSING
"""The same, for other modules (:func:`value_at`'s answer for a path that leads nowhere)."""
PathTree = dict[str, "PathTree | str"]
"""Allowed paths as a tree: a field name to its subtree, or to the full path of an allowed
leaf."""


def path_tree(names: Iterable[str]) -> PathTree:
    """The tree of allowed paths (``a.b`` and ``a.c`` -> ``{"a": {"b": "a.b", "c": "a.c"}}``)."""
    tree: PathTree = {}
    for name in names:
        node = tree
        parts = name.split(".")
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            assert isinstance(child, dict)  # the spec refuses a path inside a listed one
            node = child
        node[parts[-1]] = name
    return tree


def _is_document(value: Any, convert: Step | None) -> bool:
    """A nested document: a decoded one (``convert`` given), or a canonical Extended JSON
    object that is not a type wrapper (``$numberInt``, ``$date``...)."""
    if type(value) is not dict:
        return False
    return convert is not None or not any(k.startswith("$") for k in value)


def value_at(document: Mapping[str, Any], path: str) -> Any:
    """The value at a dotted ``path`` through nested documents (not through arrays), or
    ``_MISSING``."""
    value: Any = document
    for part in path.split("."):
        if type(value) is not dict or part not in value:
            return _MISSING
        value = value[part]
    return value


def stray_paths(document: Mapping[str, Any], tree: PathTree, prefix: str = "") -> list[str]:
    """The paths of ``document`` outside the allowed ``tree`` (arrays of documents looked
    into element by element)."""
    out: list[str] = []
    for key, value in document.items():
        here = f"{prefix}{key}"
        node = tree.get(key)
        if node is None:
            out.append(here)
        elif type(node) is dict:
            items = value if type(value) is list else [value]
            for item in items:
                if _is_document(item, None):
                    out.extend(stray_paths(item, node, here + "."))
                else:
                    out.append(here)
    return sorted(set(out))


Step = Callable[[Any], Any]
"""One field's transform, planned once per spec: canonical value in, output value out (raises
:class:`TransformRefused`)."""


def _canonical_text(value: Any) -> bytes:
    """RFC 8785 bytes of a canonical value (a plain ASCII string without quotes or
    backslashes directly: the same bytes, without the general serialiser)."""
    if (
        type(value) is str
        and value.isascii()
        and value.isprintable()
        and '"' not in value
        and "\\" not in value
    ):
        return b'"' + value.encode("ascii") + b'"'
    return rfc8785.dumps(value)


class Minimiser:
    """Applies a spec's allow-list and transforms to canonical Extended JSON documents, with
    the recipient's pseudonymisation key (``context``: the recipient's name). The transforms
    are planned once (one closure per field); :meth:`apply_decoded` takes a decoded BSON
    document and converts only the allowed fields to Extended JSON."""

    def __init__(self, spec: ExportSpec, *, key: bytes | None, context: str) -> None:
        self._rules = spec.fields
        self._key = key
        self._context = context
        self.seen: set[str] = set()  # allowed fields met in at least one record
        if key is None and any(r.transform is Transform.PSEUDONYMISE for r in spec.fields):
            raise InputError("pseudonymisation needs the recipient's key")
        self._siv: SivPseudonyms | None = None
        self._steps: dict[str, Step | None] = {r.name: self._plan(r) for r in spec.fields}
        self._tree = path_tree(r.name for r in spec.fields)
        self._nested = any("." in r.name for r in spec.fields)

    def apply(self, document: Mapping[str, Any]) -> tuple[dict[str, Any], int, list[str]]:
        """The minimised document (allowed fields in the document's order, transformed), how
        many fields were dropped, and what each transform that refused its value said (such
        a field is left out of the document)."""
        return self._apply(document, None)

    def apply_decoded(self, document: Mapping[str, Any]) -> tuple[dict[str, Any], int, list[str]]:
        """:meth:`apply` of the canonical form of a decoded BSON document (only the allowed
        fields are converted)."""
        return self._apply(document, canonical_value)

    def _apply(
        self, document: Mapping[str, Any], convert: Step | None
    ) -> tuple[dict[str, Any], int, list[str]]:
        if self._nested:
            refused: list[str] = []
            kept, lost = self._prune(document, self._tree, convert, refused)
            return (kept if type(kept) is dict else {}), lost, refused
        out: dict[str, Any] = {}
        dropped = 0
        refusals: list[str] = []
        steps = self._steps
        for name, value in document.items():
            if name not in steps:
                dropped += 1
                continue
            self.seen.add(name)
            given = value if convert is None else convert(value)
            step = steps[name]
            if step is None or given is None:
                out[name] = given
                continue
            try:
                out[name] = step(given)
            except TransformRefused as exc:
                refusals.append(str(exc))
        return out, dropped, refusals

    def _prune(
        self, value: Any, node: PathTree, convert: Step | None, refusals: list[str]
    ) -> tuple[Any, int]:
        """``value`` with only the allowed leaves under ``node`` (their transforms applied)
        and the documents holding them, and how many fields or elements were left behind;
        ``_MISSING`` when nothing allowed is in it (docs/exports.md, "Nested fields")."""
        if _is_document(value, convert):
            out: dict[str, Any] = {}
            dropped = 0
            for key, item in value.items():
                child = node.get(key)
                if child is None:
                    dropped += 1
                elif type(child) is str:
                    self.seen.add(child)
                    given = item if convert is None else convert(item)
                    step = self._steps[child]
                    if step is None or given is None:
                        out[key] = given
                        continue
                    try:
                        out[key] = step(given)
                    except TransformRefused as exc:
                        refusals.append(str(exc))
                else:
                    assert isinstance(child, dict)
                    kept, lost = self._prune(item, child, convert, refusals)
                    dropped += lost
                    if kept is not _MISSING:
                        out[key] = kept
            return (out if out else _MISSING), dropped
        if type(value) is list:
            elements: list[Any] = []
            dropped = 0
            for item in value:
                kept, lost = self._prune(item, node, convert, refusals)
                dropped += lost
                if kept is not _MISSING:
                    elements.append(kept)
            return (elements if elements else _MISSING), dropped
        return _MISSING, 1

    def _plan(self, rule: FieldRule) -> Step | None:
        """The field's transform as one closure (None: the value as it is)."""
        name = rule.name
        if rule.transform is Transform.KEEP:
            return None
        if rule.transform is Transform.REDACT:
            return lambda value: None
        if rule.transform is Transform.MASK:
            keep = rule.keep

            def mask(value: Any) -> Any:
                if not isinstance(value, str):
                    raise TransformRefused(f"{name}: mask takes a string")
                shown = value[-keep:] if 0 < keep < len(value) else ""
                return "*" * (len(value) - len(shown)) + shown

            return mask
        if rule.transform is Transform.GENERALISE:
            return lambda value: self._generalise(rule, value)
        key, context = self._key, self._context
        assert key is not None  # checked in __init__
        token: Callable[[bytes], str]
        if rule.algorithm is PseudonymAlgorithm.AES_SIV:
            if self._siv is None:
                self._siv = SivPseudonyms(key)
            token = functools.partial(self._siv.token, context, name)
        else:
            token = field_pseudonymiser(key, context, name)  # pseudonym(), keyed once

        def pseudonymise(value: Any) -> Any:
            try:
                canonical = _canonical_text(value)
            except (rfc8785.CanonicalizationError, ValueError, TypeError) as exc:
                raise TransformRefused(f"{name}: cannot pseudonymise: {exc}") from exc
            return token(canonical)

        return pseudonymise

    @staticmethod
    def _generalise(rule: FieldRule, value: Any) -> Any:
        year = _year(value)
        if year is not None:
            return {"$numberInt": str(year)}
        number = _number(value)
        if number is None:
            raise TransformRefused(f"{rule.name}: generalise takes a date or a number")
        if rule.width is None:
            raise TransformRefused(f"{rule.name}: a number needs width to be generalised")
        low = math.floor(number / rule.width) * rule.width
        return f"{low}..{low + rule.width}"


def check_schema(contract: Contract) -> None:
    """Raise :class:`InputError` when the contract's JSON Schema is not a valid schema."""
    try:
        cls = jsonschema.validators.validator_for(dict(contract.schema))
        cls.check_schema(dict(contract.schema))
    except SchemaError as exc:
        raise InputError(
            f"the contract's JSON Schema is not valid: {exc.message}",
            hint="check contract.schema against the JSON Schema specification",
        ) from None


_ANNOTATIONS: Final = frozenset(
    {"title", "description", "$comment", "examples", "default", "$schema", "format"}
)
_TYPES: Final[dict[str, Callable[[Any], bool]]] = {
    "string": lambda v: type(v) is str,
    "integer": lambda v: type(v) is int,  # a float equal to an integer: the general path
    "number": lambda v: type(v) is int or type(v) is float,
    "boolean": lambda v: type(v) is bool,
    "null": lambda v: v is None,
    "object": lambda v: type(v) is dict,
    "array": lambda v: type(v) is list,
}
_BOUNDS: Final[dict[str, Callable[[Any, Any], bool]]] = {
    "minimum": lambda v, b: v >= b,
    "maximum": lambda v, b: v <= b,
    "exclusiveMinimum": lambda v, b: v > b,
    "exclusiveMaximum": lambda v, b: v < b,
}
Check = Callable[[Any], bool]


def _is_number(value: Any) -> bool:
    return type(value) is int or type(value) is float


def _keyword(kw: str, arg: Any, schema: Mapping[str, Any]) -> Check | None:
    """One keyword of the checkable subset as a check, or None (not in the subset)."""
    if kw == "type":
        names = [arg] if isinstance(arg, str) else arg
        if not isinstance(names, list) or not all(n in _TYPES for n in names):
            return None
        tests = [_TYPES[n] for n in names]
        return tests[0] if len(tests) == 1 else lambda v: any(t(v) for t in tests)
    if kw in ("enum", "const"):
        options = list(arg) if kw == "enum" and isinstance(arg, list) else [arg]
        if not all(o is None or type(o) in (str, int, bool) for o in options):
            return None
        kinds = {(type(o), o) for o in options}
        return lambda v: (v is None or type(v) in (str, int, bool)) and (type(v), v) in kinds
    if kw == "required":
        if not isinstance(arg, list) or not all(isinstance(n, str) for n in arg):
            return None
        names_required = frozenset(arg)
        return lambda v: type(v) is not dict or names_required.issubset(v)
    if kw == "properties":
        if not isinstance(arg, Mapping):
            return None
        subs = {}
        for name, sub in arg.items():
            compiled = compile_schema(sub)
            if compiled is None:
                return None
            subs[name] = compiled
        pairs = tuple(subs.items())

        def properties(v: Any) -> bool:
            if type(v) is dict:
                for n, c in pairs:
                    if n in v and not c(v[n]):
                        return False
            return True

        return properties
    if kw == "additionalProperties":
        if arg is not False or "patternProperties" in schema:
            return None
        known = frozenset(schema.get("properties", {}))
        return lambda v: type(v) is not dict or known.issuperset(v)
    if kw in _BOUNDS:
        if not _is_number(arg):
            return None
        test, bound = _BOUNDS[kw], arg
        return lambda v: not _is_number(v) or test(v, bound)
    if kw in ("minLength", "maxLength"):
        if type(arg) is not int:
            return None
        size = arg
        if kw == "minLength":
            return lambda v: type(v) is not str or len(v) >= size
        return lambda v: type(v) is not str or len(v) <= size
    if kw == "pattern":
        if not isinstance(arg, str):
            return None
        try:
            rx = re.compile(arg)
        except re.error:
            return None
        return lambda v: type(v) is not str or rx.search(v) is not None
    return None


def compile_schema(schema: Any) -> Check | None:
    """A fast check of the JSON Schema's checkable subset (``type``, ``enum``, ``const``,
    ``required``, ``properties``, ``additionalProperties: false``, numeric bounds, string
    lengths, ``pattern``; annotations ignored), or None when the schema uses anything else.
    It is one-sided: True means jsonschema finds no error; False means "ask jsonschema",
    which decides (so the outcome is always jsonschema's)."""
    if schema is True:
        return lambda v: True
    if not isinstance(schema, Mapping):
        return None
    checks: list[Check] = []
    for kw, arg in schema.items():
        if kw in _ANNOTATIONS:
            continue
        check = _keyword(kw, arg, schema)
        if check is None:
            return None
        checks.append(check)
    if len(checks) == 1:
        return checks[0]
    every = tuple(checks)

    def all_of(v: Any) -> bool:
        for c in every:  # noqa: SIM110 - a loop: no generator per record
            if not c(v):
                return False
        return True

    return all_of


_SORTED: Final = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, sort_keys=True)


def _unique_bytes(value: Any) -> bytes:
    """An injective encoding of a value, for the uniqueness rule (equal values, equal bytes,
    as their RFC 8785 forms are)."""
    if type(value) is str:
        return b"s" + value.encode("utf-8", "surrogatepass")
    if type(value) is dict and all(type(v) is str for v in value.values()):
        return b"d" + _SORTED.encode(value).encode("utf-8", "surrogatepass")
    return b"j" + rfc8785.dumps(value)


@dataclass
class ContractCheck:
    """Checks each output record against the contract and, at the end, the output as a
    whole; collects every violation (the first :data:`MAX_LISTED_VIOLATIONS` named). The
    JSON Schema is compiled once: its checkable subset as a fast check
    (:func:`compile_schema`), jsonschema's validator for every record the fast check does not
    pass."""

    contract: Contract
    allowed: frozenset[str]
    violations: list[Violation] = field(default_factory=list)
    failed_records: int = 0
    count: int = 0
    violation_count: int = 0
    whole_failures: int = 0  # violations of the output as a whole (never tolerated)
    _nulls: dict[str, int] = field(default_factory=dict)
    _seen: dict[str, DigestSet] = field(default_factory=dict)  # bounded memory (unique.py)
    _validator: Any = None
    _fast: Check | None = None
    _tree: PathTree | None = None  # the allow-list as a tree, when it has nested paths
    # counted rules (ODCS duplicate/invalid limits above zero), by key "\0<index>": the
    # duplicates' digests; the invalid values' checks (their counts go with the nulls')
    _dups: dict[str, DigestSet] = field(default_factory=dict)
    _dup_counts: dict[str, int] = field(default_factory=dict)
    _invalid: list[tuple[str, str, Any, Check | None]] = field(default_factory=list)
    _counted: list[dict[str, Any]] = field(default_factory=list)  # results, after finish

    def __post_init__(self) -> None:
        if any("." in name for name in self.allowed):
            self._tree = path_tree(self.allowed)
        check_schema(self.contract)
        cls = jsonschema.validators.validator_for(dict(self.contract.schema))
        self._validator = cls(dict(self.contract.schema))
        self._fast = compile_schema(dict(self.contract.schema))
        self._seen = {name: DigestSet() for name in self.contract.unique}
        for index, rule in enumerate(self.contract.counted):
            key = f"\0{index}"
            if rule.metric == "duplicateValues":
                self._dups[key] = DigestSet()
                self._dup_counts[key] = 0
            else:
                valid = dict(rule.valid)
                validator = jsonschema.Draft202012Validator(valid)
                self._invalid.append((key, rule.path, validator, compile_schema(valid)))

    @property
    def digest_names(self) -> list[str]:
        """The names :meth:`inspect`'s digests may hold: the ``unique`` fields, then the keys
        of the counted duplicate rules."""
        return [*self._seen, *self._dups]

    def _add(self, violation: Violation) -> None:
        self.violation_count += 1
        if violation.key is None:  # few, and always named
            self.whole_failures += 1
            self.violations.append(violation)
        elif len(self.violations) < MAX_LISTED_VIOLATIONS:
            self.violations.append(violation)

    def check(self, document: Mapping[str, Any], refusals: Sequence[str] = ()) -> bool:
        """Check one output record (canonical Extended JSON) and count what its transforms
        refused; whether it passed (a record that did not is not shipped)."""
        problems, digests = self.inspect(document, refusals)
        if not self.settle(problems, digests, lambda: key_text(document)):
            return False
        self.count_nulls(self.null_fields(document))
        return True

    def inspect(
        self, document: Mapping[str, Any], refusals: Sequence[str] = ()
    ) -> tuple[list[tuple[str, str]], dict[str, bytes]]:
        """The per-record half of :meth:`check`, which needs no state of the pass (a worker
        process runs it): the record's problems as ``(rule, message)`` and the digests of its
        ``unique`` fields."""
        problems = [("transform", message) for message in refusals]
        if self._tree is not None:
            stray = stray_paths(document, self._tree)
            if stray:
                problems.append(("allow-list", f"field(s) outside the allow-list: {stray}"))
        elif not self.allowed.issuperset(document):
            stray = sorted(set(document) - self.allowed)
            problems.append(("allow-list", f"field(s) outside the allow-list: {stray}"))
        try:
            relaxed: dict[str, Any] | None = relaxed_value(dict(document))
        except FormatError as exc:
            problems.append(("encoding", exc.message))
            relaxed = None
        if relaxed is not None and not (self._fast is not None and self._fast(relaxed)):
            for error in sorted(
                self._validator.iter_errors(relaxed), key=lambda e: list(e.absolute_path)
            ):
                where = "/".join(str(p) for p in error.absolute_path) or "(record)"
                problems.append(("schema", f"{where}: {error.message}"))
        digests = {}
        for name in self._seen:
            value = value_at(document, name) if "." in name else document.get(name, _MISSING)
            if value is not _MISSING:
                digests[name] = sha256(_unique_bytes(value))
        if self._dups:
            for index, rule in enumerate(self.contract.counted):
                key = f"\0{index}"
                if key in self._dups:
                    value = value_at(document, rule.path)
                    if value is not _MISSING and value is not None:
                        digests[key] = sha256(_unique_bytes(value))
        return problems, digests

    def null_fields(self, document: Mapping[str, Any]) -> tuple[str, ...]:
        """The ``max_nulls`` fields that are null or missing in ``document``."""
        out = []
        for name in self.contract.max_nulls.keys() | self.contract.max_null_percent.keys():
            value = value_at(document, name) if "." in name else document.get(name)
            if value is None or value is _MISSING:
                out.append(name)
        for key, path, validator, fast in self._invalid:  # counted like nulls, when shipped
            value = value_at(document, path)
            if value is _MISSING or value is None:
                continue
            try:
                relaxed = relaxed_value({"v": value})["v"]
            except FormatError:
                out.append(key)
                continue
            if not (fast is not None and fast(relaxed)) and not validator.is_valid(relaxed):
                out.append(key)
        return tuple(out)

    def settle(
        self,
        problems: list[tuple[str, str]],
        digests: Mapping[str, bytes],
        key: str | Callable[[], str],
    ) -> bool:
        """The half of :meth:`check` that needs the pass's state, for the records in their
        input order: the ``unique`` rule against the digests of the records before, then the
        record counted and its violations collected (``key``: the record's key text, or a
        function giving it, asked for when it failed); whether it passed (then its digests
        are remembered)."""
        self.count += 1
        for name, digest in digests.items():
            seen = self._seen.get(name)
            if seen is not None and digest in seen:
                problems.append(("unique", f"{name}: duplicate value"))
        if problems:  # not shipped: its values count for neither uniqueness nor nulls
            text = key if isinstance(key, str) else key()
            for rule, message in problems:
                self._add(Violation(text, rule, message))
            self.failed_records += 1
            return False
        for name, digest in digests.items():
            seen = self._seen.get(name)
            if seen is not None:
                seen.add(digest)
                continue
            dups = self._dups[name]  # a counted duplicate rule: counted, not refused
            if digest in dups:
                self._dup_counts[name] += 1
            else:
                dups.add(digest)
        return True

    def count_nulls(self, names: Iterable[str]) -> None:
        """Count a shipped record's null or missing ``max_nulls`` fields
        (:meth:`null_fields`)."""
        for name in names:
            self._nulls[name] = self._nulls.get(name, 0) + 1

    def finish(self, *, shipped: int) -> None:
        """The checks of the output as a whole (``shipped``: its record count; nulls per
        field); the uniqueness digests are forgotten (their spill files removed)."""
        for seen in [*self._seen.values(), *self._dups.values()]:
            seen.close()
        c = self.contract
        self._counted = []
        for index, rule in enumerate(c.counted):
            key = f"\0{index}"
            count = self._dup_counts.get(key, self._nulls.get(key, 0))
            within = rule.within(count, shipped)
            self._counted.append(
                {
                    "rule": rule.name,
                    "metric": rule.metric,
                    "field": rule.path,
                    "limit": rule.limit_text(),
                    "count": count,
                    "records": shipped,
                    "passed": within,
                }
            )
            if not within:
                what = "a duplicate" if rule.metric == "duplicateValues" else "an invalid"
                self._add(
                    Violation(
                        None,
                        rule.metric,
                        f"{rule.path}: {count} record(s) with {what} value of {shipped}, "
                        f"{rule.limit_text()}",
                    )
                )
        if shipped < c.min_records:
            self._add(
                Violation(None, "min_records", f"{shipped} record(s), at least {c.min_records}")
            )
        if c.max_records is not None and shipped > c.max_records:
            self._add(
                Violation(None, "max_records", f"{shipped} record(s), at most {c.max_records}")
            )
        for name, limit in sorted(c.max_nulls.items()):
            nulls = self._nulls.get(name, 0)
            if nulls > limit:
                self._add(
                    Violation(
                        None, "max_nulls", f"{name}: {nulls} null or missing, at most {limit}"
                    )
                )
        for name, (percent, inclusive) in sorted(c.max_null_percent.items()):
            nulls = self._nulls.get(name, 0)  # nulls / shipped against percent / 100, exactly
            share, bound = Decimal(nulls) * 100, Decimal(percent) * shipped
            if share > bound or (not inclusive and share == bound and nulls):
                self._add(
                    Violation(
                        None,
                        "max_nulls",
                        f"{name}: {nulls} null or missing of {shipped}, "
                        f"{'at most' if inclusive else 'under'} {percent}%",
                    )
                )

    @property
    def passed(self) -> bool:
        """Whether the output may ship: no whole-output violation and at most
        ``max_violations`` failing records."""
        return self.whole_failures == 0 and self.failed_records <= self.contract.max_violations

    def to_json(self) -> dict[str, Any]:
        """JSON-ready (the manifest predicate's ``contract.result``)."""
        return {
            "passed": self.passed,
            "records_checked": self.count,
            "failed_records": self.failed_records,
            "violations": self.violation_count,
            "listed": [v.to_json() for v in self.violations],
            **({"counted": list(self._counted)} if self.contract.counted else {}),
        }

    @property
    def counted(self) -> list[dict[str, Any]]:
        """The counted rules' results (after :meth:`finish`): rule, limit, count, passed."""
        return list(self._counted)


_LINE: Final = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def encode_line(document: Mapping[str, Any]) -> bytes:
    """One output line: the canonical Extended JSON object, compact, UTF-8, then ``\\n``."""
    return (_LINE.encode(dict(document)) + "\n").encode("utf-8")


def decode_line(line: bytes, number: int) -> dict[str, Any]:
    """Parse one output line (``number`` from 1, for messages); raises :class:`FormatError`
    for invalid UTF-8, a line that is not the JSON object :func:`encode_line` writes."""
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError:
        raise FormatError(f"line {number} is not valid UTF-8") from None
    try:
        value = json.loads(text, parse_constant=_no_constant)
    except ValueError as exc:
        raise FormatError(f"line {number} is not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise FormatError(f"line {number} is not a JSON object")
    if encode_line(value) != line:
        raise FormatError(f"line {number} is not in the canonical encoding of the output")
    return value


def _no_constant(name: str) -> Any:
    raise ValueError(f"bare {name} is not JSON")
