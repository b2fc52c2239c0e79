"""Backups, their artifacts and datasets, and legal holds.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add the backup tables."""
    op.create_table(
        "backups",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("source", sa.String(64)),
        sa.Column("vault", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("format", sa.String(32), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True)),
        sa.Column("retain_until", sa.DateTime(timezone=True), nullable=False),
        sa.Column("consistency", sa.Text()),
        sa.Column("manifest", sa.LargeBinary()),
        sa.Column("manifest_sha256", sa.String(64)),
        sa.Column("envelope", sa.Text()),
        sa.Column("recipient", sa.String(128)),
        sa.Column("wrapped_identity", sa.LargeBinary()),
        sa.Column("kek_id", sa.String(256)),
        sa.Column("kek_version", sa.Integer()),
        sa.Column("error", sa.Text()),
        sa.Column("deleted_at", sa.DateTime(timezone=True)),
        sa.PrimaryKeyConstraint("id", name="pk_backups"),
    )
    op.create_index("ix_backups_source", "backups", ["source"])
    op.create_table(
        "backup_artifacts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("backup_id", sa.String(64), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("plain_size", sa.BigInteger()),
        sa.Column("plain_sha256", sa.String(64)),
        sa.Column("dataset", sa.String(512)),
        sa.Column("deleted", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_backup_artifacts"),
        sa.ForeignKeyConstraint(
            ["backup_id"], ["backups.id"], name="fk_backup_artifacts_backup_id_backups",
            ondelete="CASCADE",
        ),
        sa.UniqueConstraint("backup_id", "path", name="uq_backup_artifacts_backup_id"),
    )  # fmt: skip
    op.create_table(
        "backup_datasets",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("backup_id", sa.String(64), nullable=False),
        sa.Column("name", sa.String(512), nullable=False),
        sa.Column("records", sa.BigInteger(), nullable=False),
        sa.Column("fingerprint", sa.String(128), nullable=False),
        sa.Column("classification", sa.String(16), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_backup_datasets"),
        sa.ForeignKeyConstraint(
            ["backup_id"], ["backups.id"], name="fk_backup_datasets_backup_id_backups",
            ondelete="CASCADE",
        ),
        sa.UniqueConstraint("backup_id", "name", name="uq_backup_datasets_backup_id"),
    )  # fmt: skip
    op.create_table(
        "holds",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("backup_id", sa.String(64), nullable=False),
        sa.Column("case_id", sa.String(128), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.Text(), nullable=False),
        sa.Column("released_at", sa.DateTime(timezone=True)),
        sa.Column("released_by", sa.Text()),
        sa.Column("release_reason", sa.Text()),
        sa.PrimaryKeyConstraint("id", name="pk_holds"),
        sa.ForeignKeyConstraint(
            ["backup_id"], ["backups.id"], name="fk_holds_backup_id_backups", ondelete="CASCADE"
        ),
    )


def downgrade() -> None:
    """Drop the backup tables."""
    for table in ("holds", "backup_datasets", "backup_artifacts", "backups"):
        op.drop_table(table)
