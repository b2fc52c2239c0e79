"""ODCS contracts (issue 17): what an Open Data Contract Standard document (v3.0.x, v3.1.0,
v3.2.0) translates to (a JSON Schema, row bounds, null limits in rows or percent,
uniqueness), every document the official ODCS JSON Schema refuses refused (naming the JSON
path of the first error), and every document that cannot be checked faithfully refused at
`spec add` with a message naming the rule. The translated contract is checked by the same
ContractCheck as a JSON Schema contract."""

from __future__ import annotations

from typing import Any

import pytest

from affidavit.errors import InputError
from affidavit.models.export import Contract, contract_from_odcs, parse_spec
from affidavit.models.odcs import parse_odcs
from affidavit.services.exports.records import ContractCheck, check_schema

DOC = """\
apiVersion: v3.0.2
kind: DataContract
id: 53581432-6c55-4ba2-a65f-72344a91553a
version: 1.0.0
status: active
contractCreatedTs: 2026-01-01T00:00:00Z
schema:
  - name: customers
    logicalType: object
    quality:
      - metric: rowCount
        mustBeBetween: [2, 1000]
    properties:
      - name: _id
        logicalType: integer
        primaryKey: true
      - name: country
        logicalType: string
        required: true
        quality:
          - metric: invalidValues
            arguments: {validValues: [FR, DE]}
            mustBe: 0
      - name: email
        logicalType: string
        logicalTypeOptions: {maxLength: 30, pattern: "@"}
        quality:
          - metric: nullValues
            mustBeLessThan: 50
            unit: percent
          - rule: duplicateCount
            mustBe: 0
      - name: age
        logicalType: integer
        logicalTypeOptions: {minimum: 0, format: i8}
      - name: address
        logicalType: object
        properties:
          - name: city
            logicalType: string
            quality:
              - metric: nullValues
                mustBeLessOrEqualTo: 1
              - type: text
                description: the city people write
"""

SPEC = """
name = "s"
purpose = "research"
legal_basis = "contract"
recipient = "r"
destination = "/tmp"

[input]
source = "src"
dataset = "db.c"

[fields]
_id = "keep"
country = "keep"
email = "keep"
age = "keep"
"address.city" = "keep"

[contract]
max_violations = {tolerate}
odcs = '''
{doc}'''
"""


def spec(doc: str = DOC, tolerate: int = 0) -> Any:
    return parse_spec(SPEC.format(doc=doc, tolerate=tolerate))


def test_an_odcs_document_translates_to_the_internal_contract() -> None:
    contract = spec().contract
    assert contract.kind == "odcs"
    assert contract.source["api_version"] == "v3.0.2"
    assert contract.source["id"] == "53581432-6c55-4ba2-a65f-72344a91553a"
    assert len(contract.source["sha256"]) == 64
    assert (contract.min_records, contract.max_records) == (2, 1000)
    assert contract.unique == ("_id", "email")
    assert dict(contract.max_nulls) == {"address.city": 1}
    assert dict(contract.max_null_percent) == {"email": ("50", False)}
    props = contract.schema["properties"]
    assert contract.schema["required"] == ["_id", "country"]
    assert props["country"]["enum"] == ["FR", "DE"]
    assert props["age"] == {"type": ["integer", "null"], "minimum": 0, "maximum": 127}
    assert props["address"]["properties"]["city"]["type"] == ["string", "null"]
    check_schema(contract)  # a valid JSON Schema
    # the manifest carries it and export verify reads back the same contract
    again = Contract.from_json(contract.to_json())
    assert again == contract
    assert again.to_json()["source"]["kind"] == "odcs"


def test_a_json_schema_contract_records_its_kind_and_digest() -> None:
    plain = parse_spec(
        SPEC.split("[contract]", maxsplit=1)[0] + '[contract]\n[contract.schema]\ntype = "object"\n'
    ).contract
    assert plain.kind == "json-schema"
    assert len(plain.to_json()["source"]["sha256"]) == 64


def _check(contract: Contract, records: list[dict[str, Any]]) -> ContractCheck:
    allowed = frozenset({"_id", "country", "email", "age", "address.city"})
    check = ContractCheck(contract, allowed)
    shipped = sum(check.check(r) for r in records)
    check.finish(shipped=shipped)
    return check


