"""Alembic environment: always runs on the connection handed in by the catalog."""

from __future__ import annotations

from alembic import context

from affidavit.catalog.schema import Base

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=True,  # SQLite cannot ALTER most things; batch mode copies tables
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
