"""ODCS ``duplicateValues`` / ``invalidValues`` with a limit above zero (issue 17): translated
to counted rules, counted over the records shipped by ContractCheck (duplicates through the
bounded-memory digest set, invalid values per record), rows and percent limits at their
boundaries, one over the limit a whole-output violation that no ``max_violations`` tolerates."""

from __future__ import annotations

from typing import Any

import pytest

from affidavit.errors import InputError
from affidavit.models.export import Contract, parse_spec
from affidavit.models.odcs import CountedRule
from affidavit.services.exports import unique
from affidavit.services.exports.records import ContractCheck

DOC = """\
apiVersion: v3.1.0
kind: DataContract
id: counted
version: 1.0.0
status: active
schema:
  - name: customers
    logicalType: object
    properties:
      - name: _id
        logicalType: integer
        primaryKey: true
      - name: email
        logicalType: string
        quality:
          - metric: duplicateValues
            {dup}
      - name: country
        logicalType: string
        quality:
          - metric: invalidValues
            arguments: {{validValues: [FR, DE]}}
            {invalid}
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
email = "keep"
country = "keep"

[contract]
max_violations = 1000
odcs = '''
{doc}'''
"""


def contract(dup: str = "mustBeLessThan: 3", invalid: str = "mustBeLessOrEqualTo: 2") -> Contract:
    doc = DOC.format(dup=dup, invalid=invalid)
    return parse_spec(SPEC.format(doc=doc)).contract


def records(n: int, *, dups: int = 0, invalid: int = 0) -> list[dict[str, Any]]:
    """``n`` records, the last ``dups`` repeating the first emails, ``invalid`` with
    country XX; one null email and one missing country, never counted."""
    out: list[dict[str, Any]] = []
    for i in range(n):
        email: Any = f"p{i}@x.com" if i < n - dups else f"p{i - (n - dups)}@x.com"
        country = "XX" if i < invalid else "FR"
        out.append({"_id": {"$numberInt": str(i)}, "email": email, "country": country})
    out.append({"_id": {"$numberInt": "-1"}, "email": None, "country": "DE"})
    out.append({"_id": {"$numberInt": "-2"}, "email": None})
    return out


def run(c: Contract, docs: list[dict[str, Any]]) -> ContractCheck:
    check = ContractCheck(c, frozenset({"_id", "email", "country"}))
    shipped = sum(1 for d in docs if check.check(d))
    check.finish(shipped=shipped)
    return check


def test_the_rules_translate_to_counted_rules_and_back() -> None:
    c = contract()
    assert c.unique == ("_id",)  # the counted rules do not refuse records one by one
    assert "enum" not in c.schema["properties"]["country"]
    dup, inv = c.counted
    assert (dup.metric, dup.path, dup.unit, dup.high, dup.high_inclusive) == (
        "duplicateValues", "email", "rows", "3", False,
    )  # fmt: skip
    assert inv.valid == {"enum": ["FR", "DE", None]} and inv.high == "2"
    assert dup.limit_text() == "under 3 rows" and inv.limit_text() == "at most 2 rows"
    assert Contract.from_json(c.to_json()) == c
    assert contract(dup="mustBe: 2\n            unit: percent").counted[0].limit_text() == (
        "exactly 2%"
    )


def test_within_the_limits_passes_and_counts_are_named() -> None:
    check = run(contract(), records(20, dups=2, invalid=2))
    assert check.passed, check.violations
    result = check.to_json()
    assert result["failed_records"] == 0
    assert result["counted"] == [
        {"rule": "duplicateValues(email)", "metric": "duplicateValues", "field": "email",
         "limit": "under 3 rows", "count": 2, "records": 22, "passed": True},
        {"rule": "invalidValues(country)", "metric": "invalidValues", "field": "country",
         "limit": "at most 2 rows", "count": 2, "records": 22, "passed": True},
    ]  # fmt: skip