GOOD = [
    {"_id": 1, "country": "FR", "email": "a@x", "age": 30, "address": {"city": "Paris"}},
    {"_id": 2, "country": "DE", "email": None, "age": 40, "address": {"city": "Bonn"}},
    {"_id": 3, "country": "DE", "email": "c@x"},
]


def test_records_meeting_the_odcs_contract_pass() -> None:
    check = _check(spec().contract, GOOD)
    assert check.passed, check.violations
    assert check.failed_records == 0


@pytest.mark.parametrize(
    ("records", "rule", "words"),
    [
        (GOOD[:1], "min_records", "at least 2"),  # rowCount
        ([*GOOD, {"_id": 4, "country": "FR"}], "max_nulls", "under 50%"),  # 2 of 4 emails
        ([*GOOD, {"_id": 4, "country": "FR", "email": "a@x"}], "unique", "email"),
        ([*GOOD, {"_id": 4, "country": "NL", "email": "d@x"}], "schema", "NL"),  # invalid
        ([*GOOD, {"_id": 4, "country": "FR", "email": "no-at"}], "schema", "@"),  # pattern
        ([*GOOD, {"_id": 4, "country": "FR", "age": 300}], "schema", "127"),  # i8
        ([*GOOD, {"_id": 4, "email": "d@x"}], "schema", "country"),  # required
    ],
)
def test_each_quality_rule_breached_fails_the_contract(
    records: list[dict[str, Any]], rule: str, words: str
) -> None:
    check = _check(spec().contract, records)
    assert not check.passed
    found = [v.message for v in check.violations if v.rule == rule]
    assert any(words in message for message in found), check.violations


def test_null_counts_in_rows() -> None:
    records = [*GOOD, {"_id": 4, "country": "FR", "email": "d@x"}]  # 2 cities missing
    check = _check(spec().contract, records)
    assert [v.rule for v in check.violations] == ["max_nulls"]
    assert "address.city: 2 null or missing, at most 1" in check.violations[0].message


def test_failing_records_within_the_spec_threshold_ship() -> None:
    records = [*GOOD, {"_id": 4, "country": "NL", "email": "d@x", "address": {"city": "X"}}]
    assert not _check(spec(tolerate=0).contract, records).passed
    tolerant = _check(spec(tolerate=1).contract, records)
    assert tolerant.passed
    assert tolerant.failed_records == 1


def _doc(old: str, new: str) -> str:
    assert old in DOC
    return DOC.replace(old, new)


@pytest.mark.parametrize(
    ("doc", "words"),
    [
        ("schema: [unclosed\n  - x: {", "not valid YAML or JSON"),
        (
            _doc("metric: rowCount", "metric: freshness"),
            "at $.schema[0].quality[0].metric: 'freshness' is not one of",
        ),
        (
            _doc("      - metric: rowCount\n", "      - type: sql\n        query: SELECT 1\n"),
            "a sql rule cannot be checked",
        ),
        (
            _doc(
                "      - metric: rowCount\n        mustBeBetween: [2, 1000]\n",
                "      - type: custom\n        engine: soda\n        implementation: x\n",
            ),
            "a custom rule cannot be checked",
        ),
        (
            _doc(
                "logicalType: integer\n        primaryKey",
                "logicalType: timestamp\n        primaryKey",
            ),
            "timestamp is ODCS v3.1.0, the document says v3.0.2",
        ),
        (_doc("- name: age", "- name: salary"), "'salary' is not a field that leaves"),
        (_doc("- name: city", "- name: street"), "'address.street' is not a field that leaves"),
        (_doc("status: active\n", "status: active\nsecret: x\n"), "Additional properties"),
        (
            _doc("primaryKey: true", "primaryKey: true\n        colour: red"),
            "at $.schema[0].properties[0]: Unevaluated properties are not allowed ('colour'",
        ),
        (_doc("apiVersion: v3.0.2", "apiVersion: v2.2.2"), "ODCS v2 is not read"),
        (_doc("mustBeBetween: [2, 1000]", "mustNotBeBetween: [2, 1000]"), "mustNotBeBetween"),
        (_doc("mustBeLessThan: 50", "mustBeGreaterThan: 5"), "lower bound on nullValues"),
        (
            _doc(
                "rule: duplicateCount\n            mustBe: 0",
                "rule: duplicateCount\n            mustBeLessThan: 0",
            ),
            "fewer than 0 duplicateValues cannot be met",
        ),
        (
            _doc("mustBeBetween: [2, 1000]", "mustBeBetween: [2, 1000]\n        unit: percent"),
            "rowCount is a rule of the schema object, in rows",
        ),
        (
            _doc("mustBeBetween: [2, 1000]", "mustBeBetween: [2, 1000]\n        unit: bytes"),
            "unit 'bytes'",
        ),
        (_doc('pattern: "@"', 'pattern: "("'), "not a regular expression"),
        (DOC + "  - name: other\n", "describes 2 schema objects"),
        ("base: &b {a: 1}\nother: *b\n", "YAML alias"),
        ("- just\n- a list\n", "not a mapping"),
        ("a: " + "[" * 60000, "nests too deeply"),
        ('{"a": ' * 20000, "nests too deeply"),
        (_doc("mustBeBetween: [2, 1000]", "mustBeBetween: [2, 1.0e+300]"), "at most 2^53 - 1"),
        (_doc("{minimum: 0, format: i8}", "{minimum: .inf}"), "finite number"),
        (_doc("{maxLength: 30,", "{maxLength: 99999999999999999,"), "at most 2^53 - 1"),
    ],
)
def test_documents_that_cannot_be_checked_are_refused(doc: str, words: str) -> None:
    with pytest.raises(InputError) as caught:
        spec(doc)
    error = caught.value
    assert words in error.message, error.message
    assert error.exit_code == 2
    assert error.hint
    assert "\n" not in error.message


