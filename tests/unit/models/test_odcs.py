"""ODCS v3.0.x contracts (issue 17): what an Open Data Contract Standard document translates
to (a JSON Schema, row bounds, null limits in rows or percent, uniqueness), and every document
that cannot be checked faithfully refused at `spec add` with a message naming the rule. The
translated contract is checked by the same ContractCheck as a JSON Schema contract."""

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
        (_doc("metric: rowCount", "metric: freshness"), "unknown quality rule 'freshness'"),
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
            "logicalType 'timestamp' cannot be checked",
        ),
        (_doc("- name: age", "- name: salary"), "'salary' is not a field that leaves"),
        (_doc("- name: city", "- name: street"), "'address.street' is not a field that leaves"),
        (_doc("status: active\n", "status: active\nsecret: x\n"), "Additional properties"),
        (
            _doc("primaryKey: true", "primaryKey: true\n        colour: red"),
            "schema/0/properties/0",
        ),
        (_doc("apiVersion: v3.0.2", "apiVersion: v2.2.2"), "apiVersion"),
        (_doc("mustBeBetween: [2, 1000]", "mustNotBeBetween: [2, 1000]"), "mustNotBeBetween"),
        (_doc("mustBeLessThan: 50", "mustBeGreaterThan: 5"), "lower bound on nullValues"),
        (
            _doc(
                "rule: duplicateCount\n            mustBe: 0",
                "rule: duplicateCount\n            mustBeLessThan: 3",
            ),
            "duplicateValues must be 0",
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

    as_json = json.dumps(yaml.safe_load(DOC.replace("2026-01-01T00:00:00Z", "'2026'")))
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
