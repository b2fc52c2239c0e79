"""A vault in a local folder."""

from __future__ import annotations

import os
from pathlib import Path

from affidavit.models.inventory import VaultProbe
from affidavit.vaults.base import VaultBackend


class FileVault(VaultBackend):
    """Artifacts under a folder; each is written once and then made read-only."""

    @property
    def root(self) -> Path:
        """The vault's folder."""
        return Path(self.vault.url.removeprefix("file://"))

    def probe(self) -> VaultProbe:
        root = self.root
        if not root.exists():
            parent = next((p for p in root.parents if p.exists()), None)
            can_create = parent is not None and os.access(parent, os.W_OK | os.X_OK)
            return VaultProbe(
                reachable=can_create,
                writable=can_create,
                immutability="read-only files" if can_create else None,
                detail="will be created on first backup"
                if can_create
                else f"{root} cannot be created",
            )
        if not root.is_dir():
            return VaultProbe(
                reachable=False, writable=False, immutability=None, detail=f"{root} is not a folder"
            )
        writable = os.access(root, os.W_OK | os.X_OK)
        return VaultProbe(
            reachable=True,
            writable=writable,
            immutability="read-only files",
            detail="ok" if writable else f"no write permission on {root}",
        )
