"""Ed25519 keys and the private-key file."""

from __future__ import annotations

import base64
import os
import stat
from pathlib import Path

import pytest

from affidavit.crypto.signing import (
    KEY_FILE_HEADER,
    SigningKey,
    VerifyingKey,
    load_signing_key,
    save_signing_key,
)
from affidavit.errors import AlreadyExists, FormatError, KeystoreError

# RFC 8032 §7.1 TEST 2
RFC8032_SECRET = bytes.fromhex("4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb")
RFC8032_PUBLIC = bytes.fromhex("3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c")
RFC8032_SIGNATURE = bytes.fromhex(
    "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da"
    "085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00"
)


def test_rfc8032_known_answer() -> None:
    key = SigningKey.from_private_bytes(RFC8032_SECRET)
    assert key.public_key.public_bytes() == RFC8032_PUBLIC
    assert key.sign(b"\x72") == RFC8032_SIGNATURE
    assert VerifyingKey.from_public_bytes(RFC8032_PUBLIC).verify(b"\x72", RFC8032_SIGNATURE)


def test_sign_and_verify_round_trip() -> None:
    key = SigningKey.generate()
    signature = key.sign(b"message")
    assert key.public_key.verify(b"message", signature)
    assert not key.public_key.verify(b"messagE", signature)
    assert not SigningKey.generate().public_key.verify(b"message", signature)


@pytest.mark.parametrize(
    "signature",
    [b"", b"\0" * 64, b"\0" * 63, b"\xff" * 65],
    ids=["empty", "zeros", "short", "long"],
)
def test_verify_never_raises_on_bad_signature(signature: bytes) -> None:
    assert SigningKey.generate().public_key.verify(b"m", signature) is False


def test_private_bytes_are_not_in_repr() -> None:
    key = SigningKey.from_private_bytes(RFC8032_SECRET)
    assert RFC8032_SECRET.hex() not in repr(key)
    assert repr(RFC8032_SECRET) not in repr(key)
    assert key.private_bytes() == RFC8032_SECRET
    assert key == SigningKey.from_private_bytes(RFC8032_SECRET)


@pytest.mark.parametrize("size", [0, 31, 33])
def test_wrong_key_lengths_are_rejected(size: int) -> None:
    with pytest.raises(FormatError):
        SigningKey.from_private_bytes(b"\1" * size)
    with pytest.raises(FormatError):
        VerifyingKey.from_public_bytes(b"\1" * size)


def test_key_file_round_trip_with_mode_0600(tmp_path: Path) -> None:
    key = SigningKey.generate()
    path = tmp_path / "ledger.key"
    save_signing_key(path, key)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_signing_key(path) == key
    lines = path.read_text(encoding="ascii").split("\n")
    assert lines[0] == KEY_FILE_HEADER
    assert base64.b64decode(lines[1]) == key.private_bytes()
    assert [p.name for p in tmp_path.iterdir()] == ["ledger.key"]  # no temporary left behind


def test_key_file_is_0600_even_with_permissive_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        save_signing_key(tmp_path / "k", SigningKey.generate())
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "k").stat().st_mode) == 0o600


def test_existing_key_file_is_not_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "k"
    first = SigningKey.generate()
    save_signing_key(path, first)
    with pytest.raises(AlreadyExists):
        save_signing_key(path, SigningKey.generate())
    assert load_signing_key(path) == first
    second = SigningKey.generate()
    save_signing_key(path, second, overwrite=True)
    assert load_signing_key(path) == second
    assert sorted(p.name for p in tmp_path.iterdir()) == ["k"]


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660], ids=oct)
def test_world_or_group_readable_key_file_is_refused(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "k"
    save_signing_key(path, SigningKey.generate())
    path.chmod(mode)
    with pytest.raises(KeystoreError) as caught:
        load_signing_key(path)
    assert "chmod 600" in caught.value.hint


def _write_0600(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


VALID_B64 = base64.b64encode(RFC8032_SECRET).decode()


@pytest.mark.parametrize(
    "content",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"not a key\n", id="garbage"),
        pytest.param(f"{KEY_FILE_HEADER}\n".encode(), id="header-only"),
        pytest.param(f"{KEY_FILE_HEADER}\n{VALID_B64}".encode(), id="missing-final-newline"),
        pytest.param(f"{KEY_FILE_HEADER}\n{VALID_B64}\nextra\n".encode(), id="trailing-line"),
        pytest.param(f"other-header\n{VALID_B64}\n".encode(), id="wrong-header"),
        pytest.param(f"{KEY_FILE_HEADER}\n{VALID_B64[:-4]}\n".encode(), id="truncated-key"),
        pytest.param(f"{KEY_FILE_HEADER}\n{VALID_B64}!\n".encode(), id="bad-base64"),
        pytest.param(b"\xff\xfe" * 10, id="binary"),
        pytest.param(b"x" * 10_000, id="oversized"),
    ],
)
def test_malformed_key_file_is_refused(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "k"
    _write_0600(path, content)
    with pytest.raises(FormatError):
        load_signing_key(path)


def test_missing_key_file_is_a_keystore_error(tmp_path: Path) -> None:
    with pytest.raises(KeystoreError):
        load_signing_key(tmp_path / "absent")
