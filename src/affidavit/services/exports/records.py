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
  bytes of the canonical value)`` in hex (:func:`affidavit.crypto.pseudonyms.pseudonym`).

``null`` stays ``null`` under every transform. A value a transform cannot take (a number to
mask, a string to generalise) is a violation of the record, named with its key.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any, Final

import jsonschema
import rfc8785
from jsonschema.exceptions import SchemaError

from affidavit.crypto.digest import sha256
from affidavit.crypto.pseudonyms import pseudonym
from affidavit.errors import FormatError, InputError
from affidavit.formats.extjson_documents import relaxed_document
from affidavit.models.export import Contract, ExportSpec, FieldRule, Transform

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


class Minimiser:
    """Applies a spec's allow-list and transforms to canonical Extended JSON documents, with
    the recipient's pseudonymisation key (``context``: the recipient's name)."""

    def __init__(self, spec: ExportSpec, *, key: bytes | None, context: str) -> None:
        self._rules = spec.fields
        self._by_name = {r.name: r for r in spec.fields}
        self._key = key
        self._context = context
        self.seen: set[str] = set()  # allowed fields met in at least one record
        if key is None and any(r.transform is Transform.PSEUDONYMISE for r in spec.fields):
            raise InputError("pseudonymisation needs the recipient's key")

    def apply(self, document: Mapping[str, Any]) -> tuple[dict[str, Any], int, list[str]]:
        """The minimised document (allowed fields in the document's order, transformed), how
        many fields were dropped, and what each transform that refused its value said (such
        a field is left out of the document)."""
        out: dict[str, Any] = {}
        dropped = 0
        refusals: list[str] = []
        for name, value in document.items():
            rule = self._by_name.get(name)
            if rule is None:
                dropped += 1
                continue
            self.seen.add(name)
            try:
                out[name] = self._transform(rule, value)
            except TransformRefused as exc:
                refusals.append(str(exc))
        return out, dropped, refusals

    def _transform(self, rule: FieldRule, value: Any) -> Any:
        if value is None or rule.transform is Transform.KEEP:
            return value
        if rule.transform is Transform.REDACT:
            return None
        if rule.transform is Transform.MASK:
            if not isinstance(value, str):
                raise TransformRefused(f"{rule.name}: mask takes a string")
            shown = value[-rule.keep :] if 0 < rule.keep < len(value) else ""
            return "*" * (len(value) - len(shown)) + shown
        if rule.transform is Transform.GENERALISE:
            return self._generalise(rule, value)
        assert self._key is not None  # checked in __init__
        try:
            canonical = rfc8785.dumps(value)
        except (rfc8785.CanonicalizationError, ValueError, TypeError) as exc:
            raise TransformRefused(f"{rule.name}: cannot pseudonymise: {exc}") from exc
        return pseudonym(self._key, self._context, rule.name, canonical)

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


@dataclass
class ContractCheck:
    """Checks each output record against the contract and, at the end, the output as a
    whole; collects every violation (the first :data:`MAX_LISTED_VIOLATIONS` named)."""

    contract: Contract
    allowed: frozenset[str]
    violations: list[Violation] = field(default_factory=list)
    failed_records: int = 0
    count: int = 0
    violation_count: int = 0
    whole_failures: int = 0  # violations of the output as a whole (never tolerated)
    _nulls: dict[str, int] = field(default_factory=dict)
    _seen: dict[str, set[bytes]] = field(default_factory=dict)
    _validator: Any = None

    def __post_init__(self) -> None:
        check_schema(self.contract)
        cls = jsonschema.validators.validator_for(dict(self.contract.schema))
        self._validator = cls(dict(self.contract.schema))
        self._seen = {name: set() for name in self.contract.unique}

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
        self.count += 1
        key = key_text(document)
        problems = [Violation(key, "transform", message) for message in refusals]
        stray = sorted(set(document) - self.allowed)
        if stray:
            problems.append(
                Violation(key, "allow-list", f"field(s) outside the allow-list: {stray}")
            )
        try:
            relaxed = relaxed_document(document)
        except FormatError as exc:
            problems.append(Violation(key, "encoding", exc.message))
            relaxed = None
        if relaxed is not None:
            for error in sorted(
                self._validator.iter_errors(relaxed), key=lambda e: list(e.absolute_path)
            ):
                where = "/".join(str(p) for p in error.absolute_path) or "(record)"
                problems.append(Violation(key, "schema", f"{where}: {error.message}"))
        digests = {
            name: sha256(rfc8785.dumps(document[name])) for name in self._seen if name in document
        }
        for name, digest in digests.items():
            if digest in self._seen[name]:
                problems.append(Violation(key, "unique", f"{name}: duplicate value"))
        for problem in problems:
            self._add(problem)
        if problems:  # not shipped: its values count for neither uniqueness nor nulls
            self.failed_records += 1
            return False
        for name, digest in digests.items():
            self._seen[name].add(digest)
        for name in self.contract.max_nulls:
            if document.get(name) is None:
                self._nulls[name] = self._nulls.get(name, 0) + 1
        return True

    def finish(self, *, shipped: int) -> None:
        """The checks of the output as a whole (``shipped``: its record count; nulls per
        field)."""
        c = self.contract
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
        }


def encode_line(document: Mapping[str, Any]) -> bytes:
    """One output line: the canonical Extended JSON object, compact, UTF-8, then ``\\n``."""
    return (
        json.dumps(dict(document), separators=(",", ":"), ensure_ascii=False, allow_nan=False)
        + "\n"
    ).encode("utf-8")


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
