"""AES-SIV pseudonyms (RFC 5297) for governed exports: deterministic encryption of a field's
canonical value under a key derived from the recipient's pseudonymisation key.

The SIV key is ``HKDF-SHA-256(recipient key, info="affidavit-export-aes-siv-v1")``, 64 bytes
(AES-256-SIV); the associated data are the recipient's context and the field name, so the
same value gives the same token for one recipient and field, and another token for any other
recipient or field. The token is the SIV ciphertext in lowercase hex (16 bytes of synthetic
IV, then the value's length). Unlike the HMAC pseudonym, whoever holds the recipient's key
(the exporting organisation, never the recipient) can reverse it (:meth:`SivPseudonyms.reveal`).
"""

from __future__ import annotations

from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESSIV
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from affidavit.errors import IntegrityError

__all__ = ["SivPseudonyms"]

_INFO: Final = b"affidavit-export-aes-siv-v1"


class SivPseudonyms:
    """AES-SIV tokens under one recipient's key (derived once)."""

    def __init__(self, key: bytes) -> None:
        if len(key) != 32:
            raise ValueError("a pseudonymisation key is 32 bytes")
        derived = HKDF(algorithm=hashes.SHA256(), length=64, salt=None, info=_INFO).derive(key)
        self._siv = AESSIV(derived)

    def token(self, context: str, field: str, value: bytes) -> str:
        """The token of ``value`` (canonical bytes) in ``field`` for ``context``."""
        return self._siv.encrypt(value, [context.encode("utf-8"), field.encode("utf-8")]).hex()

    def reveal(self, context: str, field: str, token: str) -> bytes:
        """The value a token stands for; :class:`IntegrityError` for a token that is not one
        of this key, context and field."""
        try:
            data = bytes.fromhex(token)
            return self._siv.decrypt(data, [context.encode("utf-8"), field.encode("utf-8")])
        except (ValueError, InvalidTag):
            raise IntegrityError(
                "not an AES-SIV pseudonym of this key, recipient and field"
            ) from None
