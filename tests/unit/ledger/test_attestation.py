"""in-toto Statement v1 attestations in DSSE envelopes."""

from __future__ import annotations

import json
from typing import Any

import pytest

from affidavit.crypto.digest import sha256_hex
from affidavit.crypto.dsse import Envelope, sign_envelope
from affidavit.crypto.signing import SigningKey
from affidavit.errors import FormatError, IntegrityError
from affidavit.ledger.attestation import (
    BACKUP_PREDICATE_TYPE,
    DRILL_PREDICATE_TYPE,
    EXPORT_PREDICATE_TYPE,
    IN_TOTO_PAYLOAD_TYPE,
    PREDICATE_TYPES,
    STATEMENT_TYPE,
    VERIFICATION_PREDICATE_TYPE,
    Statement,
    Subject,
    attest,
    verify_attestation,
)

KEY = SigningKey.from_private_bytes(b"\x42" * 32)
OTHER = SigningKey.from_private_bytes(b"\x43" * 32)
KEYS = {"ledger-1": KEY.public_key}
DIGEST = sha256_hex(b"artifact bytes")
STATEMENT = Statement(
    subjects=(Subject("backups/2024-05-01/users.bson.age", DIGEST),),
    predicate_type=BACKUP_PREDICATE_TYPE,
    predicate={"backup_id": "b-1", "records": 3, "datasets": ["users"], "z": None, "a": True},
)


def test_predicate_types() -> None:
    assert BACKUP_PREDICATE_TYPE == "https://affidavit.dev/attestations/backup/v1"
    assert VERIFICATION_PREDICATE_TYPE == "https://affidavit.dev/attestations/verification/v1"
    assert DRILL_PREDICATE_TYPE == "https://affidavit.dev/attestations/drill/v1"
    assert EXPORT_PREDICATE_TYPE == "https://affidavit.dev/attestations/export/v1"
    assert len(set(PREDICATE_TYPES)) == 4


def test_round_trip() -> None:
    envelope = attest(STATEMENT, KEY, "ledger-1")
    assert envelope.payload_type == IN_TOTO_PAYLOAD_TYPE
    parsed = Envelope.from_json(envelope.to_json())
    assert verify_attestation(parsed, KEYS) == STATEMENT
    assert verify_attestation(parsed, KEYS, predicate_type=BACKUP_PREDICATE_TYPE) == STATEMENT


def test_payload_is_rfc8785_canonical_in_toto() -> None:
    payload = STATEMENT.to_json()
    data = json.loads(payload)
    assert data["_type"] == STATEMENT_TYPE
    assert data["subject"] == [
        {"name": "backups/2024-05-01/users.bson.age", "digest": {"sha256": DIGEST}}
    ]
    assert data["predicateType"] == BACKUP_PREDICATE_TYPE
    expected = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert payload == expected.encode()
    assert Statement.from_json(payload) == STATEMENT


def test_predicate_is_copied_and_read_only() -> None:
    predicate: dict[str, Any] = {"n": [1, 2]}
    statement = Statement(
        subjects=(Subject("a", DIGEST),), predicate_type=DRILL_PREDICATE_TYPE, predicate=predicate
    )
    predicate["n"].append(3)
    assert statement.predicate == {"n": [1, 2]}
    with pytest.raises(TypeError):
        statement.predicate["x"] = 1  # type: ignore[index]


def test_tampered_payload() -> None:
    envelope = attest(STATEMENT, KEY, "ledger-1")
    payload = envelope.payload.replace(b'"records":3', b'"records":4')
    assert payload != envelope.payload
    forged = Envelope(
        payload=payload, payload_type=IN_TOTO_PAYLOAD_TYPE, signatures=envelope.signatures
    )
    with pytest.raises(IntegrityError):
        verify_attestation(forged, KEYS)


def test_wrong_key() -> None:
    with pytest.raises(IntegrityError):
        verify_attestation(attest(STATEMENT, OTHER, "ledger-1"), KEYS)


