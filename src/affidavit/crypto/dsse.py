"""DSSE v1 envelopes (Dead Simple Signing Envelope) with Ed25519.

A signature covers the pre-authentication encoding of the payload type and payload::

    PAE(type, body) = "DSSEv1" SP LEN(type) SP type SP LEN(body) SP body

where ``LEN`` is the byte length in ASCII decimal and ``type`` is UTF-8. The JSON form is
``{"payload": <base64>, "payloadType": <str>, "signatures": [{"keyid": <str>, "sig": <base64>}]}``.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

from affidavit.crypto.signing import SigningKey, VerifyingKey
from affidavit.errors import FormatError, IntegrityError

__all__ = ["Envelope", "Signature", "pae", "sign_envelope", "verify_envelope"]

_MAX_ENVELOPE_SIZE = 64 * 1024 * 1024


def pae(payload_type: str, payload: bytes) -> bytes:
    """Return the DSSE v1 pre-authentication encoding of ``payload_type`` and ``payload``."""
    type_bytes = payload_type.encode("utf-8")
    return b"DSSEv1 %d %b %d %b" % (len(type_bytes), type_bytes, len(payload), payload)


class Signature(NamedTuple):
    """One DSSE signature: the key ID hint and the raw signature bytes."""

    keyid: str
    sig: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class Envelope:
    """A DSSE envelope: payload bytes, payload type and signatures (keyword-only)."""

    payload: bytes
    payload_type: str
    signatures: tuple[Signature, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "signatures", tuple(Signature(*s) for s in self.signatures))

    def to_json(self) -> str:
        """Return the standard DSSE JSON form (standard padded base64)."""
        return json.dumps(
            {
                "payload": _b64encode(self.payload),
                "payloadType": self.payload_type,
                "signatures": [
                    {"keyid": s.keyid, "sig": _b64encode(s.sig)} for s in self.signatures
                ],
            },
            separators=(",", ":"),
            ensure_ascii=False,
        )

    @classmethod
    def from_json(cls, text: str | bytes) -> Envelope:
        """Parse the DSSE JSON form; raises :class:`FormatError` when it is malformed.

        Standard and URL-safe base64 are accepted, with or without padding; a missing
        ``keyid`` reads as ``""``. Unknown fields are ignored.
        """
        if len(text) > _MAX_ENVELOPE_SIZE:
            raise FormatError("DSSE envelope is too large")
        try:
            data: Any = json.loads(text)
        except (ValueError, UnicodeDecodeError) as exc:
            raise FormatError("DSSE envelope is not valid JSON") from exc
        if not isinstance(data, dict):
            raise FormatError("DSSE envelope must be a JSON object")
        payload_b64 = data.get("payload")
        payload_type = data.get("payloadType")
        raw_signatures = data.get("signatures")
        if not isinstance(payload_b64, str):
            raise FormatError("DSSE envelope: 'payload' must be a base64 string")
        if not isinstance(payload_type, str):
            raise FormatError("DSSE envelope: 'payloadType' must be a string")
        if not isinstance(raw_signatures, list):
            raise FormatError("DSSE envelope: 'signatures' must be a list")
        signatures: list[Signature] = []
        for position, entry in enumerate(raw_signatures):
            if not isinstance(entry, dict):
                raise FormatError(f"DSSE envelope: signature {position} must be an object")
            keyid = entry.get("keyid", "")
            sig = entry.get("sig")
            if not isinstance(keyid, str) or not isinstance(sig, str):
                raise FormatError(f"DSSE envelope: signature {position} needs string keyid/sig")
            signatures.append(Signature(keyid, _b64decode(sig, f"signature {position}")))
        return cls(
            payload=_b64decode(payload_b64, "payload"),
            payload_type=payload_type,
            signatures=tuple(signatures),
        )


def _b64encode(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _b64decode(value: str, what: str) -> bytes:
    padded = value + "=" * (-len(value) % 4)
    altchars = b"-_" if ("-" in value or "_" in value) else None
    try:
        return base64.b64decode(padded.encode("ascii"), altchars=altchars, validate=True)
    except (binascii.Error, ValueError, UnicodeEncodeError) as exc:
        raise FormatError(f"DSSE envelope: {what} is not valid base64") from exc


def sign_envelope(payload: bytes, payload_type: str, key: SigningKey, keyid: str) -> Envelope:
    """Sign ``payload`` as ``payload_type`` and return a one-signature envelope."""
    signature = Signature(keyid, key.sign(pae(payload_type, payload)))
    return Envelope(payload=payload, payload_type=payload_type, signatures=(signature,))


def verify_envelope(envelope: Envelope, keys: Mapping[str, VerifyingKey]) -> bytes:
    """Return the payload when a signature by a key in ``keys`` (by key ID) verifies.

    Signatures whose key ID is not in ``keys`` are ignored. Fails closed: raises
    :class:`IntegrityError` when no signature verifies, including when there are none.
    """
    if not envelope.signatures:
        raise IntegrityError("DSSE envelope has no signatures")
    message = pae(envelope.payload_type, envelope.payload)
    known = 0
    for signature in envelope.signatures:
        key = keys.get(signature.keyid)
        if key is None:
            continue
        known += 1
        if key.verify(message, signature.sig):
            return envelope.payload
    if known == 0:
        raise IntegrityError(
            "DSSE envelope has no signature by a trusted key",
            hint="check that the right public key is configured for this key ID",
        )
    raise IntegrityError("DSSE envelope signature does not verify (payload or type altered?)")
