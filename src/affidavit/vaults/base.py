"""The vault interface: one class per storage backend (folder, S3).

This issue's surface is the probe that inventory shows; writing and reading artifacts joins
it with the backup work. Implementations wrap backend exceptions in
:class:`~affidavit.errors.VaultError`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

from affidavit.models.inventory import Vault, VaultProbe


class VaultBackend(ABC):
    """Storage of backup artifacts for one registered vault."""

    def __init__(self, vault: Vault) -> None:
        self.vault = vault

    @abstractmethod
    def probe(self) -> VaultProbe:
        """Check reachability and protection settings without writing anything.
        Never raises for an unreachable vault: that is reported in the probe."""
