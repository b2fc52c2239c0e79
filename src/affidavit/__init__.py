"""affidavit: audit and certify backups and exports of NoSQL databases."""

from __future__ import annotations

__version__ = "0.1.0"
