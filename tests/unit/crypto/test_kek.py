"""AES-256-GCM key wrapping and scrypt derivation for the file keystore."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from affidavit.crypto import kek
from affidavit.errors import KeystoreError


def test_wrap_round_trip_with_fresh_nonces() -> None:
    key = kek.new_key()
    one = kek.wrap(key, b"secret", associated_data=b"ad")
    two = kek.wrap(key, b"secret", associated_data=b"ad")
    assert one != two and one[: kek.NONCE_SIZE] != two[: kek.NONCE_SIZE]
    assert len(one) == kek.NONCE_SIZE + len(b"secret") + kek.TAG_SIZE
    assert kek.unwrap(key, one, associated_data=b"ad") == b"secret"


@pytest.mark.parametrize("defect", ["wrong_key", "wrong_ad", "flipped", "truncated", "short"])
def test_unwrap_refuses(defect: str) -> None:
    key = kek.new_key()
    blob = kek.wrap(key, b"secret", associated_data=b"ad")
    args = {
        "wrong_key": (kek.new_key(), blob, b"ad"),
        "wrong_ad": (key, blob, b"ad2"),
        "flipped": (key, blob[:-1] + bytes([blob[-1] ^ 1]), b"ad"),
        "truncated": (key, blob[:-1], b"ad"),
        "short": (key, blob[:20], b"ad"),
    }[defect]
    with pytest.raises(KeystoreError):
        kek.unwrap(args[0], args[1], associated_data=args[2])


def test_keys_must_be_32_bytes() -> None:
    with pytest.raises(KeystoreError):
        kek.wrap(b"short", b"x", associated_data=b"")


def test_derive_key_is_scrypt_with_the_documented_parameters() -> None:
    salt = bytes(range(16))
    expected = Scrypt(salt=salt, length=32, n=2**15, r=8, p=1).derive(b"pass phrase")
    assert kek.derive_key("pass phrase", salt) == expected
    assert kek.derive_key("pass phrase", kek.new_salt()) != expected
    with pytest.raises(KeystoreError):
        kek.derive_key("pass phrase", b"short salt")
