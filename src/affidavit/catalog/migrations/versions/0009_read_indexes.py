"""Indexes for the server's reads: the ledger's newest entry of an action, running backups,
a backup's holds.

- ``ix_ledger_entries_action_seq`` (``action``, ``seq``) replaces ``ix_ledger_entries_action``
  (``action``): it serves every lookup by action the old one served, and the newest entry of
  an action becomes one index seek (PostgreSQL walks the index backwards from the action's
  last key; SQLite did so already, its index rows end with the rowid). The server reads the
  newest role and account events on every request, to tell whether what it knows of them is
  still current (``services.principals``). An append still updates two B-trees.
- ``ix_backups_status``: every read of backups first looks for a ``running`` one
  (``services.leases.read_reclaimed``).
- ``ix_holds_backup_id``: a backup's holds are read with the backup.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-05
"""

from __future__ import annotations

from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add the three indexes (the ledger's replaces its action index)."""
    op.create_index("ix_ledger_entries_action_seq", "ledger_entries", ["action", "seq"])
    op.drop_index("ix_ledger_entries_action", table_name="ledger_entries")
    op.create_index("ix_backups_status", "backups", ["status"])
    op.create_index("ix_holds_backup_id", "holds", ["backup_id"])


def downgrade() -> None:
    """Back to the indexes of 0008."""
    op.drop_index("ix_holds_backup_id", table_name="holds")
    op.drop_index("ix_backups_status", table_name="backups")
    op.create_index("ix_ledger_entries_action", "ledger_entries", ["action"])
    op.drop_index("ix_ledger_entries_action_seq", table_name="ledger_entries")
