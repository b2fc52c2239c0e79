"""Nested fields in the allow-list and transforms (issue 17): only the allowed leaves and the
documents holding them leave; arrays of documents are followed element by element (elements
without an allowed leaf are left out); transforms apply to the leaf; the contract's
allow-list check catches a nested field slipped in (at the source and at the destination);
``unique`` and ``max_nulls`` take dotted paths; the spec refuses what cannot work."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from affidavit.crypto.pseudonyms import new_pseudonym_key
from affidavit.errors import InputError
from affidavit.models.export import parse_spec
from affidavit.services.exports.records import ContractCheck, Minimiser

BASE = """
name = "s"
purpose = "research"
legal_basis = "contract"
recipient = "r"
destination = "/tmp"
{top}

[input]
source = "src"
dataset = "db.c"

[fields]
_id = "keep"
{fields}

{contract}
"""


def spec(fields: str, contract: str = "", top: str = "") -> Any:
    return parse_spec(BASE.format(fields=fields, contract=contract, top=top))


FIELDS = """
"address.city" = "keep"
"address.zip" = { transform = "mask", keep = 2 }
"orders.sku" = "keep"
"orders.paid" = "generalise"
"profile.contact.email" = "pseudonymise"
"""

DOC: dict[str, Any] = {
    "_id": 7,
    "name": "Ada",
    "address": {"street": "1 rue X", "city": "Paris", "zip": "75001"},
    "orders": [
        {"sku": "x", "price": 3, "paid": datetime(2021, 3, 4, tzinfo=UTC)},
        {"price": 4},  # no allowed leaf: left out
        "not a document",  # left out
        {"sku": "y"},
    ],
    "profile": {"contact": {"email": "ada@example.com", "phone": "1"}, "bio": "b"},
}


def _minimiser(fields: str = FIELDS) -> Minimiser:
    return Minimiser(spec(fields), key=new_pseudonym_key(), context="acme")


def test_only_the_allowed_leaves_and_their_parents_leave() -> None:
    m = _minimiser()
    out, dropped, refusals = m.apply_decoded(DOC)
    assert refusals == []
    assert list(out) == ["_id", "address", "orders", "profile"]
    assert out["address"] == {"city": "Paris", "zip": "***01"}
    assert out["orders"] == [{"sku": "x", "paid": {"$numberInt": "2021"}}, {"sku": "y"}]
    assert list(out["profile"]) == ["contact"]
    assert list(out["profile"]["contact"]) == ["email"]
    token = out["profile"]["contact"]["email"]
    assert isinstance(token, str) and len(token) == 64
    # name; street; the two prices (one in the element left out); the string; phone; bio
    assert dropped == 1 + 1 + 2 + 1 + 1 + 1
    assert m.seen == {
        "_id",
        "address.city",
        "address.zip",
        "orders.sku",
        "orders.paid",
        "profile.contact.email",
    }


def test_a_parent_that_is_not_a_document_or_holds_no_allowed_leaf_is_left_out() -> None:
    m = _minimiser()
    out, dropped, _ = m.apply_decoded(
        {"_id": 1, "address": "a string", "orders": [], "profile": {"bio": "x"}}
    )
    assert out == {"_id": {"$numberInt": "1"}}
    assert dropped == 2  # the string, bio (an empty array holds nothing to drop)


def test_the_canonical_path_does_not_mistake_a_type_wrapper_for_a_document() -> None:
    m = _minimiser('"age.years" = "keep"')
    out, dropped, _ = m.apply({"_id": {"$numberInt": "1"}, "age": {"$numberInt": "30"}})
    assert out == {"_id": {"$numberInt": "1"}}
    assert dropped == 1


def test_a_transform_refusal_on_a_leaf_names_the_path() -> None:
    m = _minimiser('"address.zip" = "mask"')
    _, _, refusals = m.apply_decoded({"_id": 1, "address": {"zip": 75001}})
    assert refusals == ["address.zip: mask takes a string"]


def test_the_allow_list_check_catches_a_nested_field_slipped_in() -> None:
    s = spec(FIELDS)
    check = ContractCheck(s.contract, s.allowed)
    assert check.check({"_id": 1, "address": {"city": "Paris"}, "orders": [{"sku": "x"}]})
    assert not check.check({"_id": 2, "address": {"city": "Paris", "street": "1 rue X"}})
    assert not check.check({"_id": 3, "orders": [{"sku": "x"}, {"sku": "y", "price": 3}]})
    assert not check.check({"_id": 4, "address": "whole, not a document"})
    assert not check.check({"_id": 5, "profile": {"contact": {"email": "e", "phone": "1"}}})
    listed = [v.message for v in check.violations]
    assert "address.street" in listed[0]
    assert "orders.price" in listed[1]
    assert "'address'" in listed[2]
    assert "profile.contact.phone" in listed[3]


def test_unique_and_max_nulls_take_dotted_paths() -> None:
    s = spec(
        '"address.city" = "keep"',
        contract='[contract]\nunique = ["address.city"]\n[contract.max_nulls]\n"address.city" = 1',
    )
    check = ContractCheck(s.contract, s.allowed)
    assert check.check({"_id": 1, "address": {"city": "Paris"}})
    assert not check.check({"_id": 2, "address": {"city": "Paris"}})  # duplicate
    assert check.check({"_id": 3, "address": {"city": "Oslo"}})
    assert check.check({"_id": 4})  # missing: a null
    assert check.check({"_id": 5, "address": {"city": None}})
    check.finish(shipped=4)
    assert [v.rule for v in check.violations] == ["unique", "max_nulls"]
    assert "2 null or missing" in check.violations[1].message


@pytest.mark.parametrize(
    ("fields", "contract", "top", "words"),
    [
        ('"address" = "keep"\n"address.city" = "keep"', "", "", "listed whole"),
        ('"_id.x" = "keep"', "", "", "_id is listed whole"),
        ('"a..b" = "keep"', "", "", "not a field name nor a dotted path"),
        ('"a.$b" = "keep"', "", "", "not a field name nor a dotted path"),
        ('"a.b.c.d.e.f.g.h.i" = "keep"', "", "", "at most 8"),
        ('address.city = "keep"', "", "", '"address.city" = "keep"'),  # unquoted: a table
        (
            '"address.town" = "keep"',
            "[contract.schema.properties.address]\n"
            'type = "object"\nadditionalProperties = false\n'
            '[contract.schema.properties.address.properties.city]\ntype = "string"',
            "",
            "allows no 'town' in address",
        ),
        (
            '"orders.qty" = "keep"',
            "[contract.schema.properties.orders]\n"
            'type = "array"\n[contract.schema.properties.orders.items]\n'
            'type = "object"\nadditionalProperties = false\n'
            '[contract.schema.properties.orders.items.properties.sku]\ntype = "string"',
            "",
            "allows no 'qty' in orders",
        ),
        (
            '"extra.x" = "keep"',
            "[contract.schema]\nadditionalProperties = false\n"
            '[contract.schema.properties._id]\ntype = "integer"',
            "",
            "allows no 'extra' in the record",
        ),
    ],
)
def test_spec_refusals(fields: str, contract: str, top: str, words: str) -> None:
    with pytest.raises(InputError) as caught:
        spec(fields, contract=contract, top=top)
    assert words in caught.value.message + (caught.value.hint or "")
    assert caught.value.exit_code == 2


def test_a_path_the_schema_names_is_accepted() -> None:
    s = spec(
        '"address.city" = "keep"',
        contract="[contract.schema.properties.address]\n"
        'type = "object"\nadditionalProperties = false\n'
        '[contract.schema.properties.address.properties.city]\ntype = "string"',
    )
    assert s.allowed == {"_id", "address.city"}
