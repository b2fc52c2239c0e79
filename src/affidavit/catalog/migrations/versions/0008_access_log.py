"""The access log: its own Merkle log beside the ledger (entries and signed checkpoints).

Entries are stored as the ledger's are since 0005 (the subtree hashes a leaf closes in its
row, ``seq`` the rowid on SQLite, checkpoints keyed by tree size); ``entry`` may be NULL
once the entry expired, its ``leaf_hash`` stays. Both tables are new and start empty.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

_ROWID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    """Add the access-log tables."""
    op.create_table(
        "access_log_entries",
        sa.Column("seq", _ROWID, autoincrement=False, nullable=False),
        sa.Column("time", sa.String(32), nullable=False),
        sa.Column("identity", sa.Text()),
        sa.Column("action", sa.Text(), nullable=False),
        sa.Column("subject", sa.Text()),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("entry", sa.LargeBinary()),
        sa.Column("leaf_hash", sa.LargeBinary(32), nullable=False),
        sa.Column("nodes", sa.LargeBinary(), nullable=False),
        sa.Column("expired_at", sa.String(32)),
        sa.PrimaryKeyConstraint("seq", name="pk_access_log_entries"),
    )
    op.create_index("ix_access_log_entries_time", "access_log_entries", ["time"])
    op.create_index("ix_access_log_entries_identity", "access_log_entries", ["identity"])
    op.create_table(
        "access_log_checkpoints",
        sa.Column("size", _ROWID, autoincrement=False, nullable=False),
        sa.Column("root", sa.LargeBinary(32), nullable=False),
        sa.Column("note", sa.Text(), nullable=False),
        sa.Column("created_at", sa.String(32), nullable=False),
        sa.PrimaryKeyConstraint("size", name="pk_access_log_checkpoints"),
    )


def downgrade() -> None:
    """Drop the access-log tables (their entries are lost; the ledger keeps its
    ``access_log.*`` events)."""
    op.drop_table("access_log_checkpoints")
    op.drop_index("ix_access_log_entries_identity", table_name="access_log_entries")
    op.drop_index("ix_access_log_entries_time", table_name="access_log_entries")
    op.drop_table("access_log_entries")
