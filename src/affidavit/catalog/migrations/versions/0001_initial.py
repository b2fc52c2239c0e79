"""Initial catalog: inventory (sources, datasets, vaults) and the ledger.

Revision ID: 0001
Revises:
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create the first schema."""
    op.create_table(
        "sources",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("engine", sa.String(16), nullable=False),
        sa.Column("uri", sa.Text(), nullable=False),
        sa.Column("secret_kind", sa.String(8)),
        sa.Column("secret_locator", sa.Text()),
        sa.Column("classification", sa.String(16), nullable=False),
        sa.Column("region", sa.String(64)),
        sa.Column("owner", sa.String(254)),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_sources"),
        sa.UniqueConstraint("name", name="uq_sources_name"),
    )
    op.create_table(
        "datasets",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("source_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(512), nullable=False),
        sa.Column("classification", sa.String(16)),
        sa.Column("classification_reason", sa.Text()),
        sa.Column("records", sa.BigInteger()),
        sa.Column("discovered_at", sa.DateTime(timezone=True)),
        sa.PrimaryKeyConstraint("id", name="pk_datasets"),
        sa.ForeignKeyConstraint(
            ["source_id"],
            ["sources.id"],
            name="fk_datasets_source_id_sources",
            ondelete="CASCADE",
        ),
        sa.UniqueConstraint("source_id", "name", name="uq_datasets_source_id"),
    )
    op.create_table(
        "vaults",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("region", sa.String(64)),
        sa.Column("immutable_days", sa.Integer()),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_vaults"),
        sa.UniqueConstraint("name", name="uq_vaults_name"),
    )
    op.create_table(
        "ledger_entries",
        sa.Column("seq", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("time", sa.String(32), nullable=False),
        sa.Column("actor", sa.Text(), nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("subject", sa.Text(), nullable=False),
        sa.Column("entry", sa.LargeBinary(), nullable=False),
        sa.Column("leaf_hash", sa.LargeBinary(32), nullable=False),
        sa.PrimaryKeyConstraint("seq", name="pk_ledger_entries"),
    )
    op.create_index("ix_ledger_entries_action", "ledger_entries", ["action"])
    op.create_table(
        "ledger_nodes",
        sa.Column("level", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("index", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("hash", sa.LargeBinary(32), nullable=False),
        sa.PrimaryKeyConstraint("level", "index", name="pk_ledger_nodes"),
    )
    op.create_table(
        "ledger_checkpoints",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("root", sa.LargeBinary(32), nullable=False),
        sa.Column("note", sa.Text(), nullable=False),
        sa.Column("created_at", sa.String(32), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_ledger_checkpoints"),
    )
    op.create_index("ix_ledger_checkpoints_size", "ledger_checkpoints", ["size"])


def downgrade() -> None:
    """Drop everything (only for tests of the migration chain)."""
    for table in (
        "ledger_checkpoints",
        "ledger_nodes",
        "ledger_entries",
        "vaults",
        "datasets",
        "sources",
    ):
        op.drop_table(table)