def test_odcs_beside_json_schema_rules_is_refused() -> None:
    text = SPEC.format(doc=DOC, tolerate=0).replace(
        "max_violations = 0", "max_violations = 0\nmin_records = 3"
    )
    with pytest.raises(InputError) as caught:
        parse_spec(text)
    assert "contract.min_records beside contract.odcs" in caught.value.message


def test_64_bit_integer_formats_keep_only_bounds_canonical_json_holds() -> None:
    i64 = spec(_doc("format: i8", "format: i64")).contract.schema["properties"]["age"]
    assert i64 == {"type": ["integer", "null"], "minimum": 0}
    u64 = spec(_doc("{minimum: 0, format: i8}", "{format: u64}")).contract
    assert u64.schema["properties"]["age"] == {"type": ["integer", "null"], "minimum": 0}
    u32 = spec(_doc("{minimum: 0, format: i8}", "{format: u32}")).contract
    assert u32.schema["properties"]["age"]["maximum"] == 2**32 - 1
    import rfc8785

    rfc8785.dumps(u64.to_json())  # the manifest's canonical JSON holds it


def test_json_documents_are_read_too() -> None:
    import json

    import yaml  # type: ignore[import-untyped]

    as_json = json.dumps(
        yaml.safe_load(DOC.replace("2026-01-01T00:00:00Z", "'2026-01-01T00:00:00Z'"))
    )
    contract, odcs = contract_from_odcs(as_json)
    assert contract.unique == ("_id", "email")
    assert odcs.paths[-1] == "address.city"


def test_the_digest_is_of_the_text() -> None:
    a = parse_odcs(DOC)
    b = parse_odcs(DOC + "# a comment\n")
    assert a.schema == b.schema
    assert a.sha256 != b.sha256


def test_a_large_document_is_refused() -> None:
    with pytest.raises(InputError, match="larger than"):
        parse_odcs(DOC + "#" * (200 * 1024))


def test_the_documented_example_translates() -> None:
    from pathlib import Path

    docs = (Path(__file__).resolve().parents[3] / "docs" / "exports.md").read_text()
    example = docs.split("odcs = '''\n", 1)[1].split("'''", 1)[0]
    contract = parse_spec(
        SPEC.split("[fields]", maxsplit=1)[0]
        + '[fields]\n_id = "keep"\ncountry = "keep"\nemail = "keep"\n'
        + f"[contract]\nodcs = '''\n{example}'''\n"
    ).contract
    assert contract.kind == "odcs"
    assert contract.min_records == 1
    assert contract.unique == ("_id",)
    assert dict(contract.max_null_percent) == {"email": ("5", False)}


# --- the official ODCS JSON Schema (open-data-contract-standard 3.2.0) and v3.1.0 / v3.2.0 ---

