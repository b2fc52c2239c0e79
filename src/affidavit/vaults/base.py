"""The vault interface: one class per storage backend (folder, S3).

This issue's surface is the probe that inventory shows; writing and reading artifacts joins
it with the backup work. Implementations wrap backend exceptions in
:class:`~affidavit.errors.VaultError`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

from affidavit.models.inventory import Vault


@dataclass(frozen=True, slots=True, kw_only=True)
class VaultProbe:
    """What a vault looks like right now."""

    reachable: bool
    writable: bool | None  # None when it cannot be told without writing
    immutability: str | None  # e.g. "object-lock COMPLIANCE 30d", "read-only files"
    detail: str  # one line, for people


class VaultBackend(ABC):
    """Storage of backup artifacts for one registered vault."""

    def __init__(self, vault: Vault) -> None:
        self.vault = vault

    @abstractmethod
    def probe(self) -> VaultProbe:
        """Check reachability and protection settings without writing anything.
        Never raises for an unreachable vault: that is reported in the probe."""
