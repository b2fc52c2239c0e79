"""The planned, compiled record path of exports gives the outcome of the general one: the
compiled check of a JSON Schema's subset never passes a record that jsonschema fails, the
per-field closures of the minimiser equal the transforms applied to the whole canonical
document, and the fast RFC 8785 bytes of a plain string are the serialiser's."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from typing import Any

import bson
import jsonschema
import pytest
import rfc8785

from affidavit.formats.bson_codec.extjson_fast import decode_document
from affidavit.formats.extjson_documents import canonical_document
from affidavit.models.export import parse_spec
from affidavit.services.exports.records import (
    ContractCheck,
    Minimiser,
    _canonical_text,
    _unique_bytes,
    compile_schema,
)

SCHEMAS: list[dict[str, Any]] = [
    {"type": "object", "required": ["a"], "properties": {"a": {"type": "integer"}}},
    {"properties": {"a": {"type": ["string", "null"], "minLength": 2, "maxLength": 4}}},
    {"properties": {"a": {"enum": ["x", 1, True, None]}}},
    {"properties": {"a": {"const": 1}}},
    {"properties": {"a": {"type": "number", "minimum": 0, "exclusiveMaximum": 10}}},
    {"properties": {"a": {"pattern": "^[a-z]+$"}}, "additionalProperties": False},
    {"properties": {"a": {"type": "boolean"}, "b": {"type": "array"}}, "required": ["b"]},
    {"title": "annotated", "description": "d", "properties": {"a": {"format": "email"}}},
    {"properties": {"a": {"type": "object", "properties": {"b": {"maximum": 3}}}}},
]
VALUES: list[Any] = [
    None, True, False, 0, 1, 1.0, 2.5, -3, 10, 11, "", "x", "ab", "abcde", "AB", "a1",
    [], [1], {}, {"b": 2}, {"b": 4}, {"b": "s"},
]  # fmt: skip


@pytest.mark.parametrize("schema", SCHEMAS)
def test_compiled_subset_never_passes_what_jsonschema_fails(schema: dict[str, Any]) -> None:
    fast = compile_schema(schema)
    assert fast is not None  # every schema here is in the subset
    validator = jsonschema.validators.validator_for(schema)(schema)
    rng = random.Random(3)
    agreed = 0
    for _ in range(400):
        instance = {k: rng.choice(VALUES) for k in rng.sample(["a", "b", "c"], rng.randrange(4))}
        valid = validator.is_valid(instance)
        if fast(instance):
            assert valid, (schema, instance)
        agreed += fast(instance) == valid
    assert agreed > 300  # the fast path decides most records itself


def test_schemas_outside_the_subset_are_not_compiled() -> None:
    for schema in (
        {"$ref": "#/defs/x"},
        {"properties": {"a": {"items": {"type": "string"}}}},
        {"additionalProperties": {"type": "string"}},
        {"properties": {"a": {"enum": [{"x": 1}]}}},
        {"properties": {"a": {"exclusiveMinimum": True}}},
    ):
        assert compile_schema(schema) is None


SPEC = """
name = "s"
purpose = "p"
legal_basis = "contract"
recipient = "r"
destination = "/tmp"
[input]
source = "src"
dataset = "db.c"
[fields]
_id = "pseudonymise"
email = {{ transform = "mask", keep = 3 }}
birth = "generalise"
age = {{ transform = "generalise", width = 10 }}
country = "keep"
notes = "redact"
[contract]
unique = ["country"]
max_violations = 100
[contract.schema]
{schema}
"""


def _docs() -> list[bytes]:
    rng = random.Random(9)
    out = []
    for n in range(300):
        doc: dict[str, Any] = {"_id": rng.choice([n, f"id-{n}", bson.ObjectId(f"{n:024x}")])}
        for name, values in (
            ("email", [f"p{n}@x.org", "", 5, None, 'é"\\']),
            ("birth", [datetime(1950 + n % 60, 1, 2, tzinfo=UTC), 1.5, "1990", None]),
            ("age", [n % 90, 2**40 + n, 12.5, float("nan"), "x"]),
            ("country", ["FR", "DE", n, None, ["FR"]]),
            ("notes", ["secret", {"a": 1}]),
            ("extra", [1, "dropped"]),
        ):
            if rng.random() < 0.9:
                doc[name] = rng.choice(values)
        out.append(bson.encode(doc))
    return out


@pytest.mark.parametrize(
    "schema",
    [
        'type = "object"\nrequired = ["_id", "country"]\n'
        '[contract.schema.properties.country]\ntype = "string"\nenum = ["FR", "DE"]',
        '[contract.schema.properties.age]\ntype = "string"\npattern = "^[0-9]+[.][.]"',
        '[contract.schema.properties.email]\nitems = { type = "string" }',  # not compiled
    ],
)
def test_planned_path_equals_the_general_path(schema: str) -> None:
    spec = parse_spec(SPEC.format(schema=schema), name="t")
    key = b"k" * 32
    fast_min, slow_min = (Minimiser(spec, key=key, context="r") for _ in range(2))
    fast_check = ContractCheck(spec.contract, spec.allowed)
    slow_check = ContractCheck(spec.contract, spec.allowed)
    slow_check._fast = None  # jsonschema for every record: the reference
    for raw in _docs():
        fast = fast_min.apply_decoded(decode_document(raw))
        slow = slow_min.apply(canonical_document(raw))
        assert fast == slow
        assert fast_check.check(fast[0], fast[2]) == slow_check.check(slow[0], slow[2])
    fast_check.finish(shipped=1)
    slow_check.finish(shipped=1)
    assert fast_check.to_json() == slow_check.to_json()
    assert fast_min.seen == slow_min.seen
    assert fast_check.failed_records > 0  # the documents break the contract in places


def test_fast_canonical_text_is_rfc8785() -> None:
    for text in ("plain", "", "with space", 'q"uote', "back\\slash", "tab\t", "é", "\x7f", "~"):
        assert _canonical_text(text) == rfc8785.dumps(text)
    assert _canonical_text({"$numberInt": "1"}) == rfc8785.dumps({"$numberInt": "1"})


def test_unique_bytes_tell_values_apart_as_rfc8785_does() -> None:
    values: list[Any] = ["1", {"$numberInt": "1"}, {"$oid": "a"}, {"a": "1", "b": "2"}]
    values += [{"b": "2", "a": "1"}, [1], "", {"$numberLong": "1"}, {"a": {"b": "1"}}]
    for a in values:
        for b in values:
            assert (_unique_bytes(a) == _unique_bytes(b)) == (rfc8785.dumps(a) == rfc8785.dumps(b))


SIV_SPEC = """
name = "s"
purpose = "p"
legal_basis = "contract"
recipient = "r"
destination = "/tmp"
[input]
source = "src"
dataset = "db.c"
[fields]
_id = "keep"
email = {{ transform = "pseudonymise", algorithm = "{algorithm}" }}
"""


def test_aes_siv_pseudonyms_are_deterministic_per_recipient_and_reversible() -> None:
    from affidavit.crypto.pseudonym_siv import SivPseudonyms
    from affidavit.errors import IntegrityError

    spec = parse_spec(SIV_SPEC.format(algorithm="aes-siv"), name="t")
    assert spec.field_rule("email").to_json() == {  # type: ignore[union-attr]
        "name": "email",
        "transform": "pseudonymise",
        "algorithm": "aes-siv",
    }
    key, other_key = b"k" * 32, b"o" * 32
    doc = {"_id": {"$numberInt": "1"}, "email": "a@b.org"}

    def token(k: bytes, context: str, value: Any = "a@b.org") -> str:
        out, _, refusals = Minimiser(spec, key=k, context=context).apply({**doc, "email": value})
        assert refusals == []
        return str(out["email"])

    first = token(key, "acme")
    assert token(key, "acme") == first  # deterministic
    assert token(key, "zeta") != first  # per recipient context
    assert token(other_key, "acme") != first  # per recipient key
    assert token(key, "acme", "c@d.org") != first
    assert len(first) == 2 * (16 + len(b'"a@b.org"'))
    siv = SivPseudonyms(key)
    assert siv.reveal("acme", "email", first) == b'"a@b.org"'  # the key holder can reverse it
    for context, name, tok in (("zeta", "email", first), ("acme", "name", first)):
        with pytest.raises(IntegrityError):
            siv.reveal(context, name, tok)
    with pytest.raises(IntegrityError):
        SivPseudonyms(other_key).reveal("acme", "email", first)
    # HMAC (the default) and AES-SIV tokens differ
    hmac_spec = parse_spec(SIV_SPEC.format(algorithm="hmac-sha256"), name="t")
    assert Minimiser(hmac_spec, key=key, context="acme").apply(doc)[0]["email"] != first


def test_an_unknown_or_misplaced_algorithm_is_refused() -> None:
    from affidavit.errors import InputError

    with pytest.raises(InputError, match="unknown algorithm"):
        parse_spec(SIV_SPEC.format(algorithm="rot13"), name="t")
    bad = SIV_SPEC.format(algorithm="aes-siv").replace('"pseudonymise"', '"mask"')
    with pytest.raises(InputError, match="pseudonymise transform only"):
        parse_spec(bad, name="t")


def test_the_keyed_hmac_gives_the_pseudonyms_of_pseudonym() -> None:
    from affidavit.crypto.pseudonym_hmac import field_pseudonymiser
    from affidavit.crypto.pseudonyms import pseudonym

    key = bytes(range(32))
    token = field_pseudonymiser(key, "acme", "email")
    for value in (b'"a@b.org"', b"", b"\x00" * 100, '"é"'.encode()):
        assert token(value) == pseudonym(key, "acme", "email", value)
    assert field_pseudonymiser(key, "acme", "name")(b"x") == pseudonym(key, "acme", "name", b"x")
    assert field_pseudonymiser(key, "zeta", "email")(b"x") != token(b"x")
    with pytest.raises(ValueError, match="32 bytes"):
        field_pseudonymiser(b"short", "acme", "email")