V31 = """\
apiVersion: v3.1.0
kind: DataContract
id: customers-v31
version: 3.1.0
status: active
team:
  name: data-platform
  members:
    - username: olga
      role: owner
schema:
  - name: customers
    id: customers_obj
    logicalType: object
    quality:
      - id: enough_rows
        metric: rowCount
        mustBeBetween: [2, 1000]
        dimension: completeness
    properties:
      - name: _id
        id: customer_id
        logicalType: integer
        primaryKey: true
        logicalTypeOptions: {exclusiveMinimum: 0, format: i32}
      - name: country
        logicalType: string
        required: true
        quality:
          - metric: invalidValues
            arguments: {validValues: [FR, DE]}
            mustBe: 0
      - name: email
        logicalType: string
        quality:
          - metric: duplicateValues
            mustBe: 0
          - metric: nullValues
            mustBeLessOrEqualTo: 1
      - name: age
        logicalType: number
        logicalTypeOptions: {minimum: 0, exclusiveMaximum: 150, format: f64}
      - name: address
        logicalType: object
        properties:
          - name: city
            logicalType: timestamp
            logicalTypeOptions: {format: yyyy-MM-dd HH:mm:ss}
"""

V32 = """\
apiVersion: v3.2.0
kind: DataContract
id: customers-v32
version: 1.0.0
context: customers shipped to the research partner
schema:
  - name: customers
    logicalType: object
    context:
      instructions: one record per customer
    properties:
      - name: _id
        logicalType: integer
        primaryKey: true
        semanticType: dimension
      - name: country
        logicalType: string
        required: true
        enum:
          - {value: FR, label: France}
          - {value: DE, label: Germany}
      - name: email
        logicalType: string
        deprecated: false
        synonyms: [{synonym: mail}]
      - name: age
        logicalType: integer
        enum: [{value: 30}, {value: 40}]
      - name: address
        logicalType: object
        properties:
          - name: city
            logicalType: string
"""


def _v31(old: str, new: str) -> str:
    assert old in V31
    return V31.replace(old, new)


def _v32(old: str, new: str) -> str:
    assert old in V32
    return V32.replace(old, new)


def test_the_official_schema_comes_from_the_pinned_package() -> None:
    from importlib.metadata import version

    from affidavit.models.odcs import API_VERSIONS, official_validator

    assert version("open-data-contract-standard") == "3.2.0"
    validator = official_validator()
    assert validator.META_SCHEMA["$id"].startswith("https://json-schema.org/draft/2019-09/")
    listed = validator.schema["properties"]["apiVersion"]["enum"]
    assert set(API_VERSIONS) <= set(listed)
    assert {v for v in listed if v not in API_VERSIONS} == {"v2.2.0", "v2.2.1", "v2.2.2"}


def test_a_v310_document_translates() -> None:
    contract = spec(V31).contract
    assert contract.source["api_version"] == "v3.1.0"
    assert (contract.min_records, contract.max_records) == (2, 1000)
    assert contract.unique == ("_id", "email")
    assert dict(contract.max_nulls) == {"email": 1}
    props = contract.schema["properties"]
    # v3.1.0's exclusive bounds are numbers (v3.0's were true/false beside minimum/maximum)
    assert props["_id"] == {
        "type": "integer",
        "exclusiveMinimum": 0,
        "minimum": -(2**31),
        "maximum": 2**31 - 1,
    }
    assert props["age"] == {"type": ["number", "null"], "minimum": 0, "exclusiveMaximum": 150}
    assert props["country"]["enum"] == ["FR", "DE"]
    city = props["address"]["properties"]["city"]  # timestamp: a BSON date
    assert city["type"] == ["object", "null"]
    assert city["required"] == ["$date"]
    check_schema(contract)
    records = [
        {
            "_id": 1,
            "country": "FR",
            "email": "a@x",
            "age": 3.5,
            "address": {"city": {"$date": "2026-01-01T00:00:00Z"}},
        },
        {"_id": 2, "country": "DE", "email": None},
    ]
    assert _check(contract, records).passed
    for bad in (
        {"_id": 0, "country": "FR"},
        {"_id": 3, "country": "FR", "age": 150},
        {"_id": 3, "country": "FR", "address": {"city": "2026-01-01"}},
    ):
        assert not _check(contract, [*records, bad]).passed, bad


