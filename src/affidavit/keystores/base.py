"""The keystore interface: one class per KEK backend (local file, AWS KMS, ...).

A keystore holds versioned key-encryption keys. It wraps small secrets (a backup's age
identity) under the current version and unwraps them under whatever version wrapped them.
Rotation creates a new current version; older versions stay usable for unwrapping until every
wrapped secret has been re-wrapped, then they are retired. Implementations raise
:class:`~affidavit.errors.KeystoreError` (exit 3) when a key cannot be used (wrong passphrase,
disabled KMS key, tampered wrapping) and never log or return key material.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class KekVersion:
    """One version of a key-encryption key."""

    kek_id: str  # stable name of the key (e.g. "file:default", a KMS key ARN)
    version: int
    created_at: datetime
    retired_at: datetime | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class WrappedSecret:
    """A secret wrapped by a KEK version; safe to store in the catalog."""

    kek_id: str
    version: int
    ciphertext: bytes


class Keystore(ABC):
    """A store of versioned key-encryption keys."""

    @abstractmethod
    def current(self) -> KekVersion:
        """The version new secrets are wrapped under (created on first use)."""

    @abstractmethod
    def versions(self) -> list[KekVersion]:
        """Every version, oldest first."""

    @abstractmethod
    def wrap(self, secret: bytes, *, context: bytes) -> WrappedSecret:
        """Encrypt ``secret`` under the current version; ``context`` (e.g. the backup id) is
        bound as associated data and must be given again to unwrap."""

    @abstractmethod
    def unwrap(self, wrapped: WrappedSecret, *, context: bytes) -> bytes:
        """Decrypt a wrapped secret. Raises ``KeystoreError`` for a wrong key, a wrong context,
        altered ciphertext, or a version that is retired (or was relabelled: the version is
        bound to the ciphertext)."""

    @abstractmethod
    def rotate(self) -> KekVersion:
        """Create a new current version and return it."""

    @abstractmethod
    def retire(self, version: int) -> None:
        """Mark a version retired: it can no longer unwrap. Callers re-wrap first.
        Retiring a retired version does nothing; retiring the current version or one that
        does not exist raises ``KeystoreError``."""
