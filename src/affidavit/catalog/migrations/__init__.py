"""Alembic migrations of the catalog schema (run by :mod:`affidavit.catalog.store`)."""
