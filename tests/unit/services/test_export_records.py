"""The export spec and what happens to each record: parsing refusals, every transform and its
edge cases, the contract's record and whole-output checks, the canonical line encoding."""

from __future__ import annotations

import json
from typing import Any

import pytest

from affidavit.crypto.pseudonyms import new_pseudonym_key
from affidavit.errors import FormatError, InputError
from affidavit.models.export import Transform, parse_spec
from affidavit.services.exports.records import ContractCheck, Minimiser, decode_line, encode_line

BASE = """
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
{fields}

{contract}
"""


def spec(fields: str = "", contract: str = "", **replace: str) -> Any:
    text = BASE.format(fields=fields, contract=contract)
    for old, new in replace.items():
        text = text.replace(old, new)
    return parse_spec(text)


@pytest.mark.parametrize(
    ("fields", "contract", "words"),
    [
        ('x = "scramble"', "", "unknown transform"),
        ('"a..b" = "keep"', "", "not a field name nor a dotted path"),  # a.b: nested
        ('"$where" = "keep"', "", "not a field name nor a dotted path"),
        ('x = { transform = "keep", width = 10 }', "", "belongs to the generalise"),
        ('x = { transform = "mask", keep = -1 }', "", "whole number"),
        ('x = { transform = "mask", colour = 1 }', "", "unknown key"),
        ("", '[contract]\nunique = ["y"]', "do not leave"),
        ("", "[contract.max_nulls]\ny = 0", "do not leave"),
        ("", "[contract]\nmin_records = true", "whole number"),
        ("", "[contract]\nhaste = 1", "unknown key"),
    ],
)
def test_a_spec_it_cannot_take_is_refused(fields: str, contract: str, words: str) -> None:
    with pytest.raises(InputError, match=words) as refused:
        spec(fields, contract)
    assert refused.value.hint


def test_the_spec_needs_its_parts() -> None:
    with pytest.raises(InputError, match="must list _id"):
        spec(**{'_id = "keep"': 'y = "keep"'})
    with pytest.raises(InputError, match="keep it or pseudonymise"):
        spec(**{'_id = "keep"': '_id = "mask"'})
    with pytest.raises(InputError, match="legal_basis"):
        spec(**{'"contract"\n': '"because"\n'})
    with pytest.raises(InputError, match="no \\[consent\\] table"):
        spec(**{'"contract"\n': '"consent"\n'})
    with pytest.raises(InputError, match="unknown format"):
        spec(**{'destination = "/tmp"': 'destination = "/tmp"\nformat = "xlsx"'})
    with pytest.raises(InputError, match="unknown key"):
        spec(**{'destination = "/tmp"': 'destination = "/tmp"\ndestiny = 1'})
    assert spec('y = "keep"').allowed == {"_id", "y"}


def _doc(**fields: Any) -> dict[str, Any]:
    return {"_id": {"$oid": "0123456789abcdef01234567"}, **fields}


def test_each_transform() -> None:
    s = spec(
        'email = { transform = "mask", keep = 3 }\n'
        'short = "mask"\n'
        'birth = "generalise"\n'
        'age = { transform = "generalise", width = 10 }\n'
        'price = { transform = "generalise", width = 5 }\n'
        'notes = "redact"\n'
        'token = "pseudonymise"\n'
    )
    key = new_pseudonym_key()
    m = Minimiser(s, key=key, context="r")
    out, dropped, refusals = m.apply(
        _doc(
            email="ab@example.com",
            short="abc",
            birth={"$date": {"$numberLong": "-86400000"}},  # 1969-12-31
            age={"$numberInt": "42"},
            price={"$numberDouble": "-2.5"},
            notes="secret",
            token={"$numberLong": "7"},
            secret="never leaves",
            missing_rule=None,
        )
    )
    assert refusals == []
    assert dropped == 2
    assert out["email"] == "***********com"
    assert out["short"] == "***"  # no longer than keep: all masked
    assert out["birth"] == {"$numberInt": "1969"}
    assert out["age"] == "40..50"
    assert out["price"] == "-5..0"
    assert out["notes"] is None
    assert (
        out["token"]
        == Minimiser(s, key=key, context="r").apply(_doc(token={"$numberLong": "7"}))[0]["token"]
    )
    assert (
        out["token"]
        != Minimiser(s, key=key, context="r2").apply(_doc(token={"$numberLong": "7"}))[0]["token"]
    )
    assert "secret" not in out
    assert m.seen >= {"email", "birth", "token"}