@pytest.mark.parametrize(("dups", "invalid"), [(3, 0), (0, 3)])
def test_one_over_a_limit_blocks_whatever_max_violations_says(dups: int, invalid: int) -> None:
    check = run(contract(), records(20, dups=dups, invalid=invalid))
    assert not check.passed
    assert check.failed_records == 0 and check.whole_failures == 1
    (violation,) = check.violations
    assert violation.key is None
    rule = "duplicateValues" if dups else "invalidValues"
    assert violation.rule == rule
    assert "3 record(s)" in violation.message and "of 22" in violation.message


@pytest.mark.parametrize(
    ("rule", "invalid", "passes"),
    [
        ("mustBeLessOrEqualTo: 10\n            unit: percent", 2, True),  # 2/20 = 10%
        ("mustBeLessOrEqualTo: 10\n            unit: percent", 3, False),  # 15%
        ("mustBeLessThan: 10\n            unit: percent", 2, False),  # 10% is not under 10%
        ("mustBeLessThan: 10\n            unit: percent", 1, True),
        ("mustBe: 10\n            unit: percent", 2, True),
        ("mustBe: 10\n            unit: percent", 1, False),  # a lower bound too
        ("mustBeLessThan: 10.0001\n            unit: percent", 2, True),
        ("mustBeLessOrEqualTo: 9.9999\n            unit: percent", 2, False),
        ("mustBe: 2", 2, True),
        ("mustBe: 2", 1, False),
    ],
)
def test_percent_and_exact_limits_at_the_boundary(rule: str, invalid: int, passes: bool) -> None:
    docs = records(18, invalid=invalid)  # 20 shipped: 18 + a null email + a missing country
    check = run(contract(invalid=rule), docs)
    assert check.passed is passes, check.violations


def test_duplicates_are_counted_past_the_memory_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(unique, "MEMORY_DIGESTS", 4)  # spills to SQLite and the Bloom filter
    check = run(contract(dup="mustBeLessOrEqualTo: 5"), records(50, dups=5))
    assert check.passed
    assert check.counted[0]["count"] == 5
    check = run(contract(dup="mustBeLessOrEqualTo: 5"), records(50, dups=6))
    assert not check.passed and check.counted[0]["count"] == 6


def test_a_record_that_fails_is_not_counted() -> None:
    docs = records(10, dups=2)
    docs.append({"_id": {"$numberInt": "0"}, "email": "p0@x.com", "country": "FR"})  # dup _id
    check = run(contract(dup="mustBeLessOrEqualTo: 2"), docs)
    assert check.failed_records == 1
    assert check.counted[0]["count"] == 2


@pytest.mark.parametrize(
    ("dup", "message"),
    [
        ("mustBeLessThan: 0", "fewer than 0 duplicateValues cannot be met"),
        ("mustBeLessThan: 101\n            unit: percent", "a percentage above 100"),
        ("mustBeLessThan: 3\n            arguments: {validValues: [a]}", "takes no arguments"),
    ],
)
def test_rules_that_cannot_be_met_are_refused(dup: str, message: str) -> None:
    with pytest.raises(InputError, match=message):
        contract(dup=dup)


def test_counted_invalid_values_need_something_to_count_by() -> None:
    doc = DOC.format(dup="mustBe: 0", invalid="mustBeLessThan: 3").replace(
        "arguments: {validValues: [FR, DE]}\n            ", ""
    )
    with pytest.raises(InputError, match="needs validValues or pattern"):
        parse_spec(SPEC.format(doc=doc))


def test_a_malformed_counted_rule_in_a_manifest_is_refused() -> None:
    good = CountedRule(metric="duplicateValues", path="email", unit="rows", high="3")
    assert CountedRule.from_json(good.to_json()) == good
    for bad in (
        {**good.to_json(), "metric": "nullValues"},
        {**good.to_json(), "unit": "bytes"},
        {**good.to_json(), "high": "NaN"},
        {**good.to_json(), "high": 3},
        {**good.to_json(), "valid": {"minimum": 1}},
    ):
        with pytest.raises(InputError):
            CountedRule.from_json(bad)
