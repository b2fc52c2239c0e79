"""Verifications, restore drills and alerts.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add the tables of checks."""
    op.create_table(
        "verifications",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("backup_id", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ok", sa.Boolean(), nullable=False),
        sa.Column("sample_percent", sa.Float()),
        sa.Column("sample_seed", sa.String(64)),
        sa.Column("coverage", sa.Text()),
        sa.Column("findings", sa.Text(), nullable=False),
        sa.Column("envelope", sa.Text()),
        sa.PrimaryKeyConstraint("id", name="pk_verifications"),
        sa.ForeignKeyConstraint(
            ["backup_id"], ["backups.id"], name="fk_verifications_backup_id_backups",
            ondelete="CASCADE",
        ),
    )  # fmt: skip
    op.create_index("ix_verifications_backup_id", "verifications", ["backup_id"])
    op.create_table(
        "drills",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("backup_id", sa.String(64), nullable=False),
        sa.Column("target", sa.Text(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ok", sa.Boolean(), nullable=False),
        sa.Column("rto_seconds", sa.Float()),
        sa.Column("restore_seconds", sa.Float(), nullable=False),
        sa.Column("fingerprint_match", sa.Boolean(), nullable=False),
        sa.Column("phases", sa.Text(), nullable=False),
        sa.Column("probes", sa.Text(), nullable=False),
        sa.Column("findings", sa.Text(), nullable=False),
        sa.Column("envelope", sa.Text()),
        sa.PrimaryKeyConstraint("id", name="pk_drills"),
        sa.ForeignKeyConstraint(
            ["backup_id"], ["backups.id"], name="fk_drills_backup_id_backups", ondelete="CASCADE"
        ),
    )
    op.create_index("ix_drills_backup_id", "drills", ["backup_id"])
    op.create_table(
        "alerts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("subject", sa.Text(), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("deliveries", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_alerts"),
    )


def downgrade() -> None:
    """Drop the tables of checks."""
    for table in ("alerts", "drills", "verifications"):
        op.drop_table(table)
