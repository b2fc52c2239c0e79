"""Single sign-on logins under way move from the server's memory into the catalog, so that
the provider's answer may reach any of the server's worker processes (``serve --workers``).

One new table, ``oidc_logins``, empty at first (logins under way in a server that stops are
lost either way: the person begins again). Each row's content is sealed by the identity
key-encryption key and bound to its key (``services.oidc``).

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add ``oidc_logins``."""
    op.create_table(
        "oidc_logins",
        sa.Column("key", sa.String(96), nullable=False),
        sa.Column("kek_id", sa.String(256), nullable=False),
        sa.Column("kek_version", sa.Integer(), nullable=False),
        sa.Column("sealed", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("key", name="pk_oidc_logins"),
    )
    op.create_index("ix_oidc_logins_created_at", "oidc_logins", ["created_at"])


def downgrade() -> None:
    """Drop ``oidc_logins`` (logins under way are lost)."""
    op.drop_index("ix_oidc_logins_created_at", table_name="oidc_logins")
    op.drop_table("oidc_logins")
