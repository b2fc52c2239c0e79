"""Identities: accounts, role grants, API tokens, login sessions, recovery codes, TOTP
credentials and failed-login counters.

No secret is stored in the clear: passwords as argon2id hashes, token and session secrets
and recovery codes as SHA-256, TOTP secrets wrapped by a key-encryption key (see
``affidavit.services.identity``). Every table is new and starts empty.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

_WHEN = sa.DateTime(timezone=True)


def _account_fk(table: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        ["account_id"], ["accounts.id"], name=f"fk_{table}_account_id_accounts",
        ondelete="CASCADE",
    )  # fmt: skip


def upgrade() -> None:
    """Add the identity tables."""
    op.create_table(
        "accounts",
        sa.Column("id", sa.String(16), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("display_name", sa.Text()),
        sa.Column("email", sa.String(254)),
        sa.Column("password_hash", sa.Text()),
        sa.Column("created_at", _WHEN, nullable=False),
        sa.Column("created_by", sa.Text(), nullable=False),
        sa.Column("disabled_at", _WHEN),
        sa.Column("disabled_reason", sa.Text()),
        sa.Column("oidc_issuer", sa.Text()),
        sa.Column("oidc_subject", sa.Text()),
        sa.PrimaryKeyConstraint("id", name="pk_accounts"),
        sa.UniqueConstraint("name", name="uq_accounts_name"),
    )
    op.create_table(
        "role_grants",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("account_id", sa.String(16), nullable=False),
        sa.Column("role", sa.String(32), nullable=False),
        sa.Column("granted_at", _WHEN, nullable=False),
        sa.Column("granted_by", sa.Text(), nullable=False),
        sa.Column("seq", sa.BigInteger()),
        sa.PrimaryKeyConstraint("id", name="pk_role_grants"),
        sa.UniqueConstraint("account_id", "role", name="uq_role_grants_account_id"),
        _account_fk("role_grants"),
    )
    op.create_table(
        "api_tokens",
        sa.Column("id", sa.String(16), nullable=False),
        sa.Column("account_id", sa.String(16), nullable=False),
        sa.Column("secret_sha256", sa.String(64), nullable=False),
        sa.Column("scopes", sa.Text(), nullable=False),
        sa.Column("created_at", _WHEN, nullable=False),
        sa.Column("created_by", sa.Text(), nullable=False),
        sa.Column("expires_at", _WHEN, nullable=False),
        sa.Column("revoked_at", _WHEN),
        sa.Column("revoked_by", sa.Text()),
        sa.Column("last_used_at", _WHEN),
        sa.PrimaryKeyConstraint("id", name="pk_api_tokens"),
        _account_fk("api_tokens"),
    )
    op.create_index("ix_api_tokens_account_id", "api_tokens", ["account_id"])
    op.create_table(
        "sessions",
        sa.Column("id", sa.String(16), nullable=False),
        sa.Column("account_id", sa.String(16), nullable=False),
        sa.Column("secret_sha256", sa.String(64), nullable=False),
        sa.Column("method", sa.String(32), nullable=False),
        sa.Column("created_at", _WHEN, nullable=False),
        sa.Column("last_seen_at", _WHEN, nullable=False),
        sa.Column("idle_expires_at", _WHEN, nullable=False),
        sa.Column("absolute_expires_at", _WHEN, nullable=False),
        sa.Column("mfa_at", _WHEN),
        sa.Column("ended_at", _WHEN),
        sa.Column("client_address", sa.Text()),
        sa.Column("client_agent", sa.Text()),
        sa.PrimaryKeyConstraint("id", name="pk_sessions"),
        _account_fk("sessions"),
    )
    op.create_index("ix_sessions_account_id", "sessions", ["account_id"])
    op.create_table(
        "recovery_codes",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("account_id", sa.String(16), nullable=False),
        sa.Column("code_sha256", sa.String(64), nullable=False),
        sa.Column("created_at", _WHEN, nullable=False),
        sa.Column("used_at", _WHEN),
        sa.PrimaryKeyConstraint("id", name="pk_recovery_codes"),
        _account_fk("recovery_codes"),
    )
    op.create_index("ix_recovery_codes_account_id", "recovery_codes", ["account_id"])
    op.create_table(
        "totp_credentials",
        sa.Column("account_id", sa.String(16), nullable=False),
        sa.Column("wrapped_secret", sa.LargeBinary(), nullable=False),
        sa.Column("kek_id", sa.String(256), nullable=False),
        sa.Column("kek_version", sa.Integer(), nullable=False),
        sa.Column("created_at", _WHEN, nullable=False),
        sa.Column("confirmed_at", _WHEN),
        sa.Column("last_step", sa.BigInteger()),
        sa.PrimaryKeyConstraint("account_id", name="pk_totp_credentials"),
        _account_fk("totp_credentials"),
    )
    op.create_table(
        "login_failures",
        sa.Column("key", sa.String(64), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("lockouts", sa.Integer(), nullable=False),
        sa.Column("last_failure_at", _WHEN),
        sa.Column("locked_until", _WHEN),
        sa.PrimaryKeyConstraint("key", name="pk_login_failures"),
    )


def downgrade() -> None:
    """Drop the identity tables (their contents are lost; the ledger keeps their events)."""
    for index, table in (
        ("ix_recovery_codes_account_id", "recovery_codes"),
        ("ix_sessions_account_id", "sessions"),
        ("ix_api_tokens_account_id", "api_tokens"),
    ):
        op.drop_index(index, table_name=table)
    for table in ("login_failures", "totp_credentials", "recovery_codes", "sessions",
                  "api_tokens", "role_grants", "accounts"):  # fmt: skip
        op.drop_table(table)
