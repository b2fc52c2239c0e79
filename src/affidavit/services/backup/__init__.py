"""Backups: take them from a live source (:mod:`.capture`), or ingest what another tool made
(:mod:`.ingest`, with the head start of :mod:`.spool`), into a vault, encrypted, locked for
their retention, fingerprinted and described by a signed manifest (:mod:`.recording`, the
recorded life of one backup); then list, hold and delete them (:mod:`.retention`).
"""

from __future__ import annotations

from affidavit.models.manifest import MANIFEST_TYPE
from affidavit.services.backup.capture import run_backup
from affidavit.services.backup.ingest import INGEST_FORMATS, ingest_backup
from affidavit.services.backup.recording import new_backup_id
from affidavit.services.backup.retention import (
    DeletionReceipt,
    add_hold,
    delete_backup,
    get_backup,
    list_backups,
    list_holds,
    release_hold,
)

__all__ = [
    "INGEST_FORMATS",
    "MANIFEST_TYPE",
    "DeletionReceipt",
    "add_hold",
    "delete_backup",
    "get_backup",
    "ingest_backup",
    "list_backups",
    "list_holds",
    "new_backup_id",
    "release_hold",
    "run_backup",
]
