"""Opening the catalog database, migrating it, and the unit of work.

SQLite runs in WAL mode and every unit of work starts with ``BEGIN IMMEDIATE`` so that writers
are serialised (the ledger's sequence numbers depend on it) while readers go on. A unit of work
commits the catalog change and its ledger event together, or neither.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, create_engine, event, inspect, text
from sqlalchemy.exc import DBAPIError, OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from affidavit.catalog.governance import GovernanceRepository
from affidavit.catalog.repository import (
    BackupRepository,
    CheckRepository,
    DatasetRepository,
    LedgerRepository,
    SourceRepository,
    VaultRepository,
)
from affidavit.errors import CatalogError, CatalogVersionError, InputError

if TYPE_CHECKING:
    from alembic.script import ScriptDirectory

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
_BUSY_TIMEOUT_MS = 30_000


class UnitOfWork:
    """One database transaction with the repositories that work inside it."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self.sources = SourceRepository(session)
        self.datasets = DatasetRepository(session)
        self.vaults = VaultRepository(session)
        self.ledger = LedgerRepository(session)
        self.backups = BackupRepository(session)
        self.checks = CheckRepository(session)
        self.governance = GovernanceRepository(session)


class Catalog:
    """The catalog database: inventory, history and the ledger's storage."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._engine = _make_engine(url)
        self._sessions = sessionmaker(self._engine, expire_on_commit=False)

    # -- schema -----------------------------------------------------------------------------

    def schema_state(self) -> tuple[str | None, str]:
        """Return (current revision or None when empty, head revision of this affidavit)."""
        from alembic.runtime.migration import MigrationContext  # alembic loads slowly: lazily

        head = _script().get_current_head()
        assert head is not None
        try:
            with self._engine.connect() as conn:
                current = MigrationContext.configure(conn).get_current_revision()
        except SQLAlchemyError as exc:
            raise _wrap(exc, "read the catalog's schema version") from exc
        return current, head

    def upgrade(self) -> tuple[str | None, str]:
        """Create or upgrade the schema to head, idempotently. Return (before, after)."""
        current, head = self.schema_state()
        self._refuse_unknown(current)
        if current != head:
            from alembic import command
            from alembic.config import Config

            cfg = Config()
            cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
            try:
                with self._engine.begin() as conn:
                    cfg.attributes["connection"] = conn
                    command.upgrade(cfg, "head")
            except SQLAlchemyError as exc:
                raise _wrap(exc, "migrate the catalog") from exc
        return current, head

    def check_schema(self) -> None:
        """Raise unless the schema is exactly at this affidavit's head revision."""
        current, head = self.schema_state()
        if current is None:
            if self._has_tables():
                raise CatalogVersionError(
                    f"{self.describe()} is not an affidavit catalog (it has no schema version)"
                )
            raise InputError(
                f"no catalog at {self.describe()}",
                hint="run `affidavit init` first (or point --home / AFFIDAVIT_HOME at one)",
            )
        self._refuse_unknown(current)
        if current != head:
            raise InputError(
                f"the catalog schema is at revision {current}, this affidavit needs {head}",
                hint="run `affidavit init` to upgrade it (take a copy of the catalog first)",
            )

    def _refuse_unknown(self, current: str | None) -> None:
        if current is None:
            return
        known = {rev.revision for rev in _script().walk_revisions()}
        if current not in known:
            raise CatalogVersionError(
                f"the catalog at {self.describe()} has schema revision {current!r}, "
                "newer than this affidavit knows"
            )

    def _has_tables(self) -> bool:
        with self._engine.connect() as conn:
            return bool(inspect(conn).get_table_names())

    # -- transactions -----------------------------------------------------------------------

    @contextmanager
    def unit_of_work(self) -> Iterator[UnitOfWork]:
        """A write transaction: commits on normal exit, rolls back on any exception."""
        session = self._sessions()
        try:
            if self._engine.dialect.name == "postgresql":
                # one writer at a time appends to the ledger (sequence numbers are dense)
                session.execute(text("LOCK TABLE ledger_entries IN SHARE ROW EXCLUSIVE MODE"))
            yield UnitOfWork(session)
            session.commit()
        except SQLAlchemyError as exc:
            session.rollback()
            raise _wrap(exc, "write the catalog") from exc
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()

    @contextmanager
    def reader(self) -> Iterator[UnitOfWork]:
        """A read-only view; never commits."""
        session = self._sessions()
        try:
            yield UnitOfWork(session)
        except SQLAlchemyError as exc:
            raise _wrap(exc, "read the catalog") from exc
        finally:
            session.rollback()
            session.close()

    def describe(self) -> str:
        """The catalog's location without credentials."""
        return self._engine.url.render_as_string(hide_password=True)

    def close(self) -> None:
        """Release pooled connections."""
        self._engine.dispose()


def _script() -> ScriptDirectory:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    return ScriptDirectory.from_config(cfg)


def _make_engine(url: str) -> Engine:
    try:
        if url.startswith("sqlite"):
            path = url.split("///", 1)[-1]
            if path and path != ":memory:":
                parent = Path(path).parent
                if not parent.is_dir():
                    raise InputError(
                        f"the catalog folder {parent} does not exist",
                        hint="run `affidavit init` or check --home / AFFIDAVIT_HOME",
                    )
            # a pooled connection is kept between units of work: reconnecting costs the PRAGMAs
            # and, on closing the last connection, a WAL checkpoint with its own fsync
            engine = create_engine(url, pool_size=2, max_overflow=8, pool_reset_on_return=None)
            event.listen(engine, "connect", _sqlite_on_connect)
            event.listen(engine, "begin", _sqlite_begin_immediate)
            return engine
        return create_engine(url, pool_pre_ping=True)
    except (SQLAlchemyError, ValueError) as exc:
        raise InputError(
            f"invalid catalog URL: {exc}",
            hint="use sqlite:///PATH or postgresql+psycopg://USER@HOST/DB",
        ) from exc
    except ModuleNotFoundError as exc:
        raise InputError(
            f"the catalog URL needs the Python package {exc.name!r}",
            hint="install the database driver, e.g. pip install psycopg",
        ) from exc


def _sqlite_on_connect(dbapi_conn: sqlite3.Connection, _record: Any) -> None:
    # let SQLAlchemy's "begin" event issue BEGIN IMMEDIATE instead of pysqlite's own BEGIN
    dbapi_conn.isolation_level = None
    cur = dbapi_conn.cursor()
    cur.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
    cur.execute("PRAGMA journal_mode = WAL")
    cur.execute("PRAGMA synchronous = FULL")
    cur.execute("PRAGMA foreign_keys = ON")
    cur.close()


def _sqlite_begin_immediate(conn: Any) -> None:
    # straight to the DB-API connection: this runs once per unit of work, on the append path
    conn.connection.dbapi_connection.execute("BEGIN IMMEDIATE")


def _wrap(exc: SQLAlchemyError, doing: str) -> CatalogError:
    detail = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
    message = str(detail).splitlines()[0] if str(detail) else type(detail).__name__
    hint = ""
    if isinstance(exc, OperationalError) and "locked" in message:
        hint = "another affidavit process holds the catalog; retry when it has finished"
    elif isinstance(exc, OperationalError):
        hint = "check that the catalog file or server is reachable and writable"
    return CatalogError(f"could not {doing}: {message}", hint=hint or None)