def test_a_value_a_transform_cannot_take_is_a_violation_of_its_record() -> None:
    s = spec('email = "mask"\nage = "generalise"\nx = { transform = "generalise", width = 2 }')
    m = Minimiser(s, key=None, context="r")
    out, _, refusals = m.apply(
        _doc(email={"$numberInt": "5"}, age={"$numberInt": "5"}, x="text", y=None)
    )
    assert sorted(refusals) == [
        "age: a number needs width to be generalised",
        "email: mask takes a string",
        "x: generalise takes a date or a number",
    ]
    assert set(out) == {"_id"}
    check = ContractCheck(s.contract, s.allowed)
    assert check.check(out, refusals) is False
    assert [v.rule for v in check.violations] == ["transform"] * 3
    assert all(v.key == '{"$oid":"0123456789abcdef01234567"}' for v in check.violations)
    with pytest.raises(InputError, match="recipient's key"):
        Minimiser(spec('t = "pseudonymise"'), key=None, context="r")
    assert Transform.PSEUDONYMISE.value == "pseudonymise"


def test_the_contract_checks_records_and_the_whole_output() -> None:
    s = spec(
        'y = "keep"\nz = "keep"',
        '[contract]\nmin_records = 1\nmax_records = 2\nunique = ["y"]\nmax_violations = 1\n'
        "[contract.max_nulls]\nz = 0\n"
        '[contract.schema]\ntype = "object"\nrequired = ["y"]\n'
        '[contract.schema.properties.y]\ntype = "integer"\nminimum = 0\n',
    )
    check = ContractCheck(s.contract, s.allowed)
    assert check.check(_doc(y={"$numberInt": "1"}, z="a"))
    assert not check.check(_doc(y={"$numberInt": "1"}, z=None))  # duplicate y
    assert not check.check(_doc(y={"$numberInt": "-3"}, z="b", w=1))  # schema + allow-list
    # a failing record is not shipped: its values count for neither uniqueness nor nulls
    assert check.check(_doc(y={"$numberInt": "-3"}, z=None)) is False  # schema only
    assert check.check(_doc(y={"$numberInt": "2"}, z=None))  # shipped, with a null z
    check.finish(shipped=4)
    rules = sorted({v.rule for v in check.violations})
    assert rules == ["allow-list", "max_nulls", "max_records", "schema", "unique"]
    assert [v.message for v in check.violations if v.rule == "max_nulls"] == [
        "z: 1 null or missing, at most 0"
    ]
    assert check.failed_records == 3
    assert check.whole_failures == 2
    assert not check.passed  # the output as a whole failed (and 3 > max_violations)
    empty = ContractCheck(s.contract, s.allowed)
    empty.finish(shipped=0)
    assert [v.rule for v in empty.violations] == ["min_records"]


def test_a_contract_schema_that_is_not_a_schema_is_refused() -> None:
    s = spec("", '[contract.schema]\ntype = "objekt"\n')
    with pytest.raises(InputError, match="JSON Schema is not valid"):
        ContractCheck(s.contract, s.allowed)


def test_the_line_encoding_round_trips_and_nothing_else_passes() -> None:
    doc = {"_id": "é", "n": {"$numberInt": "1"}, "a": [None, True]}
    line = encode_line(doc)
    assert line == '{"_id":"é","n":{"$numberInt":"1"},"a":[null,true]}\n'.encode()
    assert decode_line(line, 1) == doc
    for bad, words in (
        (b"\xff\n", "not valid UTF-8"),
        (b"[1]\n", "not a JSON object"),
        (b'{"_id": 1}\n', "canonical encoding"),
        (b'{"_id":1,"_id":2}\n', "canonical encoding"),
        (b'{"_id":NaN}\n', "not JSON"),
        (b'{"_id":1}', "canonical encoding"),
    ):
        with pytest.raises(FormatError, match=words):
            decode_line(bad, 1)
    assert json.loads(line) == doc


def test_csv_cells_read_back_as_the_values_they_were() -> None:
    from affidavit.services.exports.encodings import csv_cell, csv_value

    values: list[Any] = [
        "plain", "", "42", "null", "true", '"quoted"', " 1", "NaN", "a,b", 'say "hi"',
        "line\r\nbreak", "é ü", '{"$numberInt":"42"}', None, True,
        {"$numberInt": "42"}, {"$date": {"$numberLong": "0"}}, [1, "x", None], {"a": {"b": []}},
    ]  # fmt: skip
    for value in values:
        cell = csv_cell({"f": value}, "f")
        assert csv_value(cell) == (True, value), (value, cell)
    assert csv_cell({}, "f") == ""
    assert csv_value("") == (False, None)
    assert csv_cell({"f": "42"}, "f") == '"42"'
    assert csv_cell({"f": "plain"}, "f") == "plain"


def test_a_whole_output_failure_is_named_and_blocks_after_many_tolerated_records() -> None:
    s = spec(
        'y = "keep"',
        "[contract]\nmin_records = 500\nmax_violations = 1000\n"
        '[contract.schema]\ntype = "object"\nrequired = ["y"]\n',
    )
    check = ContractCheck(s.contract, s.allowed)
    for _ in range(150):  # more failing records than are named one by one
        assert not check.check(_doc())
    check.finish(shipped=0)
    assert check.failed_records == 150  # tolerated by max_violations ...
    assert [v.rule for v in check.violations if v.key is None] == ["min_records"]  # ... named
    assert not check.passed  # ... and the output as a whole still fails
