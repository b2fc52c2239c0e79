"""Governed exports: the spec (what may leave, how it is transformed, the contract each
record must meet, for which purpose, to whom), the recipient, and one run.

A spec is a TOML document (``docs/exports.md``); :func:`parse_spec` turns its text into an
:class:`ExportSpec` or raises :class:`~affidavit.errors.InputError` naming what is wrong.
Minimisation is by allow-list: a field not named under ``[fields]`` never leaves. Fields are
names of the dataset's documents, top-level (``email``) or dotted paths into nested documents
and arrays of documents (``address.city``, ``orders.sku``: docs/exports.md, "Nested
fields"); ``_id`` must be listed (it keys every record of the output, its fingerprint and
every violation), transformed if need be.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from types import MappingProxyType
from typing import Any, Final

import rfc8785

from affidavit.crypto.digest import sha256_hex
from affidavit.errors import InputError
from affidavit.models.export_filter import QueryFilter
from affidavit.models.key_pattern import KeyPattern
from affidavit.models.odcs import CountedRule, OdcsContract, parse_odcs

MAX_SPEC_BYTES: Final = 256 * 1024
_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,62}")
_FIELD = re.compile(r"[^$.\x00][^.\x00]{0,254}")
MAX_PATH_DEPTH: Final = 8
"""Segments of a dotted field path, at most."""
_KEY = "_id"


class Transform(StrEnum):
    """What happens to one allowed field on its way out."""

    KEEP = "keep"  # the value as it is
    REDACT = "redact"  # the field stays, its value becomes null
    MASK = "mask"  # a string: all but the last ``keep`` characters become ``*``
    GENERALISE = "generalise"  # a date -> its year; a number -> the range of ``width`` holding it
    PSEUDONYMISE = "pseudonymise"  # HMAC-SHA-256 with the recipient's key (docs/exports.md)


class PseudonymAlgorithm(StrEnum):
    """How ``pseudonymise`` makes its token (docs/exports.md)."""

    HMAC_SHA256 = "hmac-sha256"  # one-way: HMAC-SHA-256 with the recipient's key
    AES_SIV = "aes-siv"  # deterministic encryption (RFC 5297): the key holder can reverse it


class OutputFormat(StrEnum):
    """How the output file encodes its records."""

    EXTJSON = "extjson"  # JSON lines, canonical Extended JSON v2 (one document per line)
    CSV = "csv"  # RFC 4180, a header of the allowed fields, lossless cells (docs/exports.md)
    PARQUET = "parquet"  # Apache Parquet, one string column per allowed field (the CSV cells)


class LegalBasis(StrEnum):
    """GDPR Art. 6(1) legal bases."""

    CONSENT = "consent"
    CONTRACT = "contract"
    LEGAL_OBLIGATION = "legal_obligation"
    VITAL_INTERESTS = "vital_interests"
    PUBLIC_TASK = "public_task"
    LEGITIMATE_INTERESTS = "legitimate_interests"


@dataclass(frozen=True, slots=True, kw_only=True)
class FieldRule:
    """One allowed field and its transform (``keep``: characters a mask leaves; ``width``:
    the range size of a generalised number)."""

    name: str
    transform: Transform
    keep: int = 4
    width: int | None = None
    algorithm: PseudonymAlgorithm = PseudonymAlgorithm.HMAC_SHA256  # pseudonymise only

    def to_json(self) -> dict[str, Any]:
        """JSON-ready (the manifest predicate's ``fields`` entries)."""
        out: dict[str, Any] = {"name": self.name, "transform": self.transform.value}
        if self.transform is Transform.MASK:
            out["keep"] = self.keep
        if self.transform is Transform.GENERALISE and self.width is not None:
            out["width"] = self.width
        if self.algorithm is not PseudonymAlgorithm.HMAC_SHA256:
            out["algorithm"] = self.algorithm.value
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> FieldRule:
        """The rule :meth:`to_json` wrote; raises InputError, KeyError, ValueError."""
        width = data.get("width")
        return cls(
            name=str(data["name"]),
            transform=Transform(str(data["transform"])),
            keep=_int(data.get("keep", 4), "keep"),
            width=_int(width, "width") if width is not None else None,
            algorithm=PseudonymAlgorithm(str(data.get("algorithm", "hmac-sha256"))),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class Contract:
    """What every output record and the output as a whole must satisfy: a JSON Schema (on the
    relaxed Extended JSON form of each output record), row-count bounds, per-field null
    limits (a count, or ``max_null_percent``: a percentage of the records shipped, given as
    ``(decimal text, inclusive)``), fields whose values must be unique; ``max_violations``
    records may fail it before the run refuses to ship (0: none may). ``source`` says what
    it was written as: ``{"kind": "json-schema", "sha256"}`` (the RFC 8785 JSON of the
    schema) or ``{"kind": "odcs", "api_version", "id", "version", "sha256"}`` (of the ODCS
    document's text), docs/exports.md "Contracts"."""

    schema: Mapping[str, Any]
    min_records: int = 0
    max_records: int | None = None
    max_nulls: Mapping[str, int] = field(default_factory=dict)
    unique: tuple[str, ...] = ()
    max_violations: int = 0
    max_null_percent: Mapping[str, tuple[str, bool]] = field(default_factory=dict)
    source: Mapping[str, str] = field(default_factory=dict)
    counted: tuple[CountedRule, ...] = ()  # ODCS duplicate/invalid limits above zero

    @property
    def kind(self) -> str:
        """``json-schema`` or ``odcs``."""
        return self.source.get("kind", "json-schema")

    def to_json(self) -> dict[str, Any]:
        """JSON-ready (the manifest predicate's ``contract.rules``)."""
        out: dict[str, Any] = {
            "schema": dict(self.schema),
            "min_records": self.min_records,
            "max_records": self.max_records,
            "max_nulls": dict(sorted(self.max_nulls.items())),
            "unique": list(self.unique),
            "max_violations": self.max_violations,
        }
        if self.max_null_percent:
            out["max_null_percent"] = {
                name: {"percent": percent, "inclusive": inclusive}
                for name, (percent, inclusive) in sorted(self.max_null_percent.items())
            }
        if self.source:
            out["source"] = dict(self.source)
        if self.counted:
            out["counted"] = [rule.to_json() for rule in self.counted]
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Contract:
        """The contract :meth:`to_json` wrote (or a spec's ``[contract]`` table holding a
        JSON Schema; an ODCS contract is :func:`contract_from_odcs`)."""
        schema = data.get("schema", {})
        if not isinstance(schema, Mapping):
            raise InputError("contract.schema must be a table (a JSON Schema)")
        nulls = data.get("max_nulls", {})
        if not isinstance(nulls, Mapping):
            raise InputError("contract.max_nulls must be a table of field = count")
        unique = data.get("unique", [])
        if not isinstance(unique, list) or not all(isinstance(u, str) for u in unique):
            raise InputError("contract.unique must be a list of field names")
        max_records = data.get("max_records")
        source = data.get("source")
        if source is None:
            source = {"kind": "json-schema", "sha256": _schema_digest(schema)}
        if not isinstance(source, Mapping) or not all(isinstance(v, str) for v in source.values()):
            raise InputError("contract.source must be a table of strings")
        return cls(
            schema=MappingProxyType(dict(schema)),
            min_records=_int(data.get("min_records", 0), "contract.min_records"),
            max_records=(
                _int(max_records, "contract.max_records") if max_records is not None else None
            ),
            max_nulls=MappingProxyType(
                {str(k): _int(v, f"contract.max_nulls.{k}") for k, v in nulls.items()}
            ),
            unique=tuple(unique),
            max_violations=_int(data.get("max_violations", 0), "contract.max_violations"),
            max_null_percent=MappingProxyType(_percents(data.get("max_null_percent", {}))),
            source=MappingProxyType({str(k): str(v) for k, v in source.items()}),
            counted=_counted_rules(data.get("counted", [])),
        )


def _counted_rules(raw: Any) -> tuple[CountedRule, ...]:
    """``counted`` as :meth:`Contract.to_json` wrote it."""
    if not isinstance(raw, list):
        raise InputError("contract.counted must be a list of rules")
    return tuple(CountedRule.from_json(rule) for rule in raw)


def _schema_digest(schema: Mapping[str, Any]) -> str:
    """SHA-256 of the RFC 8785 JSON of a JSON Schema."""
    try:
        return sha256_hex(rfc8785.dumps(dict(schema)))
    except (rfc8785.CanonicalizationError, ValueError, TypeError) as exc:
        raise InputError(f"contract.schema cannot be written as canonical JSON: {exc}") from None


def _percents(raw: Any) -> dict[str, tuple[str, bool]]:
    """``max_null_percent`` as :meth:`Contract.to_json` wrote it."""
    if not isinstance(raw, Mapping):
        raise InputError("contract.max_null_percent must be a table")
    out: dict[str, tuple[str, bool]] = {}
    for name, limit in raw.items():
        if (
            not isinstance(limit, Mapping)
            or not isinstance(limit.get("percent"), str)
            or not isinstance(limit.get("inclusive"), bool)
        ):
            raise InputError(f"contract.max_null_percent.{name} must be {{percent, inclusive}}")
        try:
            Decimal(limit["percent"])
        except InvalidOperation:
            raise InputError(f"contract.max_null_percent.{name}: not a number") from None
        out[str(name)] = (limit["percent"], limit["inclusive"])
    return out


def contract_from_odcs(text: Any, *, max_violations: Any = 0) -> tuple[Contract, OdcsContract]:
    """The contract an ODCS document (its YAML or JSON text) translates to
    (:mod:`affidavit.models.odcs`), and the translation; raises :class:`InputError`."""
    if not isinstance(text, str) or not text.strip():
        raise InputError(
            "contract.odcs must hold the ODCS document's text",
            hint="a TOML multi-line literal string holding YAML or JSON (docs/exports.md)",
        )
    odcs = parse_odcs(text)
    contract = Contract(
        schema=MappingProxyType(odcs.schema),
        min_records=odcs.min_records,
        max_records=odcs.max_records,
        max_nulls=MappingProxyType(dict(odcs.max_nulls)),
        unique=odcs.unique,
        max_violations=_int(max_violations, "contract.max_violations"),
        max_null_percent=MappingProxyType(dict(odcs.max_null_percent)),
        counted=odcs.counted,
        source=MappingProxyType(
            {
                "kind": "odcs",
                "api_version": odcs.api_version,
                "id": odcs.id,
                "version": odcs.version,
                "sha256": odcs.sha256,
            }
        ),
    )
    return contract, odcs


@dataclass(frozen=True, slots=True, kw_only=True)
class SpecInput:
    """Where the records come from: ``dataset`` of ``source`` in the backup ``backup`` (an id,
    or ``latest``: the newest completed backup of the source holding the dataset), or, with
    ``live``, read from the registered source itself (``from = "live"``); only the records
    ``filter`` matches (a MongoDB input), or the keys ``key_pattern`` matches (a Redis input:
    one record per key, docs/exports.md "A Redis input"), when given. Which engine the source
    is, the spec does not say: ``export spec add`` checks the filter against it."""

    source: str
    dataset: str
    backup: str = "latest"
    live: bool = False
    filter: QueryFilter | None = None  # only the records it matches (models/export_filter.py)
    key_pattern: KeyPattern | None = None  # only the Redis keys it matches (models/key_pattern.py)

    def to_json(self) -> dict[str, Any]:
        """JSON-ready."""
        out: dict[str, Any] = {"source": self.source, "dataset": self.dataset}
        if self.live:
            out["from"] = "live"
        else:
            out["backup"] = self.backup
        if self.filter is not None:
            out["filter"] = self.filter.to_json()
        if self.key_pattern is not None:
            out["key_pattern"] = self.key_pattern.text
        return out


@dataclass(frozen=True, slots=True, kw_only=True)
class ConsentSource:
    """Where consent comes from (``docs/exports.md``, consent), exactly one of: a JSON-lines
    ``file``; a MongoDB collection ``dataset`` of the registered ``source`` (one consent per
    document); the Redis keys of ``source`` matching ``key_pattern`` in ``dataset`` (``db0``
    by default; one hash per consent). ``subject_field`` is the field (or dotted path through
    sub-documents) of each input record that names its data subject."""

    file: str | None = None
    source: str | None = None
    dataset: str | None = None
    key_pattern: KeyPattern | None = None
    subject_field: str = "_id"

    def to_json(self) -> dict[str, Any]:
        """JSON-ready."""
        out: dict[str, Any] = {"subject_field": self.subject_field}
        if self.file is not None:
            out["file"] = self.file
        if self.source is not None:
            out["source"] = self.source
            out["dataset"] = self.dataset
        if self.key_pattern is not None:
            out["key_pattern"] = self.key_pattern.text
        return out


@dataclass(frozen=True, slots=True, kw_only=True)
class Slo:
    """A spec's service-level objective for each run (None: no limit): the least throughput
    in records read per second, the longest duration (the run's latency, start to
    delivery) and the largest error rate (records failing the contract per record read)."""

    min_docs_per_s: float | None = None
    max_duration_s: float | None = None
    max_error_rate: float | None = None

    def to_json(self) -> dict[str, Any]:
        """JSON-ready (the limits declared)."""
        out: dict[str, Any] = {}
        for key in ("min_docs_per_s", "max_duration_s", "max_error_rate"):
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        return out

    def missed(self, *, docs_per_s: float, duration_s: float, error_rate: float) -> list[str]:
        """What a run with these figures missed (empty: it met the objective)."""
        out = []
        if self.min_docs_per_s is not None and docs_per_s < self.min_docs_per_s:
            out.append(f"throughput {docs_per_s:,.0f} docs/s < {self.min_docs_per_s:,.0f}")
        if self.max_duration_s is not None and duration_s > self.max_duration_s:
            out.append(f"duration {duration_s:,.1f} s > {self.max_duration_s:,.1f}")
        if self.max_error_rate is not None and error_rate > self.max_error_rate:
            out.append(f"error rate {error_rate:.4f} > {self.max_error_rate}")
        return out

    @classmethod
    def from_json(cls, raw: Any) -> Slo:
        """The ``[slo]`` table; raises :class:`InputError`."""
        if not isinstance(raw, Mapping):
            raise InputError("[slo] must be a table (min_docs_per_s, max_duration_s, ...)")
        keys = {"min_docs_per_s", "max_duration_s", "max_error_rate"}
        unknown = set(raw) - keys
        if unknown:
            raise InputError(f"[slo]: unknown key(s) {', '.join(sorted(unknown))}")
        values: dict[str, float] = {}
        for key in sorted(keys & set(raw)):
            value = raw[key]
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise InputError(f"slo.{key} must be a number >= 0", hint="see docs/exports.md")
            if key == "max_error_rate" and value > 1:
                raise InputError("slo.max_error_rate is a fraction between 0 and 1")
            values[key] = float(value)
        if not values:
            raise InputError("[slo] declares no objective", hint="see docs/exports.md")
        return cls(**values)


@dataclass(frozen=True, slots=True, kw_only=True)
class ExportSpec:
    """A parsed export spec (see the module docstring)."""

    name: str
    purpose: str
    legal_basis: LegalBasis
    recipient: str
    destination: str
    format: OutputFormat
    input: SpecInput
    fields: tuple[FieldRule, ...]
    contract: Contract
    consent: ConsentSource | None = None
    slo: Slo | None = None

    def field_rule(self, name: str) -> FieldRule | None:
        """The rule of field ``name`` (None: not allowed to leave)."""
        for rule in self.fields:
            if rule.name == name:
                return rule
        return None

    @property
    def allowed(self) -> frozenset[str]:
        """The allow-list."""
        return frozenset(r.name for r in self.fields)


def _int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InputError(f"{what} must be a whole number >= 0", hint="see docs/exports.md")
    return value


def _text(data: Mapping[str, Any], key: str, *, where: str = "") -> str:
    value = data.get(key)
    if not isinstance(value, str) or not value.strip():
        raise InputError(
            f"the spec needs {where}{key} (a non-empty string)", hint="see docs/exports.md"
        )
    return value.strip()


def _field_rule(name: str, raw: Any) -> FieldRule:
    parts = name.split(".")
    if len(parts) > MAX_PATH_DEPTH or not all(_FIELD.fullmatch(p) for p in parts):
        raise InputError(
            f"field {name[:80]!r} is not a field name nor a dotted path",
            hint=f"name fields (email) or paths into documents (address.city): no segment "
            f"empty or starting with $, at most {MAX_PATH_DEPTH} segments",
        )
    if len(parts) > 1 and parts[0] == _KEY:
        raise InputError(
            f"field {name[:80]!r}: _id is listed whole", hint="list _id itself, not inside it"
        )
    table: Mapping[str, Any] = {"transform": raw} if isinstance(raw, str) else raw
    if not isinstance(table, Mapping):
        raise InputError(f"fields.{name} must be a transform name or a table")
    unknown = set(table) - {"transform", "keep", "width", "algorithm"}
    if unknown:
        raise InputError(
            f"fields.{name}: unknown key(s) {', '.join(sorted(unknown))}",
            hint=f'a path into {name} is a quoted key: "{name}.{sorted(unknown)[0]}" = "keep"',
        )
    try:
        transform = Transform(str(table.get("transform", "keep")))
    except ValueError:
        raise InputError(
            f"fields.{name}: unknown transform {table.get('transform')!r}",
            hint="transforms: " + ", ".join(t.value for t in Transform),
        ) from None
    width = table.get("width")
    try:
        algorithm = PseudonymAlgorithm(str(table.get("algorithm", "hmac-sha256")))
    except ValueError:
        raise InputError(
            f"fields.{name}: unknown algorithm {table.get('algorithm')!r}",
            hint="algorithms: " + ", ".join(a.value for a in PseudonymAlgorithm),
        ) from None
    if "algorithm" in table and transform is not Transform.PSEUDONYMISE:
        raise InputError(f"fields.{name}: algorithm belongs to the pseudonymise transform only")
    rule = FieldRule(
        name=name,
        transform=transform,
        keep=_int(table.get("keep", 4), f"fields.{name}.keep"),
        width=_int(width, f"fields.{name}.width") if width is not None else None,
        algorithm=algorithm,
    )
    if rule.width is not None and (rule.transform is not Transform.GENERALISE or rule.width < 1):
        raise InputError(f"fields.{name}: width (>= 1) belongs to the generalise transform only")
    if name == _KEY and transform in (Transform.REDACT, Transform.GENERALISE, Transform.MASK):
        raise InputError(
            "_id keys every output record: keep it or pseudonymise it",
            hint="a redacted, masked or generalised _id would collide",
        )
    return rule


def _spec_input(raw_input: Any) -> SpecInput:
    if not isinstance(raw_input, Mapping):
        raise InputError("the spec needs an [input] table (source, dataset, backup)")
    unknown_i = set(raw_input) - {"source", "dataset", "backup", "from", "filter", "key_pattern"}
    if unknown_i:
        raise InputError(f"[input]: unknown key(s) {', '.join(sorted(unknown_i))}")
    read_from = raw_input.get("from", "backup")
    if read_from not in ("backup", "live"):
        raise InputError(
            f'input.from must be "backup" or "live", not {str(read_from)[:40]!r}',
            hint="live reads the registered source itself; backup (the default) a backup of it",
        )
    if read_from == "live" and "backup" in raw_input:
        raise InputError(
            'input.backup names a backup, but input.from is "live"',
            hint="leave input.backup out to read the live source",
        )
    return SpecInput(
        source=_text(raw_input, "source", where="input."),
        dataset=_text(raw_input, "dataset", where="input."),
        backup=str(raw_input.get("backup", "latest")),
        live=read_from == "live",
        filter=QueryFilter.parse(raw_input["filter"]) if "filter" in raw_input else None,
        key_pattern=(
            KeyPattern.parse(raw_input["key_pattern"], what="input.key_pattern")
            if "key_pattern" in raw_input
            else None
        ),
    )


def _rules(raw: Mapping[str, Any]) -> tuple[FieldRule, ...]:
    rules = tuple(_field_rule(str(k), v) for k, v in raw.items())
    _check_paths(rules)
    return rules


def _check_paths(rules: tuple[FieldRule, ...]) -> None:
    """A path listed with one of its parents (the parent already leaves whole) is refused
    (every format carries nested paths: JSON lines nested, CSV and Parquet as a column per
    path)."""
    names = sorted(r.name for r in rules)
    for name in names:
        parts = name.split(".")
        for n in range(1, len(parts)):
            parent = ".".join(parts[:n])
            if parent in names:
                raise InputError(
                    f"fields: {name[:80]!r} is inside {parent[:80]!r}, which is listed whole",
                    hint=f"list either {parent} (all of it) or the paths inside it",
                )


def _contract(raw: Mapping[str, Any], rules: tuple[FieldRule, ...]) -> Contract:
    """The ``[contract]`` table: a JSON Schema with its rules, or an ODCS document
    (``odcs``, with at most ``max_violations`` beside it) whose every property is a field
    that leaves, a parent of one or inside one."""
    if "odcs" not in raw:
        return Contract.from_json(raw)
    beside = sorted(set(raw) - {"odcs", "max_violations"})
    if beside:
        raise InputError(
            f"contract.{beside[0]} beside contract.odcs: the ODCS document holds the contract",
            hint="write the rule in the ODCS document (quality rules), or drop contract.odcs",
        )
    contract, odcs = contract_from_odcs(raw["odcs"], max_violations=raw.get("max_violations", 0))
    allowed = [r.name for r in rules]
    for path in odcs.paths:
        if not any(
            path == name or path.startswith(name + ".") or name.startswith(path + ".")
            for name in allowed
        ):
            raise InputError(
                f"ODCS property {path[:80]!r} is not a field that leaves (not in [fields])",
                hint="describe only allowed fields in the ODCS document, or allow the field",
            )
    return contract


def _check_against_schema(rules: tuple[FieldRule, ...], contract: Contract) -> None:
    """A listed path the contract's schema says cannot exist (a parent with
    ``additionalProperties = false`` whose ``properties`` do not name it) is refused."""
    for rule in rules:
        schema: Any = contract.schema
        walked: list[str] = []
        for part in rule.name.split("."):
            if not isinstance(schema, Mapping):
                break
            if schema.get("type") == "array" or "items" in schema:
                schema = schema.get("items")
                if not isinstance(schema, Mapping):
                    break
            props = schema.get("properties")
            props = props if isinstance(props, Mapping) else {}
            if part not in props and schema.get("additionalProperties") is False:
                where = ".".join(walked) or "the record"
                raise InputError(
                    f"fields: {rule.name[:80]!r} cannot exist: the contract's schema allows "
                    f"no {part[:40]!r} in {where}",
                    hint="fix the path, or add it to the schema's properties",
                )
            walked.append(part)
            schema = props.get(part)


def parse_spec(text: str, *, name: str = "spec") -> ExportSpec:
    """Parse and check a spec's TOML text; raises :class:`InputError` (with a hint)."""
    try:
        return _parse_spec(text, name=name)
    except InputError as exc:
        if exc.hint:
            raise
        raise InputError(exc.message, hint="docs/exports.md describes the spec format") from None


def _parse_spec(text: str, *, name: str) -> ExportSpec:
    if len(text.encode("utf-8")) > MAX_SPEC_BYTES:
        raise InputError(f"{name[:100]} is larger than {MAX_SPEC_BYTES // 1024} KiB")
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise InputError(f"{name[:100]} is not valid TOML: {exc}") from None
    unknown = set(data) - {
        "name",
        "description",
        "purpose",
        "legal_basis",
        "recipient",
        "destination",
        "format",
        "input",
        "fields",
        "contract",
        "consent",
        "slo",
    }
    if unknown:
        raise InputError(
            f"{name[:100]}: unknown key(s) {', '.join(sorted(unknown))}",
            hint="see docs/exports.md for the spec format",
        )
    spec_name = _text(data, "name")
    if not _NAME.fullmatch(spec_name):
        raise InputError(
            f"spec name {spec_name[:80]!r} is not valid",
            hint="lowercase letters, digits, '.', '_' and '-', at most 63 characters",
        )
    try:
        basis = LegalBasis(_text(data, "legal_basis"))
    except ValueError:
        raise InputError(
            f"unknown legal_basis {data.get('legal_basis')!r}",
            hint="one of: " + ", ".join(b.value for b in LegalBasis),
        ) from None
    try:
        fmt = OutputFormat(str(data.get("format", OutputFormat.EXTJSON.value)))
    except ValueError:
        raise InputError(
            f"unknown format {data.get('format')!r}",
            hint="this version writes: " + ", ".join(f.value for f in OutputFormat),
        ) from None
    spec_input = _spec_input(data.get("input"))
    if spec_input.filter is not None and spec_input.key_pattern is not None:
        raise InputError(
            "[input] has both a filter (a MongoDB input) and a key_pattern (a Redis input)",
            hint="a MongoDB input takes filter, a Redis input key_pattern",
        )
    raw_fields = data.get("fields")
    if not isinstance(raw_fields, Mapping) or not raw_fields:
        raise InputError(
            "the spec needs a [fields] table: the fields allowed to leave",
            hint="everything not listed is dropped; list _id at least",
        )
    rules = _rules(raw_fields)
    if _KEY not in {r.name for r in rules}:
        raise InputError(
            "[fields] must list _id (keep or pseudonymise it)",
            hint="_id keys every output record, its fingerprint and every violation",
        )
    raw_contract = data.get("contract", {})
    if not isinstance(raw_contract, Mapping):
        raise InputError("[contract] must be a table")
    unknown_c = set(raw_contract) - {
        "schema",
        "min_records",
        "max_records",
        "max_nulls",
        "unique",
        "max_violations",
        "odcs",
    }
    if unknown_c:
        raise InputError(f"[contract]: unknown key(s) {', '.join(sorted(unknown_c))}")
    contract = _contract(raw_contract, rules)
    _check_against_schema(rules, contract)
    allowed = {r.name for r in rules}
    for what, names in (("max_nulls", contract.max_nulls), ("unique", contract.unique)):
        stray = sorted(set(names) - allowed)
        if stray:
            raise InputError(
                f"contract.{what} names field(s) that do not leave: {', '.join(stray)}",
                hint="a contract rule can only be about allowed fields",
            )
    consent = _consent(data.get("consent"), basis)
    if consent is not None and spec_input.key_pattern is not None:
        _check_redis_subject(consent.subject_field)
    return ExportSpec(
        slo=Slo.from_json(data["slo"]) if "slo" in data else None,
        consent=consent,
        name=spec_name,
        purpose=_text(data, "purpose"),
        legal_basis=basis,
        recipient=_text(data, "recipient"),
        destination=_text(data, "destination"),
        format=fmt,
        input=spec_input,
        fields=rules,
        contract=contract,
    )


def _check_redis_subject(path: str) -> None:
    """A Redis input's records have a known shape (``redis-key/1``): a nested subject can only
    be a hash's field (``value.NAME``); any other path crosses a string or an array of every
    record, so it is refused now rather than excluding every record."""
    parts = path.split(".")
    if len(parts) > 1 and (parts[0] != "value" or len(parts) != 2):
        raise InputError(
            f"consent.subject_field {path[:80]!r} never names a subject of a Redis record",
            hint='a Redis record is {"_id", "type", "value", "expire_at_ms"}: name _id (the '
            "key) or a hash field, value.NAME (docs/exports.md, consent)",
        )


def _consent(raw: Any, basis: LegalBasis) -> ConsentSource | None:
    if raw is None:
        if basis is LegalBasis.CONSENT:
            raise InputError(
                "legal_basis is consent, but the spec has no [consent] table",
                hint='name the consent file: [consent] file = "/path/consents.jsonl"',
            )
        return None
    if not isinstance(raw, Mapping):
        raise InputError("[consent] must be a table (file, subject_field)")
    unknown = set(raw) - {"file", "source", "dataset", "key_pattern", "subject_field"}
    if unknown:
        raise InputError(f"[consent]: unknown key(s) {', '.join(sorted(unknown))}")
    subject = str(raw.get("subject_field", "_id"))
    parts = subject.split(".")
    if len(parts) > MAX_PATH_DEPTH or not all(_FIELD.fullmatch(p) for p in parts):
        raise InputError(
            f"consent.subject_field {subject[:80]!r} is not a field name nor a dotted path",
            hint=f"name a field (email) or a path into documents (value.customer_id): no "
            f"segment empty or starting with $, at most {MAX_PATH_DEPTH} segments",
        )
    one_of = (
        "consent.file, or consent.source with consent.dataset (a MongoDB collection) or "
        "consent.key_pattern (Redis keys)"
    )
    if "file" in raw:
        if "source" in raw or "dataset" in raw or "key_pattern" in raw:
            raise InputError("[consent] names a file and a source", hint=f"name one: {one_of}")
        file = _text(raw, "file", where="consent.")
        if not file.startswith("/"):
            raise InputError("consent.file must be an absolute path")
        return ConsentSource(file=file, subject_field=subject)
    if "source" not in raw:
        raise InputError("[consent] names no consent list", hint=f"name {one_of}")
    source = _text(raw, "source", where="consent.")
    if "key_pattern" in raw:
        dataset = _text(raw, "dataset", where="consent.") if "dataset" in raw else "db0"
        pattern = KeyPattern.parse(raw["key_pattern"], what="consent.key_pattern")
        return ConsentSource(
            source=source, dataset=dataset, key_pattern=pattern, subject_field=subject
        )
    if "dataset" not in raw:
        raise InputError(
            "consent.source needs consent.dataset (a MongoDB db.collection) or "
            "consent.key_pattern (Redis keys)",
            hint="see docs/exports.md, consent",
        )
    dataset = _text(raw, "dataset", where="consent.")
    return ConsentSource(source=source, dataset=dataset, subject_field=subject)


@dataclass(frozen=True, slots=True, kw_only=True)
class Recipient:
    """Who receives exports: an organisation, a contact, the age X25519 key exports are
    encrypted to, the data-processing agreement, and whether key possession was proven."""

    name: str
    organisation: str
    contact: str
    public_key: str
    dpa: str | None
    added_by: str
    added_at: datetime
    challenge_sha256: str | None  # the pending challenge (None once verified)
    verified_at: datetime | None = None
    verified_seq: int | None = None

    def to_json(self) -> dict[str, Any]:
        """JSON-ready (never a secret)."""
        return {
            "name": self.name,
            "organisation": self.organisation,
            "contact": self.contact,
            "public_key": self.public_key,
            "dpa": self.dpa,
            "added_by": self.added_by,
            "added_at": self.added_at.isoformat(),
            "verified": self.verified_at is not None,
            "verified_at": self.verified_at.isoformat() if self.verified_at else None,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class SpecVersion:
    """One stored version of a spec: its text and digest, who proposed and who approved it."""

    name: str
    version: int
    sha256: str
    text: str
    proposed_by: str
    proposed_at: datetime
    proposal_seq: int
    approved_by: str | None = None
    approved_at: datetime | None = None
    approval_seq: int | None = None

    @property
    def approved(self) -> bool:
        """Whether a second person approved it."""
        return self.approved_by is not None

    def to_json(self) -> dict[str, Any]:
        """JSON-ready (without the text)."""
        return {
            "name": self.name,
            "version": self.version,
            "sha256": self.sha256,
            "proposed_by": self.proposed_by,
            "proposed_at": self.proposed_at.isoformat(),
            "approved": self.approved,
            "approved_by": self.approved_by,
            "approved_at": self.approved_at.isoformat() if self.approved_at else None,
        }


class ExportStatus(StrEnum):
    """Where one run stands."""

    RUNNING = "running"
    COMPLETED = "completed"  # delivered, manifest signed
    BLOCKED = "blocked"  # the contract failed: nothing delivered
    FAILED = "failed"  # an error: nothing delivered


@dataclass(frozen=True, slots=True, kw_only=True)
class ExportRun:
    """One run of a spec version."""

    id: str
    spec: str
    version: int
    backup_id: str
    recipient: str
    status: ExportStatus
    started_at: datetime
    started_by: str
    finished_at: datetime | None = None
    output_path: str | None = None
    output_sha256: str | None = None
    records_out: int | None = None
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        """JSON-ready."""
        return {
            "id": self.id,
            "spec": self.spec,
            "version": self.version,
            "backup_id": self.backup_id,
            "recipient": self.recipient,
            "status": self.status.value,
            "started_at": self.started_at.isoformat(),
            "started_by": self.started_by,
            "finished_at": self.finished_at.isoformat() if self.finished_at else None,
            "output": self.output_path,
            "output_sha256": self.output_sha256,
            "records_out": self.records_out,
            "error": self.error,
        }