def test_a_v320_document_translates_enum_and_needs_no_status() -> None:
    contract = spec(V32).contract
    assert contract.source["api_version"] == "v3.2.0"
    props = contract.schema["properties"]
    assert props["country"] == {"type": "string", "enum": ["FR", "DE"]}  # required: no null
    assert props["age"] == {"type": ["integer", "null"], "enum": [30, 40, None]}
    assert contract.unique == ("_id",)
    check_schema(contract)
    good = [{"_id": 1, "country": "FR", "age": 30}, {"_id": 2, "country": "DE", "age": None}]
    assert _check(contract, good).passed
    assert not _check(contract, [*good, {"_id": 3, "country": "NL"}]).passed
    assert not _check(contract, [*good, {"_id": 3, "country": "FR", "age": 31}]).passed


def test_a_v30_document_keeps_its_own_words() -> None:
    """v3.0's ``rule:`` and boolean exclusive flags, which the official (v3.2.0) schema no
    longer reads, are read as v3.1.0's ``metric:`` and numeric bounds: a spec approved
    before keeps its meaning."""
    contract = spec(_doc("{minimum: 0, format: i8}", "{minimum: 0, exclusiveMinimum: true}"))
    assert contract.contract.schema["properties"]["age"] == {
        "type": ["integer", "null"],
        "exclusiveMinimum": 0,
    }
    assert contract.contract.unique == ("_id", "email")  # rule: duplicateCount
    dropped = spec(_doc("{minimum: 0, format: i8}", "{minimum: 0, exclusiveMinimum: false}"))
    assert dropped.contract.schema["properties"]["age"]["minimum"] == 0


# Each refused by the official schema; (*) marks the ones the hand-written v3.0.x structure
# of commit 0544ab2 let through.
OFFICIAL_REFUSALS = {
    "missing id": (
        _doc("id: 53581432-6c55-4ba2-a65f-72344a91553a\n", ""),
        "at $: 'id' is a required",
    ),
    "missing version": (_doc("version: 1.0.0\n", ""), "at $: 'version' is a required"),
    "missing kind": (_doc("kind: DataContract\n", ""), "at $: 'kind' is a required"),
    "missing apiVersion": (_doc("apiVersion: v3.0.2\n", ""), "'apiVersion' is a required"),
    "unknown apiVersion": (_doc("v3.0.2", "v3.9.0"), "at $.apiVersion: 'v3.9.0' is not one of"),
    "wrong kind": (_doc("kind: DataContract", "kind: Contract"), "at $.kind: 'Contract'"),
    "version a number": (_doc("version: 1.0.0", "version: 1"), "at $.version: 1 is not of"),
    "required a string": (
        _doc("required: true", "required: 'yes'"),
        "at $.schema[0].properties[1].required: 'yes' is not of type 'boolean'",
    ),
    "bound a string": (
        _doc("mustBeBetween: [2, 1000]", "mustBeBetween: [2, '1000']"),
        "at $.schema[0].quality[0].mustBeBetween[1]",
    ),
    "(*) not a date-time": (
        _doc("2026-01-01T00:00:00Z", "2026-13-01T00:00:00Z"),
        "at $.contractCreatedTs: '2026-13-01T00:00:00Z' is not a 'date-time'",
    ),
    "(*) a date-time without zone": (
        _doc("2026-01-01T00:00:00Z", "'2026-01-01 00:00'"),
        "is not a 'date-time'",
    ),
    "(*) unknown dimension": (
        _doc("- metric: rowCount\n", "- metric: rowCount\n        dimension: vibes\n"),
        "at $.schema[0].quality[0].dimension: 'vibes' is not one of",
    ),
    "(*) equal bounds": (
        _doc("mustBeBetween: [2, 1000]", "mustBeBetween: [5, 5]"),
        "at $.schema[0].quality[0]",
    ),
    "(*) a server without type": (
        _doc("status: active\n", "status: active\nservers: [{server: db}]\n"),
        "at $.servers[0]: 'type' is a required property",
    ),
    "(*) a server location not a URI": (
        _doc(
            "status: active\n",
            "status: active\nservers: [{server: db, type: api, location: not a uri}]\n",
        ),
        "at $.servers[0].location: 'not a uri' is not a 'uri'",
    ),
    "(*) a custom property of the wrong form": (
        _doc("status: active\n", "status: active\ncustomProperties: [1]\n"),
        "at $.customProperties[0]: 1 is not of type 'object'",
    ),
    "(*) string options on an integer": (
        _doc("{minimum: 0, format: i8}", "{minimum: 0, maxLength: 3}"),
        "at $.schema[0].properties[3]",
    ),
    "a v3.1.0 rule named by rule": (
        _v31("metric: duplicateValues", "rule: duplicateValues"),
        "('mustBe', 'rule' were unexpected)",
    ),
    "a v3.1.0 boolean exclusive flag": (
        _v31("{exclusiveMinimum: 0, format: i32}", "{minimum: 0, exclusiveMinimum: true}"),
        "at $.schema[0].properties[0]",
    ),
    "an enum value a list": (
        _v32("{value: 30}", "{value: [30]}"),
        "at $.schema[0].properties[3]",
    ),
    "a map without its map block": (
        _v32(
            "name: city\n            logicalType: string",
            "name: city\n            logicalType: map",
        ),
        "at $.schema[0].properties[4].properties[0]: 'map' is a required property",
    ),
    "a sql rule without a comparison": (
        _doc("      - metric: rowCount\n", "      - type: sql\n        query: SELECT 1\n").replace(
            "        mustBeBetween: [2, 1000]\n", ""
        ),
        "at $.schema[0].quality[0]: needs one of mustBe, mustNotBe, mustBeGreaterThan",
    ),
    "two comparisons": (
        _doc("mustBeBetween: [2, 1000]", "mustBeBetween: [2, 1000]\n        mustBeLessThan: 9"),
        "at $.schema[0].quality[0]: fits more than one of the forms oneOf allows",
    ),
    "a member nowhere in ODCS": (_v32("deprecated: false", "colour: red"), "('colour' was"),
}


