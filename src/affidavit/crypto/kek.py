"""Local key-encryption-key (KEK) primitives: AES-256-GCM wrapping and scrypt derivation.

These are the building blocks of the file keystore; they hold no state and never log keys.

Wrapped blob format (``wrap``): ``nonce (12 bytes, random) || AES-256-GCM ciphertext || tag
(16 bytes)``. The associated data is bound by the caller and must be given again to unwrap.

Passphrase derivation (``derive_key``): scrypt (RFC 7914) with ``n = 2**15``, ``r = 8``,
``p = 1``, a 16-byte random salt and a 32-byte output.
"""

from __future__ import annotations

import secrets

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from affidavit.errors import KeystoreError

__all__ = [
    "KEY_SIZE",
    "NONCE_SIZE",
    "SALT_SIZE",
    "SCRYPT_N",
    "SCRYPT_P",
    "SCRYPT_R",
    "TAG_SIZE",
    "derive_key",
    "new_key",
    "new_salt",
    "unwrap",
    "wrap",
]

KEY_SIZE = 32
"""Length in bytes of an AES-256 key (a KEK or a passphrase-derived key)."""
NONCE_SIZE = 12
"""Length in bytes of the random AES-GCM nonce that starts a wrapped blob."""
TAG_SIZE = 16
"""Length in bytes of the AES-GCM authentication tag that ends a wrapped blob."""
SALT_SIZE = 16
"""Length in bytes of a scrypt salt."""
SCRYPT_N = 2**15
SCRYPT_R = 8
SCRYPT_P = 1


def new_key() -> bytes:
    """Return a fresh random 32-byte key."""
    return secrets.token_bytes(KEY_SIZE)


def new_salt() -> bytes:
    """Return a fresh random 16-byte scrypt salt."""
    return secrets.token_bytes(SALT_SIZE)


def _check_key(key: bytes) -> None:
    if not isinstance(key, bytes) or len(key) != KEY_SIZE:
        raise KeystoreError(f"a key-encryption key is {KEY_SIZE} bytes")


def wrap(key: bytes, plaintext: bytes, *, associated_data: bytes) -> bytes:
    """Encrypt ``plaintext`` under ``key`` with AES-256-GCM, binding ``associated_data``.

    Returns ``nonce || ciphertext || tag`` with a fresh random 12-byte nonce.
    """
    _check_key(key)
    nonce = secrets.token_bytes(NONCE_SIZE)
    return nonce + AESGCM(key).encrypt(nonce, plaintext, associated_data)


def unwrap(key: bytes, blob: bytes, *, associated_data: bytes) -> bytes:
    """Decrypt a blob made by :func:`wrap`.

    Raises :class:`KeystoreError` when the key or the associated data is wrong or the blob
    was altered or truncated (the three cannot be told apart, by design of AEAD).
    """
    _check_key(key)
    if len(blob) < NONCE_SIZE + TAG_SIZE:
        raise KeystoreError("cannot unwrap: the wrapped secret is truncated")
    try:
        return AESGCM(key).decrypt(blob[:NONCE_SIZE], blob[NONCE_SIZE:], associated_data)
    except InvalidTag as exc:
        raise KeystoreError(
            "cannot unwrap: wrong key, wrong context or altered ciphertext"
        ) from exc


def derive_key(passphrase: str, salt: bytes) -> bytes:
    """Derive a 32-byte key from ``passphrase`` (UTF-8) and ``salt`` with scrypt."""
    if len(salt) != SALT_SIZE:
        raise KeystoreError(f"a scrypt salt is {SALT_SIZE} bytes")
    kdf = Scrypt(salt=salt, length=KEY_SIZE, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P)
    return kdf.derive(passphrase.encode("utf-8"))
