"""The record an export reads for one Redis key (services/exports/redis_input.py,
docs/exports.md "A Redis input"): every type, its canonical orders, binary bytes, hash field
names that cannot be document keys, the absolute expiry; and the spec's Redis selectors."""

from __future__ import annotations

import bson
import pytest
from bson.int64 import Int64

from affidavit.errors import FormatError, InputError
from affidavit.formats.bson_codec.extjson_fast import canonical_value, decode_document
from affidavit.formats.redis_documents import redis_document
from affidavit.models.export import parse_spec
from affidavit.models.records import RedisRecord


def _rec(key: bytes, kind: str, value: object, expire: int | None = None) -> RedisRecord:
    return RedisRecord(key=key, type=kind, value=value, expire_at_ms=expire)  # type: ignore[arg-type]


def _doc(record: RedisRecord) -> dict[str, object]:
    """The document as the export pass sees it: encoded, decoded, canonical."""
    decoded = decode_document(bson.encode(redis_document(record)))
    out: dict[str, object] = canonical_value(decoded)
    return out


def test_a_hash_is_a_sub_document_sorted_by_field() -> None:
    record = _rec(b"customer:1", "hash", ((b"b", b"2"), (b"a", b"1")), 1_900_000_000_000)
    doc = _doc(record)
    assert doc == {
        "_id": "customer:1",
        "type": "hash",
        "value": {"a": "1", "b": "2"},
        "expire_at_ms": {"$numberLong": "1900000000000"},
    }
    assert list(doc["value"]) == ["a", "b"]  # type: ignore[call-overload]


@pytest.mark.parametrize(
    "fields",
    [
        ((b"$where", b"x"), (b"a", b"1")),  # would read as an Extended JSON wrapper
        ((b"a\x00b", b"x"),),  # not a document key
        ((b"\xff", b"x"),),  # not UTF-8
    ],
)
def test_a_hash_whose_fields_cannot_be_keys_is_pairs(fields: tuple[tuple[bytes, bytes]]) -> None:
    value = _doc(_rec(b"h", "hash", fields))["value"]
    assert isinstance(value, list) and all(len(pair) == 2 for pair in value)
    assert len(value) == len(fields)


def test_every_type_in_its_canonical_order() -> None:
    assert _doc(_rec(b"s", "string", b"hello"))["value"] == "hello"
    assert _doc(_rec(b"l", "list", (b"b", b"a")))["value"] == ["b", "a"]
    assert _doc(_rec(b"t", "set", frozenset({b"b", b"a"})))["value"] == ["a", "b"]
    zset = _doc(_rec(b"z", "zset", ((b"y", 2.0), (b"x", -0.5))))["value"]
    assert zset == [
        {"member": "x", "score": {"$numberDouble": "-0.5"}},
        {"member": "y", "score": {"$numberDouble": "2.0"}},
    ]
    stream = _doc(_rec(b"q", "stream", ((b"1-1", ((b"f", b"v"),)),)))["value"]
    assert stream == [{"id": "1-1", "fields": {"f": "v"}}]
    assert _doc(_rec(b"s", "string", b"x"))["expire_at_ms"] is None


def test_bytes_that_are_not_utf8_are_binary() -> None:
    doc = _doc(_rec(b"k\xff", "string", b"\x00\xfe"))
    assert doc["_id"] == {"$binary": {"base64": "a/8=", "subType": "00"}}
    assert doc["value"] == {"$binary": {"base64": "AP4=", "subType": "00"}}
    assert isinstance(redis_document(_rec(b"k", "string", b"v", 5))["expire_at_ms"], Int64)


def test_a_type_an_export_cannot_read_is_bad_input() -> None:
    with pytest.raises(FormatError, match="module"):
        redis_document(_rec(b"m", "module", b"?"))


SPEC = """
name = "s"
purpose = "p"
legal_basis = "legitimate_interests"
recipient = "r"
destination = "/tmp"

[input]
source = "cache"
dataset = "db0"
{input}

{consent}

[fields]
_id = "keep"
"""


def _spec(input_: str = "", consent: str = "") -> str:
    return SPEC.format(input=input_, consent=consent)


def test_the_spec_reads_a_key_pattern_and_consent_sources() -> None:
    spec = parse_spec(_spec('key_pattern = "customer:*"'))
    assert spec.input.key_pattern is not None and spec.input.key_pattern.text == "customer:*"
    assert spec.input.to_json()["key_pattern"] == "customer:*"
    redis_consent = parse_spec(
        _spec(consent='[consent]\nsource = "cache"\nkey_pattern = "consent:*"')
    ).consent
    assert redis_consent is not None and redis_consent.dataset == "db0"
    assert redis_consent.to_json()["key_pattern"] == "consent:*"
    mongo_consent = parse_spec(
        _spec(consent='[consent]\nsource = "crm"\ndataset = "crm.consents"')
    ).consent
    assert mongo_consent is not None and mongo_consent.key_pattern is None
    assert mongo_consent.file is None


@pytest.mark.parametrize(
    ("input_", "consent", "words"),
    [
        ('key_pattern = "a*"\nfilter = { a = 1 }', "", "both a filter"),
        ("key_pattern = 3", "", "input.key_pattern must be a non-empty string"),
        ('key_pattern = ""', "", "input.key_pattern must be a non-empty string"),
        ("", '[consent]\nsubject_field = "_id"', "names no consent list"),
        ("", '[consent]\nsource = "crm"', "needs consent.dataset"),
        ("", '[consent]\nfile = "/f"\nsource = "crm"', "names a file and a source"),
        ("", '[consent]\nsource = "c"\nkey_pattern = "x\\u0000"', "holds a NUL"),
        ("", '[consent]\nsource = "c"\ntable = "t"', "unknown key(s) table"),
    ],
)
def test_bad_redis_selectors_are_refused(input_: str, consent: str, words: str) -> None:
    with pytest.raises(InputError) as caught:
        parse_spec(_spec(input_, consent))
    assert words in caught.value.message
    assert caught.value.hint
