"""Backup leases: which process holds a running backup, and its heartbeat.

A backup whose process is killed (SIGKILL, out of memory, a lost host) used to stay
``running`` for ever. A lease row now goes with every ``running`` backup, so that any later
command can tell a dead run from a live one and record it failed as abandoned. Backups that
are ``running`` when this migration runs have no lease: they are judged by their start time
(see ``affidavit.services.leases``).

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add the lease table."""
    op.create_table(
        "backup_leases",
        sa.Column("backup_id", sa.String(64), nullable=False),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("boot_id", sa.String(64)),
        sa.Column("pid_namespace", sa.String(64)),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("process_start", sa.BigInteger()),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("backup_id", name="pk_backup_leases"),
        sa.ForeignKeyConstraint(
            ["backup_id"], ["backups.id"], name="fk_backup_leases_backup_id_backups",
            ondelete="CASCADE",
        ),
    )  # fmt: skip


def downgrade() -> None:
    """Drop the lease table."""
    op.drop_table("backup_leases")
