"""DSSE v1 envelopes: PAE, round trip and attacks."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from affidavit.crypto.dsse import Envelope, Signature, pae, sign_envelope, verify_envelope
from affidavit.crypto.signing import SigningKey
from affidavit.errors import FormatError, IntegrityError

KEY = SigningKey.from_private_bytes(bytes(range(32)))
OTHER = SigningKey.from_private_bytes(bytes(range(1, 33)))
TYPE = "application/vnd.example+json"


def test_pae_of_the_spec_example() -> None:
    assert pae("http://example.com/HelloWorld", b"hello world") == (
        b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"
    )


def test_pae_counts_bytes_not_characters() -> None:
    assert pae("t\u00e9", b"") == "DSSEv1 3 t\u00e9 0 ".encode()


def test_round_trip() -> None:
    envelope = sign_envelope(b'{"a":1}', TYPE, KEY, "k1")
    parsed = Envelope.from_json(envelope.to_json())
    assert parsed == envelope
    assert verify_envelope(parsed, {"k1": KEY.public_key}) == b'{"a":1}'


def test_json_form_is_standard_dsse() -> None:
    envelope = sign_envelope(b"hello", TYPE, KEY, "k1")
    data = json.loads(envelope.to_json())
    assert set(data) == {"payload", "payloadType", "signatures"}
    assert base64.b64decode(data["payload"]) == b"hello"
    assert data["payloadType"] == TYPE
    assert data["signatures"][0]["keyid"] == "k1"
    assert KEY.public_key.verify(
        pae(TYPE, b"hello"), base64.b64decode(data["signatures"][0]["sig"])
    )


def test_url_safe_and_unpadded_base64_is_accepted() -> None:
    payload = b"\xfb\xff\xfe"  # standard base64 '+//+', URL-safe '-__-'
    envelope = sign_envelope(payload, TYPE, KEY, "k1")
    data = json.loads(envelope.to_json())
    data["payload"] = base64.urlsafe_b64encode(payload).decode().rstrip("=")
    data["signatures"][0]["sig"] = data["signatures"][0]["sig"].rstrip("=")
    assert verify_envelope(Envelope.from_json(json.dumps(data)), {"k1": KEY.public_key}) == payload


def test_tampered_payload_is_rejected() -> None:
    envelope = sign_envelope(b"amount=1", TYPE, KEY, "k1")
    forged = Envelope(payload=b"amount=9", payload_type=TYPE, signatures=envelope.signatures)
    with pytest.raises(IntegrityError):
        verify_envelope(forged, {"k1": KEY.public_key})


def test_tampered_payload_type_is_rejected() -> None:
    envelope = sign_envelope(b"x", TYPE, KEY, "k1")
    forged = Envelope(payload=b"x", payload_type="text/plain", signatures=envelope.signatures)
    with pytest.raises(IntegrityError):
        verify_envelope(forged, {"k1": KEY.public_key})


def test_wrong_key_is_rejected() -> None:
    envelope = sign_envelope(b"x", TYPE, KEY, "k1")
    with pytest.raises(IntegrityError):
        verify_envelope(envelope, {"k1": OTHER.public_key})


def test_unknown_keyid_is_rejected() -> None:
    envelope = sign_envelope(b"x", TYPE, KEY, "k1")
    with pytest.raises(IntegrityError, match="no signature by a trusted key"):
        verify_envelope(envelope, {"k2": KEY.public_key})


def test_no_signatures_is_rejected() -> None:
    envelope = Envelope(payload=b"x", payload_type=TYPE, signatures=())
    with pytest.raises(IntegrityError, match="no signatures"):
        verify_envelope(envelope, {"k1": KEY.public_key})
    assert Envelope.from_json(envelope.to_json()) == envelope


def test_no_trusted_keys_is_rejected() -> None:
    with pytest.raises(IntegrityError):
        verify_envelope(sign_envelope(b"x", TYPE, KEY, "k1"), {})


def test_one_good_signature_among_bad_ones_is_enough() -> None:
    good = sign_envelope(b"x", TYPE, KEY, "k1")
    bad = Signature("k2", b"\0" * 64)
    envelope = Envelope(payload=b"x", payload_type=TYPE, signatures=(bad, *good.signatures))
    keys = {"k1": KEY.public_key, "k2": OTHER.public_key}
    assert verify_envelope(envelope, keys) == b"x"


def test_signatures_accept_plain_tuples() -> None:
    good = sign_envelope(b"x", TYPE, KEY, "k1")
    plain: Any = (("k1", good.signatures[0].sig),)
    envelope = Envelope(payload=b"x", payload_type=TYPE, signatures=plain)
    assert isinstance(envelope.signatures[0], Signature)
    assert envelope == good


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("", id="empty"),
        pytest.param("not json", id="not-json"),
        pytest.param("[]", id="array"),
        pytest.param('{"payloadType": "t", "signatures": []}', id="missing-payload"),
        pytest.param('{"payload": "", "signatures": []}', id="missing-type"),
        pytest.param('{"payload": "", "payloadType": "t"}', id="missing-signatures"),
        pytest.param('{"payload": 1, "payloadType": "t", "signatures": []}', id="payload-number"),
        pytest.param('{"payload": "***", "payloadType": "t", "signatures": []}', id="bad-base64"),
        pytest.param('{"payload": "", "payloadType": "t", "signatures": {}}', id="sigs-object"),
        pytest.param('{"payload": "", "payloadType": "t", "signatures": [1]}', id="sig-number"),
        pytest.param('{"payload": "", "payloadType": "t", "signatures": [{}]}', id="sig-missing"),
        pytest.param(
            '{"payload": "", "payloadType": "t", "signatures": [{"sig": "@@"}]}', id="sig-base64"
        ),
        pytest.param(
            '{"payload": "", "payloadType": "t", "signatures": [{"sig": "", "keyid": 3}]}',
            id="keyid-number",
        ),
    ],
)
def test_malformed_json_is_rejected(text: str) -> None:
    with pytest.raises(FormatError):
        Envelope.from_json(text)