@pytest.mark.parametrize("case", list(OFFICIAL_REFUSALS))
def test_documents_the_official_schema_refuses_are_refused(case: str) -> None:
    doc, words = OFFICIAL_REFUSALS[case]
    with pytest.raises(InputError) as caught:
        spec(doc)
    error = caught.value
    assert "breaks the ODCS JSON Schema at $" in error.message, error.message
    assert words in error.message, error.message
    assert error.exit_code == 2
    assert "open-data-contract-standard" in (error.hint or "")
    assert "\n" not in error.message


# What the official schema (one for every version) lets through and affidavit refuses.
BEYOND = {
    "v3.0.x without status": (_doc("status: active\n", ""), "no status, which ODCS v3.0.2"),
    "v3.1.0 without status": (_v31("status: active\n", ""), "no status, which ODCS v3.1.0"),
    "v2": (_doc("apiVersion: v3.0.2", "apiVersion: v2.2.0"), "ODCS v2 is not read"),
    "v3.2.0 enum in v3.1.0": (
        _v31(
            "logicalType: string\n        required",
            "logicalType: string\n        enum: [{value: FR}]\n        required",
        ),
        "enum is ODCS v3.2.0, the document says v3.1.0",
    ),
    "v3.2.0 context in v3.1.0": (
        _v31("status: active\n", "status: active\ncontext: words\n"),
        "context is ODCS v3.2.0",
    ),
    "v3.1.0 id in v3.0.2": (
        _doc("- name: age\n", "- name: age\n        id: age\n"),
        "id is ODCS v3.1.0, the document says v3.0.2",
    ),
    "v3.1.0 rule id in v3.0.2": (
        _doc("- metric: rowCount\n", "- metric: rowCount\n        id: rows\n"),
        "quality rule 1 of 'customers': id is ODCS v3.1.0",
    ),
    "relationships": (
        _v31(
            "id: customer_id\n", "id: customer_id\n        relationships: [{to: orders.customer}]\n"
        ),
        "relationships (foreign keys into other data) cannot be checked",
    ),
    "object relationships": (
        _v31(
            "id: customers_obj\n",
            "id: customers_obj\n    relationships: [{from: customers.id, to: orders.customer}]\n",
        ),
        "ODCS schema object 'customers': relationships",
    ),
    "time": (
        _v31("logicalType: timestamp", "logicalType: time"),
        "logicalType 'time' cannot be checked",
    ),
    "timestamp bounds": (
        _v31("{format: yyyy-MM-dd HH:mm:ss}", "{minimum: '2020-01-01'}"),
        "logicalTypeOptions minimum cannot be checked for logicalType timestamp",
    ),
    "vector": (
        _v32(
            "name: city\n            logicalType: string",
            "name: city\n            logicalType: vector\n            logicalTypeOptions: {dimensions: 3}",
        ),
        "logicalType 'vector' cannot be checked",
    ),
    "physicalName differs": (
        _v32("- name: email\n", "- name: email\n        physicalName: mail\n"),
        "physicalName differs from name",
    ),
    "rule and metric differ": (
        _v31("metric: duplicateValues", "metric: duplicateValues\n            rule: nullValues"),
        "rule 'nullValues' and metric 'duplicateValues' differ",
    ),
    "missingValues": (
        _v31(
            "metric: nullValues",
            "metric: missingValues\n            arguments: {missingValues: [null, '']}",
        ),
        "the quality rule 'missingValues' cannot be checked",
    ),
    "enum beside validValues": (
        _v32(
            "required: true\n        enum:",
            "required: true\n        quality: [{metric: invalidValues, arguments: {validValues: [FR]}, mustBe: 0}]\n        enum:",
        ),
        "enum beside an invalidValues rule",
    ),
    "enum value beyond JCS": (
        _v32("{value: 30}", "{value: 9007199254740993}"),
        "beyond ±(2^53 - 1)",
    ),
    "128-bit integers": (
        _v31("format: i32", "format: i128"),
        "integer format 'i128' cannot be checked",
    ),
}
BEYOND["map"] = (
    _v32(
        "name: city\n            logicalType: string",
        "name: city\n            logicalType: map\n            map:\n"
        "              key: {logicalType: string}\n              value: {logicalType: string}",
    ),
    "city': map cannot be checked by affidavit",
)


