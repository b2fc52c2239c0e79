"""Governed exports (issue 17): recipients, versioned export specs and export runs.

Three new tables, empty at first: ``export_recipients`` (with each recipient's
pseudonymisation key, wrapped by the KEK), ``export_specs`` (one row per spec version) and
``export_runs`` (one row per run, with its signed manifest once completed).

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add ``export_recipients``, ``export_specs`` and ``export_runs``."""
    op.create_table(
        "export_recipients",
        sa.Column("name", sa.String(63), nullable=False),
        sa.Column("organisation", sa.String(200), nullable=False),
        sa.Column("contact", sa.String(200), nullable=False),
        sa.Column("public_key", sa.String(128), nullable=False),
        sa.Column("dpa", sa.String(200), nullable=True),
        sa.Column("added_by", sa.String(200), nullable=False),
        sa.Column("added_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("challenge_sha256", sa.String(64), nullable=True),
        sa.Column("verified_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("verified_seq", sa.BigInteger(), nullable=True),
        sa.Column("kek_id", sa.String(256), nullable=False),
        sa.Column("kek_version", sa.Integer(), nullable=False),
        sa.Column("pseudonym_key", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_export_recipients"),
    )
    op.create_table(
        "export_specs",
        sa.Column("name", sa.String(63), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False, autoincrement=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("proposed_by", sa.String(200), nullable=False),
        sa.Column("proposed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("proposal_seq", sa.BigInteger(), nullable=False),
        sa.Column("approved_by", sa.String(200), nullable=True),
        sa.Column("approved_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("approval_seq", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("name", "version", name="pk_export_specs"),
    )
    op.create_table(
        "export_runs",
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("spec", sa.String(63), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("backup_id", sa.String(64), nullable=False),
        sa.Column("recipient", sa.String(63), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_by", sa.String(200), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("output_path", sa.Text(), nullable=True),
        sa.Column("output_sha256", sa.String(64), nullable=True),
        sa.Column("records_out", sa.BigInteger(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("envelope", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_export_runs"),
    )
    op.create_index("ix_export_runs_spec", "export_runs", ["spec"])


def downgrade() -> None:
    """Drop the three tables (recipients, specs and runs are lost; their events stay)."""
    op.drop_index("ix_export_runs_spec", table_name="export_runs")
    op.drop_table("export_runs")
    op.drop_table("export_specs")
    op.drop_table("export_recipients")
