"""Bearer secrets (API tokens, login sessions) and one-time recovery codes.

A bearer secret is ``<prefix>_<id>_<random>``: ``afv_`` for an API token, ``afs_`` for a
session, then the record's 16-hex-digit id and 32 random bytes in URL-safe base64. The
prefix makes a leaked secret recognisable to secret scanners; the id finds the record without
a lookup by secret; only the secret's SHA-256 is stored, and it is compared in constant time.

Recovery codes are ten codes of 16 base32 characters (80 bits each), shown as
``XXXX-XXXX-XXXX-XXXX``; being random and long, they are stored as SHA-256 (domain-separated),
not with a slow password hash.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import Final

TOKEN_PREFIX: Final = "afv"  # noqa: S105 - a prefix, not a secret
SESSION_PREFIX: Final = "afs"
RECOVERY_CODES: Final = 10
_ID_HEX: Final = 16
_ALPHABET: Final = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"  # base32 without 0/O, 1/I
_RECOVERY_LENGTH: Final = 16
_RECOVERY_TAG: Final = b"affidavit recovery code v1\x00"
_SECRET_TAG: Final = b"affidavit bearer secret v1\x00"


def new_id() -> str:
    """A new random record id: 16 hex digits (64 bits)."""
    return secrets.token_hex(_ID_HEX // 2)


def new_bearer_secret(prefix: str, record_id: str) -> str:
    """A new secret for the record ``record_id``: ``<prefix>_<id>_<43 URL-safe chars>``."""
    return f"{prefix}_{record_id}_{secrets.token_urlsafe(32)}"


def bearer_id(secret: str, prefix: str) -> str | None:
    """The record id inside ``secret`` when it has the shape of a ``prefix`` secret, else
    None."""
    head = f"{prefix}_"
    if not secret.startswith(head) or len(secret) > 200:
        return None
    record_id, sep, rest = secret[len(head) :].partition("_")
    valid_id = len(record_id) == _ID_HEX and all(c in "0123456789abcdef" for c in record_id)
    if not sep or not rest or not valid_id:
        return None
    return record_id


def secret_digest(secret: str) -> str:
    """The SHA-256 (hex) under which a bearer secret is stored."""
    return hashlib.sha256(_SECRET_TAG + secret.encode("utf-8", "surrogatepass")).hexdigest()


def same_digest(a: str, b: str) -> bool:
    """Constant-time comparison of two stored digests."""
    return hmac.compare_digest(a.encode(), b.encode())


def new_recovery_codes(count: int = RECOVERY_CODES) -> tuple[str, ...]:
    """``count`` new one-time recovery codes, ``XXXX-XXXX-XXXX-XXXX``."""
    codes = []
    for _ in range(count):
        raw = "".join(secrets.choice(_ALPHABET) for _ in range(_RECOVERY_LENGTH))
        codes.append("-".join(raw[i : i + 4] for i in range(0, _RECOVERY_LENGTH, 4)))
    return tuple(codes)


def normalise_recovery_code(code: str) -> str | None:
    """The code's 16 characters (case, spaces and dashes aside), or None when it cannot be
    a recovery code."""
    raw = code.replace("-", "").replace(" ", "").upper()
    if len(raw) != _RECOVERY_LENGTH or any(c not in _ALPHABET for c in raw):
        return None
    return raw


def recovery_code_digest(code: str) -> str | None:
    """The SHA-256 (hex) under which a recovery code is stored; None for something that is
    not a recovery code."""
    raw = normalise_recovery_code(code)
    if raw is None:
        return None
    return hashlib.sha256(_RECOVERY_TAG + raw.encode()).hexdigest()
