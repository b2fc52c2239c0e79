"""The export spec's query filter: every refusal (server-side code operators first), and the
Python evaluator's MongoDB semantics on canonical Extended JSON values (type brackets, arrays,
dotted paths, $exists). Its equivalence with a real server's ``find`` is
``tests/integration/test_export_filter_mongo.py``."""

from __future__ import annotations

import tomllib
from datetime import UTC, datetime
from typing import Any

import pytest

from affidavit.errors import InputError
from affidavit.models.export import parse_spec
from affidavit.models.export_filter import QueryFilter


def parse(toml: str) -> QueryFilter:
    return QueryFilter.parse(tomllib.loads(f"filter = {toml}")["filter"])


def n(i: int) -> dict[str, str]:
    return {"$numberInt": str(i)}


DOC: dict[str, Any] = {
    "_id": n(1),
    "age": n(42),
    "score": {"$numberDouble": "2.5"},
    "big": {"$numberLong": "9000000000"},
    "price": {"$numberDecimal": "10.50"},
    "name": "Ada",
    "active": True,
    "born": {"$date": {"$numberLong": "0"}},
    "tags": ["a", "b"],
    "address": {"city": "Paris", "zip": "75001"},
    "orders": [{"sku": "x", "qty": n(2)}, {"sku": "y", "qty": n(5)}],
    "nothing": None,
}


@pytest.mark.parametrize(
    ("toml", "matched"),
    [
        ('{ name = "Ada" }', True),
        ('{ name = "ada" }', False),
        ("{ age = 42 }", True),
        ("{ age = 42.0 }", True),  # numbers compare by value across int/double
        ('{ price = { "$gt" = 10.4 } }', True),
        ('{ price = { "$gte" = 10.5, "$lt" = 10.6 } }', True),
        ('{ big = { "$gt" = 8999999999 } }', True),
        ('{ score = { "$lte" = 2 } }', False),
        ('{ age = { "$gt" = "40" } }', False),  # a string bound: another type bracket
        ('{ name = { "$gt" = "A" } }', True),
        ("{ active = true }", True),
        ("{ active = 1 }", False),  # a boolean is not a number
        ('{ tags = "b" }', True),  # an array offers its elements
        ('{ tags = { "$in" = ["z", "a"] } }', True),
        ('{ tags = { "$in" = [] } }', False),
        ('{ "address.city" = "Paris" }', True),
        ('{ "address.city" = { "$exists" = false } }', False),
        ('{ "address.country" = { "$exists" = false } }', True),
        ('{ "orders.sku" = "y" }', True),  # arrays of documents are followed
        ('{ "orders.qty" = { "$gt" = 4 } }', True),
        ('{ "orders.qty" = { "$gt" = 5 } }', False),
        ('{ nothing = { "$exists" = true } }', True),  # null exists
        ("{ born = 1970-01-01T00:00:00Z }", True),
        ('{ born = { "$lt" = 1970-01-01T00:00:01+00:00 } }', True),
        ('{ born = { "$gt" = 0 } }', False),  # a date is not a number
        ('{ "$or" = [ { name = "Bob" }, { age = { "$gte" = 40 } } ] }', True),
        ('{ "$and" = [ { name = "Ada" }, { age = { "$lt" = 40 } } ] }', False),
        ('{ name = "Ada", age = 41 }', False),
        ('{ name = { "$eq" = "Ada" } }', True),
        ('{ _id = { "$in" = [1, 2] } }', True),
    ],
)
def test_evaluator_semantics(toml: str, matched: bool) -> None:
    assert parse(toml).match(DOC) is matched


@pytest.mark.parametrize(
    ("toml", "named"),
    [
        ('{ "$where" = "this.a == 1" }', "$where"),
        ('{ "$expr" = [ { a = 1 } ] }', "$expr"),
        ('{ a = { "$function" = "x" } }', "$function"),
        ('{ a = { "$accumulator" = "x" } }', "$accumulator"),
        ('{ a = { "$regex" = "^x" } }', "$regex"),
        ('{ a = { "$ne" = 1 } }', "$ne"),
        ('{ "$nor" = [ { a = 1 } ] }', "$nor"),
        ('{ "$or" = [ { a = { "$where" = "1" } } ] }', "$where"),
        ("{ a = { b = 1 } }", "equality with a document"),
        ('{ a = { "$gt" = 1, b = 1 } }', "mixes operators"),
        ("{ a = [1, 2] }", "a list is not a filter value"),
        ('{ a = { "$in" = 1 } }', "$in takes a list"),
        ('{ a = { "$exists" = 1 } }', "$exists takes true or false"),
        ('{ "$or" = [] }', "non-empty list"),
        ("{ a = nan }", "NaN"),
        ("{ a = 1970-01-01T00:00:00 }", "needs an offset"),
        ('{ "a.0" = 1 }', "array position"),
        ('{ "a..b" = 1 }', "not a field path"),
        ("{}", "is empty"),
    ],
)
def test_refusals_name_what_is_wrong(toml: str, named: str) -> None:
    with pytest.raises(InputError) as caught:
        parse(toml)
    assert named in caught.value.message
    assert caught.value.exit_code == 2
    assert caught.value.hint


def test_deep_nesting_is_refused() -> None:
    raw: dict[str, Any] = {"a": 1}
    for _ in range(20):
        raw = {"$and": [raw]}
    with pytest.raises(InputError, match="nest deeper"):
        QueryFilter.parse(raw)


def test_manifest_form_is_canonical_extended_json_without_floats() -> None:
    flt = parse('{ a = 1.5, b = 3, c = 2026-01-01T00:00:00Z, d = { "$in" = ["x", 5000000000] } }')
    assert flt.to_json() == {
        "a": {"$numberDouble": "1.5"},
        "b": {"$numberInt": "3"},
        "c": {
            "$date": {"$numberLong": str(int(datetime(2026, 1, 1, tzinfo=UTC).timestamp()) * 1000)}
        },
        "d": {"$in": ["x", {"$numberLong": "5000000000"}]},
    }
    assert flt.fields == frozenset({"a", "b", "c", "d"})


SPEC = """
name = "s"
purpose = "research"
legal_basis = "contract"
recipient = "r"
destination = "/tmp"

[input]
source = "src"
dataset = "db.c"
{extra}

[fields]
_id = "keep"
"""


def test_spec_carries_the_filter_and_refuses_bad_ones_and_unknown_input_keys() -> None:
    spec = parse_spec(SPEC.format(extra='filter = { age = { "$gte" = 18 } }'))
    assert spec.input.filter is not None
    assert spec.input.to_json()["filter"] == {"age": {"$gte": {"$numberInt": "18"}}}
    with pytest.raises(InputError, match=r"\$where"):
        parse_spec(SPEC.format(extra='filter = { "$where" = "sleep(1000)" }'))
    with pytest.raises(InputError, match="unknown key"):
        parse_spec(SPEC.format(extra="query = { a = 1 }"))


def test_input_from_live_or_backup() -> None:
    live = parse_spec(SPEC.format(extra='from = "live"'))
    assert live.input.live and live.input.to_json() == {
        "source": "src",
        "dataset": "db.c",
        "from": "live",
    }
    assert not parse_spec(SPEC.format(extra="")).input.live
    with pytest.raises(InputError, match='must be "backup" or "live"'):
        parse_spec(SPEC.format(extra='from = "replica"'))
    with pytest.raises(InputError, match=r"input\.backup names a backup"):
        parse_spec(SPEC.format(extra='from = "live"\nbackup = "b-1"'))
