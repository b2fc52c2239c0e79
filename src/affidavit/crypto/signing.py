"""Ed25519 signing keys, verifying keys and the private-key file.

Key file format (``affidavit-ed25519-private-key-v1``), UTF-8/ASCII text, exactly two lines::

    affidavit-ed25519-private-key-v1
    <standard base64 (RFC 4648, padded) of the 32-byte raw Ed25519 private key (RFC 8032 seed)>

Each line ends with ``\\n``. Nothing else is allowed in the file. The file is created with mode
``0600`` and written atomically (temporary file in the same folder, ``fsync``, rename);
:func:`load_signing_key` refuses a file that group or others may access.
"""

from __future__ import annotations

import base64
import binascii
import os
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)

from affidavit.crypto.key_file import read_key_file
from affidavit.durable import write_atomic
from affidavit.errors import AlreadyExists, FormatError, KeystoreError

__all__ = [
    "KEY_FILE_HEADER",
    "PRIVATE_KEY_SIZE",
    "PUBLIC_KEY_SIZE",
    "SIGNATURE_SIZE",
    "SigningKey",
    "VerifyingKey",
    "load_signing_key",
    "save_signing_key",
]

PRIVATE_KEY_SIZE = 32
PUBLIC_KEY_SIZE = 32
SIGNATURE_SIZE = 64
KEY_FILE_HEADER = "affidavit-ed25519-private-key-v1"
_MAX_KEY_FILE_SIZE = 4096


@dataclass(frozen=True, slots=True)
class VerifyingKey:
    """An Ed25519 public key (32 raw bytes)."""

    raw: bytes
    _key: Ed25519PublicKey = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.raw, bytes) or len(self.raw) != PUBLIC_KEY_SIZE:
            raise FormatError(f"an Ed25519 public key is {PUBLIC_KEY_SIZE} bytes")
        try:
            key = Ed25519PublicKey.from_public_bytes(self.raw)
        except ValueError as exc:
            raise FormatError("not a valid Ed25519 public key") from exc
        object.__setattr__(self, "_key", key)

    @classmethod
    def from_public_bytes(cls, raw: bytes) -> VerifyingKey:
        """Build a key from its 32 raw bytes; raises :class:`FormatError` otherwise."""
        return cls(bytes(raw))

    def public_bytes(self) -> bytes:
        """Return the 32 raw bytes of the key."""
        return self.raw

    def verify(self, message: bytes, signature: bytes) -> bool:
        """Return whether ``signature`` is a valid Ed25519 signature of ``message``.

        Never raises for a bad or malformed signature; it returns ``False``.
        """
        if len(signature) != SIGNATURE_SIZE:
            return False
        try:
            self._key.verify(signature, message)
        except InvalidSignature:
            return False
        return True


@dataclass(frozen=True, slots=True)
class SigningKey:
    """An Ed25519 private key. Its ``repr`` never shows the secret bytes."""

    _raw: bytes = field(repr=False)
    _key: Ed25519PrivateKey = field(init=False, repr=False, compare=False)
    public_key: VerifyingKey = field(init=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self._raw, bytes) or len(self._raw) != PRIVATE_KEY_SIZE:
            raise FormatError(f"an Ed25519 private key is {PRIVATE_KEY_SIZE} bytes")
        key = Ed25519PrivateKey.from_private_bytes(self._raw)
        public = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        object.__setattr__(self, "_key", key)
        object.__setattr__(self, "public_key", VerifyingKey(public))

    @classmethod
    def generate(cls) -> SigningKey:
        """Create a fresh random key."""
        raw = Ed25519PrivateKey.generate().private_bytes(
            Encoding.Raw, PrivateFormat.Raw, NoEncryption()
        )
        return cls(raw)

    @classmethod
    def from_private_bytes(cls, raw: bytes) -> SigningKey:
        """Build a key from its 32 raw bytes; raises :class:`FormatError` otherwise."""
        return cls(bytes(raw))

    def private_bytes(self) -> bytes:
        """Return the 32 raw secret bytes. Handle with care."""
        return self._raw

    def sign(self, message: bytes) -> bytes:
        """Return the 64-byte Ed25519 signature of ``message``."""
        return self._key.sign(message)


def _encode_key_file(key: SigningKey) -> bytes:
    b64 = base64.b64encode(key.private_bytes()).decode("ascii")
    return f"{KEY_FILE_HEADER}\n{b64}\n".encode("ascii")


def _decode_key_file(data: bytes, path: Path) -> SigningKey:
    malformed = f"{path} is not an affidavit Ed25519 private-key file"
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError as exc:
        raise FormatError(malformed) from exc
    lines = text.split("\n")
    if len(lines) != 3 or lines[0] != KEY_FILE_HEADER or lines[2] != "":
        raise FormatError(malformed, hint=f"the file must start with {KEY_FILE_HEADER!r}")
    try:
        raw = base64.b64decode(lines[1], validate=True)
    except (binascii.Error, ValueError) as exc:
        raise FormatError(f"{malformed}: bad base64") from exc
    if len(raw) != PRIVATE_KEY_SIZE or base64.b64encode(raw).decode("ascii") != lines[1]:
        raise FormatError(f"{malformed}: the key must be {PRIVATE_KEY_SIZE} bytes")
    return SigningKey(raw)


def save_signing_key(
    path: str | os.PathLike[str], key: SigningKey, *, overwrite: bool = False
) -> None:
    """Write ``key`` to ``path`` in the key-file format, mode ``0600``, atomically.

    A temporary file is created in the same folder with ``os.open(..., 0o600)``, written,
    ``fsync``-ed and renamed onto ``path``; then the folder is ``fsync``-ed. Raises
    :class:`AlreadyExists` when ``path`` exists and ``overwrite`` is false, and
    :class:`KeystoreError` when the file cannot be written.
    """
    target = Path(path)
    try:
        write_atomic(target, _encode_key_file(key), mode=0o600, exclusive=not overwrite)
    except FileExistsError as exc:
        raise AlreadyExists(
            f"key file {target} already exists", hint="choose another path or remove the old key"
        ) from exc
    except OSError as exc:
        raise KeystoreError(f"cannot write key file {target}: {exc.strerror}") from exc


def load_signing_key(path: str | os.PathLike[str]) -> SigningKey:
    """Read a key written by :func:`save_signing_key`.

    Raises :class:`KeystoreError` when the file cannot be read or when group or others have
    any permission on it, and :class:`FormatError` when its content is malformed.
    """
    source = Path(path)
    data = read_key_file(source, limit=_MAX_KEY_FILE_SIZE)
    if data is None:
        raise KeystoreError(f"cannot read key file {source}: No such file or directory")
    return _decode_key_file(data, source)