@pytest.mark.parametrize("case", list(BEYOND))
def test_what_the_official_schema_lets_through_and_affidavit_cannot_check_is_refused(
    case: str,
) -> None:
    doc, words = BEYOND[case]
    from affidavit.models.odcs import _from_v30, check_official, load_document

    if case not in ("v2", "v3.0.x without status"):
        data = load_document(doc)
        check_official(_from_v30(data) if "v3.0.2" in doc else data)  # the schema accepts it...
    with pytest.raises(InputError) as caught:  # ...affidavit does not
        spec(doc)
    error = caught.value
    assert words in error.message, error.message
    assert error.exit_code == 2
    assert error.hint
    assert "\n" not in error.message


def test_a_property_without_logical_type_needs_no_map_block() -> None:
    """The package's schema makes every property without ``logicalType`` carry a ``map``
    block (bitol-io/open-data-contract-standard#322); the upstream fix is applied."""
    for doc in (V32, V31, DOC):
        untyped = doc.replace("name: city\n            logicalType: string", "name: city")
        untyped = untyped.replace("name: city\n            logicalType: timestamp", "name: city")
        untyped = untyped.replace(
            "            logicalTypeOptions: {format: yyyy-MM-dd HH:mm:ss}\n", ""
        )
        assert untyped != doc
        city = spec(untyped).contract.schema["properties"]["address"]["properties"]["city"]
        assert city == {}  # any value


@pytest.mark.parametrize(
    ("doc", "words"),
    [
        (  # a newer member hidden in an array's items
            _v31(
                "      - name: address\n        logicalType: object\n",
                "      - name: tags\n        logicalType: array\n"
                "        items: {logicalType: string, enum: [{value: a}]}\n"
                "      - name: address\n        logicalType: object\n",
            ),
            "enum is ODCS v3.2.0, the document says v3.1.0",
        ),
        (  # ... or in a nested object's property
            _v31(
                "          - name: city\n",
                "          - name: city\n            relationships: [{to: cities.id}]\n",
            ),
            "ODCS property 'address.city': relationships",
        ),
        (  # v3.0's rule name does not carry an unknown rule past the official schema
            _doc("rule: duplicateCount", "rule: freshness"),
            "quality[1].metric: 'freshness' is not one of",
        ),
        (  # nor a sql rule dressed as v3.0's rule
            _doc("rule: duplicateCount", "type: sql\n            rule: duplicateCount"),
            "breaks the ODCS JSON Schema at $.schema[0].properties[2].quality[1]",
        ),
    ],
)
def test_the_version_and_member_checks_reach_every_level(doc: str, words: str) -> None:
    with pytest.raises(InputError) as caught:
        spec(doc)
    assert words in caught.value.message, caught.value.message
    assert caught.value.exit_code == 2


def test_a_physical_name_equal_to_the_name_is_descriptive() -> None:
    same = _v32("- name: email\n", "- name: email\n        physicalName: email\n")
    assert spec(same).contract.schema["properties"]["email"]["type"] == ["string", "null"]