def test_no_signatures() -> None:
    envelope = Envelope(payload=STATEMENT.to_json(), payload_type=IN_TOTO_PAYLOAD_TYPE)
    with pytest.raises(IntegrityError):
        verify_attestation(envelope, KEYS)


def test_wrong_payload_type() -> None:
    envelope = sign_envelope(STATEMENT.to_json(), "application/json", KEY, "ledger-1")
    with pytest.raises(FormatError, match="payload type"):
        verify_attestation(envelope, KEYS)


def test_wrong_predicate_type() -> None:
    with pytest.raises(FormatError, match="predicate type"):
        verify_attestation(
            attest(STATEMENT, KEY, "ledger-1"), KEYS, predicate_type=EXPORT_PREDICATE_TYPE
        )


@pytest.mark.parametrize(
    "digest",
    [
        pytest.param(DIGEST.upper(), id="uppercase"),
        pytest.param(DIGEST[:-1], id="short"),
        pytest.param(DIGEST + "0", id="long"),
        pytest.param("g" * 64, id="not-hex"),
        pytest.param("", id="empty"),
    ],
)
def test_bad_subject_digest(digest: str) -> None:
    with pytest.raises(FormatError):
        Subject("artifact", digest)


def test_no_subjects() -> None:
    with pytest.raises(FormatError, match="at least one subject"):
        Statement(subjects=(), predicate_type=BACKUP_PREDICATE_TYPE)


def test_predicate_that_is_not_canonical_json() -> None:
    for bad in ({"x": float("nan")}, {"x": 2**60}, {"x": object()}):
        with pytest.raises(FormatError):
            Statement(
                subjects=(Subject("a", DIGEST),),
                predicate_type=BACKUP_PREDICATE_TYPE,
                predicate=bad,
            )


def _signed(statement: dict[str, Any]) -> Envelope:
    payload = json.dumps(statement).encode()
    return sign_envelope(payload, IN_TOTO_PAYLOAD_TYPE, KEY, "ledger-1")


GOOD: dict[str, Any] = {
    "_type": STATEMENT_TYPE,
    "subject": [{"name": "a", "digest": {"sha256": DIGEST}}],
    "predicateType": BACKUP_PREDICATE_TYPE,
    "predicate": {},
}


@pytest.mark.parametrize(
    ("field", "value"),
    [
        pytest.param("_type", "https://in-toto.io/Statement/v0.1", id="old-statement-type"),
        pytest.param("subject", [], id="no-subjects"),
        pytest.param("subject", {"name": "a"}, id="subject-object"),
        pytest.param("subject", [{"name": "a", "digest": {"sha512": "00"}}], id="no-sha256"),
        pytest.param("subject", [{"name": "a", "digest": {"sha256": "AB" * 32}}], id="bad-digest"),
        pytest.param("subject", [{"digest": {"sha256": DIGEST}}], id="no-name"),
        pytest.param("subject", ["a"], id="subject-string"),
        pytest.param("predicateType", 3, id="predicate-type-number"),
        pytest.param("predicateType", "", id="empty-predicate-type"),
        pytest.param("predicate", [1], id="predicate-list"),
    ],
)
def test_signed_but_malformed_statement(field: str, value: object) -> None:
    with pytest.raises(FormatError):
        verify_attestation(_signed({**GOOD, field: value}), KEYS)


def test_signed_payload_that_is_not_json() -> None:
    envelope = sign_envelope(b"\xff not json", IN_TOTO_PAYLOAD_TYPE, KEY, "ledger-1")
    with pytest.raises(FormatError):
        verify_attestation(envelope, KEYS)


def test_non_canonical_but_valid_statement_is_accepted() -> None:
    statement = verify_attestation(_signed(GOOD), KEYS)
    assert statement.subjects == (Subject("a", DIGEST),)
