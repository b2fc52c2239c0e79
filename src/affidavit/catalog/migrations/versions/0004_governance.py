"""Governance: policy versions, findings and their trail, exceptions, baselines, check runs.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add the governance tables."""
    op.create_table(
        "policy_versions",
        sa.Column("version", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("proposed_by", sa.Text(), nullable=False),
        sa.Column("proposed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("proposal_seq", sa.BigInteger()),
        sa.Column("approved_by", sa.Text()),
        sa.Column("approved_at", sa.DateTime(timezone=True)),
        sa.Column("approval_seq", sa.BigInteger()),
        sa.PrimaryKeyConstraint("version", name="pk_policy_versions"),
    )
    op.create_table(
        "findings",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("control", sa.String(64), nullable=False),
        sa.Column("subject", sa.Text(), nullable=False),
        sa.Column("severity", sa.String(16), nullable=False),
        sa.Column("owner", sa.Text(), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("opened_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("due_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("evidence", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_findings"),
    )
    op.create_index("ix_findings_control", "findings", ["control"])
    op.create_index("ix_findings_status", "findings", ["status"])
    op.create_table(
        "finding_steps",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("finding_id", sa.String(32), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.Text(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("note", sa.Text(), nullable=False),
        sa.Column("seq", sa.BigInteger()),
        sa.PrimaryKeyConstraint("id", name="pk_finding_steps"),
        sa.ForeignKeyConstraint(
            ["finding_id"], ["findings.id"], name="fk_finding_steps_finding_id_findings",
            ondelete="CASCADE",
        ),
    )  # fmt: skip
    op.create_index("ix_finding_steps_finding_id", "finding_steps", ["finding_id"])
    op.create_table(
        "policy_exceptions",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("control", sa.String(64), nullable=False),
        sa.Column("subject", sa.Text(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("requested_by", sa.Text(), nullable=False),
        sa.Column("requested_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("approved_by", sa.Text()),
        sa.Column("approved_at", sa.DateTime(timezone=True)),
        sa.PrimaryKeyConstraint("id", name="pk_policy_exceptions"),
    )
    op.create_table(
        "baselines",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("approved_by", sa.Text(), nullable=False),
        sa.Column("approved_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("content", sa.LargeBinary(), nullable=False),
        sa.Column("seq", sa.BigInteger()),
        sa.PrimaryKeyConstraint("id", name="pk_baselines"),
    )
    op.create_table(
        "check_runs",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.Text(), nullable=False),
        sa.Column("policy_version", sa.Integer()),
        sa.Column("ok", sa.Boolean(), nullable=False),
        sa.Column("results", sa.Text(), nullable=False),
        sa.Column("seq", sa.BigInteger()),
        sa.PrimaryKeyConstraint("id", name="pk_check_runs"),
    )
    op.create_index("ix_check_runs_at", "check_runs", ["at"])


def downgrade() -> None:
    """Drop the governance tables."""
    for index, table in (
        ("ix_check_runs_at", "check_runs"),
        ("ix_finding_steps_finding_id", "finding_steps"),
        ("ix_findings_status", "findings"),
        ("ix_findings_control", "findings"),
    ):
        op.drop_index(index, table_name=table)
    for table in ("check_runs", "baselines", "policy_exceptions", "finding_steps", "findings",
                  "policy_versions"):  # fmt: skip
        op.drop_table(table)
