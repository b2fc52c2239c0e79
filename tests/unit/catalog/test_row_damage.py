"""Catalog rows holding values affidavit never writes raise ``CatalogRowDamaged`` (exit 3)
naming the table, the row and the column: values the row mappers convert (an enum, JSON) and
values SQLAlchemy converts while loading the row (SQLite keeps timestamps as text)."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from affidavit.constants import ExitCode
from affidavit.errors import CatalogRowDamaged
from affidavit.services.context import App


def _vault(cli: Any, home: Path, statement: str) -> None:
    assert cli("vault", "add", "v1", "--url", f"file://{home.parent / 'vault'}").code == 0
    with sqlite3.connect(home / "catalog.sqlite") as con:
        assert con.execute(statement).rowcount == 1


@pytest.mark.parametrize(
    ("statement", "column", "shown"),
    [
        ("UPDATE vaults SET kind = 'tape'", "kind", "'tape'"),
        ("UPDATE vaults SET created_at = 'yesterday'", "created_at", "'yesterday'"),
        ("UPDATE vaults SET created_at = 17", "created_at", "17"),
    ],
    ids=["enum", "date", "integer-date"],
)
def test_a_damaged_vault_row_is_named(
    cli: Any, home: Path, app: App, statement: str, column: str, shown: str
) -> None:
    _vault(cli, home, statement)
    with app.read() as uow, pytest.raises(CatalogRowDamaged) as caught:
        uow.vaults.list()
    error = caught.value
    assert (error.table, error.row, error.column) == ("vaults", "1", column)
    assert error.exit_code == ExitCode.CANNOT_RUN
    assert error.message == f"damaged catalog row: vaults row 1, column {column} holds {shown}"
    assert "affidavit ledger verify" in error.hint


def test_a_damaged_row_spoils_only_the_reads_of_its_table(cli: Any, home: Path, app: App) -> None:
    _vault(cli, home, "UPDATE vaults SET created_at = 'yesterday'")
    with app.read() as uow:
        assert uow.sources.list() == []
        with pytest.raises(CatalogRowDamaged):
            uow.vaults.get("v1")


def test_hostile_json_nesting_is_a_damaged_row(cli: Any, home: Path, app: App) -> None:
    deep = "[" * 100_000
    with sqlite3.connect(home / "catalog.sqlite") as con:
        con.execute(
            "INSERT INTO alerts (created_at, kind, subject, payload, deliveries) "
            "VALUES ('2026-01-01 00:00:00.000000', 'k', 's', '{}', ?)",
            (deep,),
        )
    with app.read() as uow, pytest.raises(CatalogRowDamaged) as caught:
        uow.checks.alerts()
    assert (caught.value.table, caught.value.column) == ("alerts", "deliveries")
    assert len(caught.value.message) < 200  # the value is shown cut short
