"""The cryptography of governed exports: keyed pseudonyms, recipient keys and their
challenges.

- A pseudonym is ``HMAC-SHA-256(key, context || 0x00 || field || 0x00 || value)`` in
  lowercase hex, where ``key`` is a 32-byte secret of one recipient (wrapped by the keystore's
  KEK, never stored in the clear) and ``context`` names the recipient: the same subject gets
  a different token for every recipient, and nobody without the key can link or reverse them.
- A recipient's key is an age X25519 recipient (``age1...``); possession of its identity is
  proven by decrypting a random challenge encrypted to it (:func:`new_challenge`).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import Final

import pyrage
from pyrage import x25519

from affidavit.errors import InputError

__all__ = [
    "PSEUDONYM_KEY_BYTES",
    "challenge_matches",
    "check_age_recipient",
    "identity_recipient",
    "new_challenge",
    "new_pseudonym_key",
    "pseudonym",
]

PSEUDONYM_KEY_BYTES: Final = 32
_CHALLENGE_PREFIX: Final = "affidavit-recipient-challenge:"


def new_pseudonym_key() -> bytes:
    """A fresh 32-byte pseudonymisation key."""
    return secrets.token_bytes(PSEUDONYM_KEY_BYTES)


def pseudonym(key: bytes, context: str, field: str, value: bytes) -> str:
    """The keyed pseudonym of ``value`` (canonical bytes) in ``field`` for ``context``."""
    if len(key) != PSEUDONYM_KEY_BYTES:
        raise ValueError("a pseudonymisation key is 32 bytes")
    message = b"\x00".join((context.encode("utf-8"), field.encode("utf-8"), value))
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def check_age_recipient(text: str) -> str:
    """``text`` when it is an age X25519 recipient (``age1...``); else :class:`InputError`."""
    candidate = text.strip()
    try:
        x25519.Recipient.from_str(candidate)
    except (pyrage.RecipientError, ValueError, TypeError) as exc:
        raise InputError(
            "the public key is not an age X25519 recipient",
            hint="a recipient key looks like age1... (`age-keygen -y KEYFILE` prints it)",
        ) from exc
    return candidate


def identity_recipient(text: str) -> str:
    """The ``age1...`` recipient of an age X25519 identity (``AGE-SECRET-KEY-1...``, maybe
    inside an ``age-keygen`` file with comment lines); else :class:`InputError`."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]
    if len(lines) != 1:
        raise InputError(
            "the identity file must hold exactly one age identity",
            hint="give the file `age-keygen` wrote (AGE-SECRET-KEY-1...)",
        )
    try:
        return str(x25519.Identity.from_str(lines[0]).to_public())
    except (pyrage.IdentityError, ValueError, TypeError) as exc:
        raise InputError(
            "the identity file does not hold an age X25519 identity",
            hint="an identity looks like AGE-SECRET-KEY-1...",
        ) from exc


def new_challenge() -> tuple[str, str]:
    """A random challenge ``(text, sha256 hex of its UTF-8 bytes)``."""
    text = _CHALLENGE_PREFIX + secrets.token_hex(32)
    return text, hashlib.sha256(text.encode("ascii")).hexdigest()


def challenge_matches(response: str, digest_hex: str) -> bool:
    """Whether ``response`` (surrounding whitespace ignored) is the challenge of
    ``digest_hex``, compared in constant time."""
    got = hashlib.sha256(response.strip().encode("utf-8")).hexdigest()
    return hmac.compare_digest(got.encode("ascii"), digest_hex.encode("ascii"))
