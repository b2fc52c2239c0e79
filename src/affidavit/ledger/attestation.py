"""in-toto Statement v1 attestations in DSSE envelopes.

A statement names its subjects (artifacts by SHA-256) and carries a typed predicate::

    {"_type": "https://in-toto.io/Statement/v1",
     "subject": [{"name": "...", "digest": {"sha256": "<64 lowercase hex>"}}],
     "predicateType": "https://affidavit.dev/attestations/backup/v1",
     "predicate": {...}}

It is serialised as RFC 8785 canonical JSON and signed as a DSSE envelope with payload type
``application/vnd.in-toto+json``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import rfc8785

from affidavit.crypto.dsse import Envelope, sign_envelope, verify_envelope
from affidavit.crypto.signing import SigningKey, VerifyingKey
from affidavit.errors import FormatError

__all__ = [
    "BACKUP_PREDICATE_TYPE",
    "DRILL_PREDICATE_TYPE",
    "EXPORT_PREDICATE_TYPE",
    "IN_TOTO_PAYLOAD_TYPE",
    "PREDICATE_TYPES",
    "STATEMENT_TYPE",
    "VERIFICATION_PREDICATE_TYPE",
    "Statement",
    "Subject",
    "attest",
    "verify_attestation",
]

STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
IN_TOTO_PAYLOAD_TYPE = "application/vnd.in-toto+json"

BACKUP_PREDICATE_TYPE = "https://affidavit.dev/attestations/backup/v1"
VERIFICATION_PREDICATE_TYPE = "https://affidavit.dev/attestations/verification/v1"
DRILL_PREDICATE_TYPE = "https://affidavit.dev/attestations/drill/v1"
EXPORT_PREDICATE_TYPE = "https://affidavit.dev/attestations/export/v1"
PREDICATE_TYPES = (
    BACKUP_PREDICATE_TYPE,
    VERIFICATION_PREDICATE_TYPE,
    DRILL_PREDICATE_TYPE,
    EXPORT_PREDICATE_TYPE,
)

_SHA256_HEX = re.compile(r"[0-9a-f]{64}")


def _canonical(value: object) -> bytes:
    try:
        return rfc8785.dumps(value)  # type: ignore[arg-type]
    except (rfc8785.CanonicalizationError, ValueError, TypeError) as exc:
        raise FormatError(f"attestation is not canonical JSON: {exc}") from exc


@dataclass(frozen=True, slots=True)
class Subject:
    """An artifact named by a statement: its name and SHA-256 (64 lowercase hex)."""

    name: str
    sha256: str

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise FormatError("attestation subject needs a non-empty name")
        if not isinstance(self.sha256, str) or not _SHA256_HEX.fullmatch(self.sha256):
            raise FormatError(
                f"subject {self.name!r}: sha256 digest must be 64 lowercase hex characters"
            )

    def to_dict(self) -> dict[str, Any]:
        """Return the in-toto JSON object of this subject."""
        return {"name": self.name, "digest": {"sha256": self.sha256}}


@dataclass(frozen=True, slots=True, kw_only=True)
class Statement:
    """An in-toto Statement v1 (keyword-only constructor).

    ``predicate`` is copied on construction (it must be RFC 8785 serialisable: no floats that
    are not finite, integers within ±(2**53 - 1)) and exposed read-only.
    """

    subjects: tuple[Subject, ...]
    predicate_type: str
    predicate: Mapping[str, Any] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        subjects = tuple(self.subjects)
        if not subjects:
            raise FormatError("an attestation needs at least one subject")
        if not all(isinstance(s, Subject) for s in subjects):
            raise FormatError("attestation subjects must be Subject values")
        if not isinstance(self.predicate_type, str) or not self.predicate_type:
            raise FormatError("an attestation needs a predicate type")
        if not isinstance(self.predicate, Mapping):
            raise FormatError("attestation predicate must be a JSON object")
        copied = json.loads(_canonical(dict(self.predicate)))
        object.__setattr__(self, "subjects", subjects)
        object.__setattr__(self, "predicate", MappingProxyType(copied))

    def to_dict(self) -> dict[str, Any]:
        """Return the in-toto JSON object of this statement."""
        return {
            "_type": STATEMENT_TYPE,
            "subject": [s.to_dict() for s in self.subjects],
            "predicateType": self.predicate_type,
            "predicate": dict(self.predicate),
        }

    def to_json(self) -> bytes:
        """Return the RFC 8785 canonical JSON bytes of this statement."""
        return _canonical(self.to_dict())

    @classmethod
    def from_json(cls, data: bytes | str) -> Statement:
        """Parse and validate a statement; raises :class:`FormatError` when malformed.

        Only the ``sha256`` digest of each subject is kept; other digest algorithms are
        ignored. A missing predicate reads as ``{}``.
        """
        try:
            raw: Any = json.loads(data)
        except (ValueError, UnicodeDecodeError) as exc:
            raise FormatError("attestation statement is not valid JSON") from exc
        if not isinstance(raw, dict):
            raise FormatError("attestation statement must be a JSON object")
        if raw.get("_type") != STATEMENT_TYPE:
            raise FormatError(f"attestation statement _type must be {STATEMENT_TYPE!r}")
        raw_subjects = raw.get("subject")
        if not isinstance(raw_subjects, list):
            raise FormatError("attestation statement 'subject' must be a list")
        subjects: list[Subject] = []
        for position, entry in enumerate(raw_subjects):
            digest = entry.get("digest") if isinstance(entry, dict) else None
            if not isinstance(entry, dict) or not isinstance(digest, dict):
                raise FormatError(f"attestation subject {position} needs a name and a digest")
            name, sha256 = entry.get("name"), digest.get("sha256")
            if not isinstance(name, str) or not isinstance(sha256, str):
                raise FormatError(f"attestation subject {position} needs a name and a sha256")
            subjects.append(Subject(name, sha256))
        predicate = raw.get("predicate", {})
        if not isinstance(predicate, dict):
            raise FormatError("attestation predicate must be a JSON object")
        predicate_type = raw.get("predicateType")
        if not isinstance(predicate_type, str):
            raise FormatError("attestation statement 'predicateType' must be a string")
        return cls(subjects=tuple(subjects), predicate_type=predicate_type, predicate=predicate)


def attest(statement: Statement, key: SigningKey, keyid: str) -> Envelope:
    """Sign ``statement`` into a DSSE envelope of payload type ``IN_TOTO_PAYLOAD_TYPE``."""
    return sign_envelope(statement.to_json(), IN_TOTO_PAYLOAD_TYPE, key, keyid)


def verify_attestation(
    envelope: Envelope,
    keys: Mapping[str, VerifyingKey],
    *,
    predicate_type: str | None = None,
) -> Statement:
    """Verify an attestation envelope and return its statement.

    Raises :class:`~affidavit.errors.IntegrityError` when no signature by a key in ``keys``
    verifies, and :class:`FormatError` when the payload type is not in-toto, the statement is
    malformed, or its predicate type differs from ``predicate_type`` (when given).
    """
    payload = verify_envelope(envelope, keys)
    if envelope.payload_type != IN_TOTO_PAYLOAD_TYPE:
        raise FormatError(
            f"envelope payload type is {envelope.payload_type!r}, not {IN_TOTO_PAYLOAD_TYPE!r}"
        )
    statement = Statement.from_json(payload)
    if predicate_type is not None and statement.predicate_type != predicate_type:
        raise FormatError(
            f"attestation predicate type is {statement.predicate_type!r}, "
            f"expected {predicate_type!r}"
        )
    return statement
