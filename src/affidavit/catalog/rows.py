"""Reading catalog rows into values, where a value affidavit never writes is a damaged row.

affidavit writes only the values of its enums, aware timestamps and the JSON it encoded; a row
holding anything else (a status ``'bogus'``, a date that does not parse, ``'{'`` where JSON
belongs) was altered outside affidavit. Reading it raises
:class:`~affidavit.errors.CatalogRowDamaged` naming the table, the row and the column, never
an internal error. Two places convert, so two guards:

- the repositories' row mappers convert each column through :func:`column` (an enum, a JSON
  document, a timestamp);
- SQLAlchemy itself converts some columns while it loads rows (SQLite keeps timestamps as
  text): :func:`guard_loading` makes every ORM query of a session factory load its rows at
  once and, when a value does not convert, finds the row and column that hold it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

from sqlalchemy import Table, event, inspect, select, type_coerce
from sqlalchemy.engine import Result
from sqlalchemy.orm import Mapper, ORMExecuteState, Session, sessionmaker
from sqlalchemy.types import NullType

from affidavit.errors import CatalogRowDamaged

__all__ = ["aware", "checked", "column", "guard_loading", "json_list", "json_object", "optional"]

T = TypeVar("T")

_DAMAGE = (ValueError, TypeError, KeyError, AttributeError, RecursionError)
"""What a conversion raises for a value it does not accept (``json`` raises
``RecursionError`` for hostile nesting, ``UnicodeDecodeError`` is a ``ValueError``)."""


def _damaged(table: str, key: str, name: str, value: Any) -> CatalogRowDamaged:
    """The error, on one line whatever the row holds."""
    if not key.isprintable() or len(key) > 80:
        key = repr(key[:80])
    shown = repr(value)
    if len(shown) > 40:
        shown = shown[:37] + "..."
    return CatalogRowDamaged.at(table=table, row=key, column=name, value=shown)


def column(row: Any, name: str, convert: Callable[[Any], T]) -> T:
    """``convert`` applied to the column ``name`` of the ORM ``row``; raises
    :class:`CatalogRowDamaged` naming the row's table, primary key and the column when the
    value is not one that ``convert`` accepts."""
    value = getattr(row, name)
    try:
        return convert(value)
    except _DAMAGE as exc:
        state = inspect(row)
        key = ",".join(map(str, state.identity or ())) or "?"
        raise _damaged(state.mapper.local_table.name, key, name, value) from exc


def checked(convert: Callable[[Any], T], value: Any, *, table: str, row: str, name: str) -> T:
    """:func:`column` for a value selected alone: ``value`` of column ``name`` of the row
    with primary key ``row`` in ``table``."""
    try:
        return convert(value)
    except _DAMAGE as exc:
        raise _damaged(table, row, name, value) from exc


def optional(convert: Callable[[Any], T]) -> Callable[[Any], T | None]:
    """``convert`` for a nullable column: None (and an empty value) stays None."""

    def read(value: Any) -> T | None:
        return convert(value) if value not in (None, "", b"") else None

    return read


def aware(value: Any) -> datetime:
    """A stored timestamp as an aware datetime (SQLite hands back naive ones; the catalog
    stores UTC only)."""
    if not isinstance(value, datetime):
        raise TypeError(f"not a timestamp: {type(value).__name__}")
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def text(value: Any) -> str:
    """A text column as text: a value stored as another type (SQLite keeps whatever was
    written) is read as the text of its bytes, so that it hashes as what it is and the ledger
    check that covers it reports the difference, instead of failing every command that reads
    the row."""
    if isinstance(value, str):
        return value
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).decode("utf-8", "replace")
    return "" if value is None else str(value)


def json_object(text: str | bytes) -> dict[str, Any]:
    """A JSON object stored as text."""
    value = json.loads(text)
    if not isinstance(value, dict):
        raise TypeError("not a JSON object")
    return value


def json_list(text: str | bytes) -> list[Any]:
    """A JSON array stored as text."""
    value = json.loads(text)
    if not isinstance(value, list):
        raise TypeError("not a JSON array")
    return value


# -- values SQLAlchemy converts while loading ---------------------------------------------------


def guard_loading(sessions: sessionmaker[Session]) -> None:
    """Make every ORM query of the sessions that ``sessions`` makes load all its rows before
    it returns (the catalog's tables other than the ledger are small; the ledger is read
    through the DB-API), so that a stored value SQLAlchemy cannot convert surfaces here, and
    turn it into :class:`CatalogRowDamaged`."""
    if not event.contains(sessions, "do_orm_execute", _load_rows):
        event.listen(sessions, "do_orm_execute", _load_rows)


def _load_rows(state: ORMExecuteState) -> Result[Any] | None:
    if not state.is_select:
        return None
    result = state.invoke_statement()
    try:
        return result.freeze()()
    except (ValueError, TypeError) as exc:
        found = _unloadable(state.session, state.all_mappers)
        if found is None:
            raise
        raise found from exc


def _unloadable(session: Session, mappers: Sequence[Mapper[Any]]) -> CatalogRowDamaged | None:
    """The first stored value in the tables of ``mappers`` that SQLAlchemy cannot convert
    (read unconverted, then put through the column type's own conversion), or None."""
    connection = session.connection()
    dialect = connection.dialect
    tables = [m.local_table for m in mappers]
    for table in dict.fromkeys(t for t in tables if isinstance(t, Table)):
        keys = list(table.primary_key.columns)
        for col in table.columns:
            convert = col.type.dialect_impl(dialect).result_processor(dialect, None)
            if convert is None:
                continue
            raw = select(*keys, type_coerce(col, NullType())).where(col.is_not(None))
            for *key, value in connection.execute(raw):
                try:
                    convert(value)
                except _DAMAGE:
                    return _damaged(table.name, ",".join(map(str, key)), col.name, value)
    return None
