"""The subject of an input record for consent (issue 17): one rule for a top-level field and
a dotted path, on the decoded record (before minimisation)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import bson
import pytest
from bson import ObjectId
from bson.int64 import Int64

from affidavit.formats.bson_codec.extjson_fast import decode_document
from affidavit.services.exports.consent import (
    NO_CONSENT,
    SUBJECT_MISSING,
    Consents,
    subject_of,
)

OID = ObjectId("65a1b2c3d4e5f60718293a4b")


def decoded(document: dict[str, Any]) -> dict[str, Any]:
    return decode_document(bson.encode(document))


@pytest.mark.parametrize(
    ("value", "text"),
    [
        ("p1", "p1"),
        (7, "7"),
        (Int64(2**40), str(2**40)),
        (OID, str(OID)),
        (1.5, '{"$numberDouble":"1.5"}'),  # not a subject any consent names
        (None, None),
        ([1], None),
        ({"x": 1}, None),
    ],
)
def test_one_rule_top_level_and_nested(value: Any, text: str | None) -> None:
    assert subject_of(decoded({"_id": 1, "s": value}), "s") == text
    assert subject_of(decoded({"_id": 1, "a": {"b": {"s": value}}}), "a.b.s") == text


@pytest.mark.parametrize(
    "document",
    [
        {"_id": 1},
        {"_id": 1, "a": "string"},
        {"_id": 1, "a": [{"s": "p1"}]},  # never through an array
        {"_id": 1, "a": {"x": "p1"}},
        {"_id": 1, "a": None},
    ],
)
def test_a_path_that_leads_nowhere_names_no_subject(document: dict[str, Any]) -> None:
    assert subject_of(decoded(document), "a.s") is None
    consents = Consents(path=None, purpose="p")
    consents.add("p1", "p", datetime(2020, 1, 1, tzinfo=UTC), None)
    now = datetime.now(UTC)
    assert consents.judge_record(decoded(document), "a.s", now) == SUBJECT_MISSING
    assert consents.judge_record(decoded({"_id": 1, "a": {"s": "p1"}}), "a.s", now) is None
    assert consents.judge_record(decoded({"_id": 1, "a": {"s": "p2"}}), "a.s", now) == NO_CONSENT
