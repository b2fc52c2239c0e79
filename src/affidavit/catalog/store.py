"""Opening the catalog database, migrating it, and the unit of work.

SQLite runs in WAL mode and every unit of work starts with ``BEGIN IMMEDIATE`` so that writers
are serialised (the ledger's sequence numbers depend on it) while readers go on. A unit of work
commits the catalog change and its ledger event together, or neither.

On PostgreSQL every unit of work first takes ``LOCK TABLE ledger_entries IN SHARE ROW
EXCLUSIVE MODE`` (held to its commit or rollback; it conflicts with itself, not with plain
reads), the equivalent of ``BEGIN IMMEDIATE``: units of work of any number of processes and
hosts take their turn, and each reads the ledger's head after the one before it committed.

A reader takes no such lock: on SQLite it begins a deferred transaction (WAL: one consistent
snapshot from its first read, never waiting for a writer), on PostgreSQL a ``REPEATABLE READ,
READ ONLY`` one (one snapshot for all its statements; a write inside it is an error). So
reads never queue behind writes, and a writer never waits for readers.
Sessions run in UTC (timestamps come back with a zero offset whatever the server's
``TimeZone``) and wait for the lock as long as SQLite waits for a busy database.
"""

from __future__ import annotations

import sqlite3
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Generic, TypeVar, overload

from sqlalchemy import Connection, Engine, RootTransaction, create_engine, event, inspect, text
from sqlalchemy.exc import DBAPIError, OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from affidavit.catalog.repository import (
    BackupRepository,
    CheckRepository,
    DatasetRepository,
    LedgerRepository,
    SourceRepository,
    VaultRepository,
)
from affidavit.catalog.rows import guard_loading
from affidavit.errors import CatalogError, CatalogVersionError, InputError

if TYPE_CHECKING:  # the repositories a command may not use load on first use (start-up)
    from alembic.script import ScriptDirectory
    from sqlalchemy.pool import PoolProxiedConnection

    from affidavit.catalog.access_log import AccessLogRepository
    from affidavit.catalog.exports import ExportRepository
    from affidavit.catalog.governance import GovernanceRepository
    from affidavit.catalog.identities import IdentityRepository
    from affidavit.catalog.oidc_logins import OidcLoginRepository

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
SCHEMA_HEAD = "0011"
"""The newest migration's revision (a test holds it equal to alembic's head): the schema check
of every command compares the catalog's version with it and loads alembic, which is slow to
import, only when they differ."""
_BUSY_TIMEOUT_MS = 30_000
_READ_SNAPSHOT = "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY"


class _Transaction:
    """The one database transaction of a unit of work, opened on first use.

    On SQLite the transaction runs on a pooled DB-API connection (``BEGIN IMMEDIATE``,
    ``COMMIT``) and an ORM :class:`Session` is bound to it only when something asks for one:
    a ledger-only change (an event and its checkpoint) then never pays for the session's
    begin/flush/commit bookkeeping. A session created later joins the same transaction (it
    never commits it; this object does). Other databases use a session from the start.
    """

    __slots__ = (
        "_begin",
        "_conn",
        "_dbapi",
        "_ended",
        "_engine",
        "_fairy",
        "_lock",
        "_raw",
        "_session",
        "_sessions",
        "_spare",
        "_trans",
        "qmark",
        "read_only",
    )

    def __init__(
        self,
        engine: Engine,
        sessions: sessionmaker[Session],
        *,
        lock: str | None,
        spare: list[PoolProxiedConnection] | None = None,
        read_only: bool = False,
    ) -> None:
        self._engine = engine
        self._sessions = sessions
        # the statement that opens it on a server database: the writers' lock, or a read-only
        # snapshot; on SQLite, how it begins (writers serialised; readers deferred)
        self._lock = lock
        self.read_only = read_only
        self._begin = "BEGIN" if read_only else "BEGIN IMMEDIATE"
        self._raw = engine.dialect.name == "sqlite"
        self.qmark = engine.dialect.paramstyle == "qmark"
        # the catalog's connection kept checked out between units of work (SQLite): taking it
        # costs nothing, where a pool checkout and check-in cost as much as a statement
        self._spare = spare if spare is not None else []
        self._fairy: PoolProxiedConnection | None = None  # the pool's handle (SQLite)
        self._ended = False  # committed or rolled back, cleanly
        self._dbapi: Any = None  # the DB-API connection, in a transaction once set
        self._conn: Connection | None = None
        self._trans: RootTransaction | None = None
        self._session: Session | None = None

    @classmethod
    def of_session(cls, session: Session) -> _Transaction:
        """A transaction that is ``session``'s own (committed by the caller's session)."""
        bind = session.get_bind()
        tx = cls(bind if isinstance(bind, Engine) else bind.engine, sessionmaker(), lock=None)
        tx._raw = False
        tx._session = session
        return tx

    def dbapi(self) -> Any:
        """The DB-API connection, inside the transaction (begun here on first use)."""
        if self._dbapi is None:
            if self._raw:
                try:
                    fairy = self._spare.pop()
                except IndexError:
                    fairy = self._engine.raw_connection()
                dbapi: Any = fairy.dbapi_connection
                try:
                    dbapi.execute(self._begin)
                except BaseException:
                    fairy.close()
                    raise
                self._fairy, self._dbapi = fairy, dbapi
            else:
                # the pool's proxy: cursor() and commit() reach the driver's connection
                self._dbapi = self.session().connection().connection
        return self._dbapi

    def session(self) -> Session:
        """The ORM session of this transaction (created and joined on first use)."""
        if self._session is None:
            if self._raw:
                self.dbapi()
                assert self._fairy is not None
                conn = Connection(self._engine, connection=self._fairy)
                # the connection is in BEGIN IMMEDIATE already: the "begin" listener sees it
                self._trans = conn.begin()
                self._conn = conn
                # joins the open transaction; commit() below ends it, the session never does
                self._session = self._sessions(bind=conn)
            else:
                self._session = self._sessions()
                if self._lock is not None:
                    self._session.execute(text(self._lock))
        return self._session

    def commit(self) -> None:
        """Flush the session (if any) and commit."""
        if not self._raw:
            if self._session is not None:
                self._session.commit()
            return
        if self._session is not None:
            self._session.commit()  # flushes; the transaction itself is ours
            assert self._trans is not None
            self._trans.commit()
        elif self._dbapi is not None:
            self._dbapi.commit()
        self._ended = True

    def rollback(self) -> None:
        """Roll back whatever ran; a connection that cannot roll back is discarded."""
        if not self._raw:
            if self._session is not None:
                self._session.rollback()
            return
        try:
            if self._session is not None:
                self._session.close()
            if self._trans is not None and self._trans.is_active:
                self._trans.rollback()
            elif self._dbapi is not None and self._dbapi.in_transaction:
                self._dbapi.rollback()
        except BaseException:
            if self._fairy is not None:
                self._fairy.invalidate()
            raise
        self._ended = True

    def close(self) -> None:
        """Hand the connection back to the pool (after commit or rollback)."""
        if self._session is not None:
            self._session.close()
        if self._conn is not None:
            self._conn.close()  # also returns the pooled connection
        elif self._fairy is not None:
            idle = self._ended and not self._dbapi.in_transaction
            if idle and not self._spare:
                self._spare.append(self._fairy)  # kept for the next unit of work
            else:
                self._fairy.close()
        self._session = self._conn = self._trans = self._fairy = self._dbapi = None


_R = TypeVar("_R")


class _repository(Generic[_R]):  # a decorator, named like one
    """``functools.cached_property`` without its lock, for the repositories of a unit of work.

    Python 3.11's ``cached_property`` holds one lock per *class attribute* while its getter
    runs, and these getters begin the transaction (on SQLite, ``BEGIN IMMEDIATE``, which waits
    for the database). Two threads of one process, each in a unit of work of its own (the
    server's requests), then wait for each other, one on the lock and the other on the
    database, until the busy timeout. A unit of work belongs to one thread, so nothing needs
    the lock (Python 3.12 removed it as well)."""

    def __init__(self, getter: Callable[[Any], _R]) -> None:
        self._getter = getter
        self._name = getter.__name__
        self.__doc__ = getter.__doc__

    @overload
    def __get__(self, instance: None, owner: type | None = None) -> _repository[_R]: ...
    @overload
    def __get__(self, instance: object, owner: type | None = None) -> _R: ...
    def __get__(self, instance: object | None, owner: type | None = None) -> Any:
        if instance is None:
            return self
        value = self._getter(instance)
        instance.__dict__[self._name] = value
        return value


class UnitOfWork:
    """One database transaction with the repositories that work inside it.

    The repositories are built on first use; the ORM session (``session``) only when an ORM
    repository needs it: the ledger's statements run on the transaction's DB-API connection.

    ``memo`` holds what a service derived from this transaction's reads, for the rest of it;
    ``catalog_memo`` what it keeps between units of work of the same :class:`Catalog` (one
    per ``App``; every thread's units of work share it). Neither is ever trusted blindly: a
    value is kept with the key it was derived under (say, the newest ledger entry it read),
    and a later unit of work uses it only when it reads the same key in its own transaction.
    A writer's transaction may change what it read, so only a reader's (:attr:`read_only`)
    derivations are kept.
    """

    def __init__(
        self, session: Session | _Transaction, *, catalog_memo: dict[str, object] | None = None
    ) -> None:
        self._tx = (
            session if isinstance(session, _Transaction) else _Transaction.of_session(session)
        )
        self._ledger: LedgerRepository | None = None
        self.memo: dict[str, object] = {}
        self.catalog_memo: dict[str, object] = catalog_memo if catalog_memo is not None else {}

    @property
    def read_only(self) -> bool:
        """Whether this is a reader's transaction (:meth:`Catalog.reader`): one snapshot,
        nothing written."""
        return self._tx.read_only

    @property
    def session(self) -> Session:
        """The ORM session, joined to this unit of work's transaction."""
        return self._tx.session()

    @_repository
    def sources(self) -> SourceRepository:
        """Registered sources."""
        return SourceRepository(self.session)

    @_repository
    def datasets(self) -> DatasetRepository:
        """Datasets and their classification."""
        return DatasetRepository(self.session)

    @_repository
    def vaults(self) -> VaultRepository:
        """Registered vaults."""
        return VaultRepository(self.session)

    @property
    def ledger(self) -> LedgerRepository:
        """The ledger's storage (statements on the DB-API connection; no session needed)."""
        if self._ledger is None:  # by hand: on the append path, cached_property's lock shows
            self._ledger = LedgerRepository(self._tx.dbapi, qmark=self._tx.qmark)
        return self._ledger

    @_repository
    def backups(self) -> BackupRepository:
        """Backups, their artifacts and holds."""
        return BackupRepository(self.session)

    @_repository
    def checks(self) -> CheckRepository:
        """Verifications, drills, alerts."""
        return CheckRepository(self.session)

    @_repository
    def governance(self) -> GovernanceRepository:
        """Policy versions, baselines, findings, exceptions."""
        from affidavit.catalog.governance import GovernanceRepository

        return GovernanceRepository(self.session)

    @_repository
    def access_log(self) -> AccessLogRepository:
        """The access log's storage (statements on the DB-API connection, as the ledger's)."""
        from affidavit.catalog.access_log import AccessLogRepository

        return AccessLogRepository(self._tx.dbapi, qmark=self._tx.qmark)

    @_repository
    def identities(self) -> IdentityRepository:
        """Accounts, role grants, tokens, sessions, TOTP credentials, failed logins."""
        from affidavit.catalog.identities import IdentityRepository

        return IdentityRepository(self.session)

    @_repository
    def oidc_logins(self) -> OidcLoginRepository:
        """Single sign-on logins under way (sealed by the service)."""
        from affidavit.catalog.oidc_logins import OidcLoginRepository

        return OidcLoginRepository(self.session)

    @_repository
    def exports(self) -> ExportRepository:
        """Export recipients, spec versions and runs."""
        from affidavit.catalog.exports import ExportRepository

        return ExportRepository(self.session)


class Catalog:
    """The catalog database: inventory, history and the ledger's storage."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._engine = _make_engine(url)
        self._sessions = sessionmaker(self._engine, expire_on_commit=False)
        guard_loading(self._sessions)  # a value stored behind our back: CatalogRowDamaged
        # what the driver raises (statements on the raw connection are not wrapped by SQLAlchemy)
        self._dbapi_error: type[Exception] = self._engine.dialect.loaded_dbapi.Error
        # at most one pooled connection kept checked out between units of work; handed back
        # by close() (or when the catalog is collected)
        self._spare: list[PoolProxiedConnection] = []
        weakref.finalize(self, _release, self._spare)
        # what services derived from the catalog, kept between units of work under the key
        # each was derived at (see UnitOfWork)
        self._memo: dict[str, object] = {}
        self._lock: str | None = None
        if self._engine.dialect.name == "postgresql":
            # one writer at a time appends to the ledger (sequence numbers are dense)
            self._lock = "LOCK TABLE ledger_entries IN SHARE ROW EXCLUSIVE MODE"

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
        if self._at_head():
            return
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

    def _at_head(self) -> bool:
        """Whether the catalog's one schema version is :data:`SCHEMA_HEAD` (read without
        alembic; anything else, unreadable included, takes alembic's way)."""
        try:
            with self._engine.connect() as conn:
                rows = conn.execute(text("SELECT version_num FROM alembic_version")).all()
        except SQLAlchemyError:
            return False
        return [row[0] for row in rows] == [SCHEMA_HEAD]

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
        tx = self._transaction("write the catalog")
        try:
            yield UnitOfWork(tx, catalog_memo=self._memo)
            tx.commit()
        except (SQLAlchemyError, self._dbapi_error) as exc:
            _rollback_quietly(tx)
            raise _wrap(exc, "write the catalog") from exc
        except BaseException:
            tx.rollback()
            raise
        finally:
            tx.close()

    @contextmanager
    def reader(self) -> Iterator[UnitOfWork]:
        """A read-only view; never commits, never waits for a writer (see the module
        docstring)."""
        tx = self._transaction("read the catalog", read_only=True)
        try:
            yield UnitOfWork(tx, catalog_memo=self._memo)
        except (SQLAlchemyError, self._dbapi_error) as exc:
            raise _wrap(exc, "read the catalog") from exc
        finally:
            try:
                tx.rollback()
            finally:
                tx.close()

    def _transaction(self, doing: str, *, read_only: bool = False) -> _Transaction:
        lock = self._lock
        if lock is not None and read_only:
            lock = _READ_SNAPSHOT
        tx = _Transaction(
            self._engine, self._sessions, lock=lock, spare=self._spare, read_only=read_only
        )
        if lock is not None:
            try:
                tx.session()  # taken up front, as before any read
            except (SQLAlchemyError, self._dbapi_error) as exc:  # unreachable, or a lock timeout
                _rollback_quietly(tx)
                tx.close()
                raise _wrap(exc, doing) from exc
        return tx

    def describe(self) -> str:
        """The catalog's location without credentials."""
        return self._engine.url.render_as_string(hide_password=True)

    def close(self) -> None:
        """Release pooled connections."""
        _release(self._spare)
        self._engine.dispose()


def _script() -> ScriptDirectory:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    return ScriptDirectory.from_config(cfg)


POOL_KEPT: Final = 16
"""Connections a server-catalog engine keeps open; also the most synchronous calls a server
process runs at once (its thread limiter), so that requests never open connections."""
POOL_OVERFLOW: Final = 8
"""Connections opened beyond :data:`POOL_KEPT` when more threads need one (closed again)."""


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
        # the server runs synchronous work on at most POOL_KEPT threads per process
        # (affidavit.server.app): the pool keeps that many connections, so no transaction
        # opens one (connecting costs more CPU than the transaction; an overflow connection
        # is closed again when returned); the overflow serves other threads
        engine = create_engine(
            url, pool_pre_ping=True, pool_size=POOL_KEPT, max_overflow=POOL_OVERFLOW
        )
        if engine.dialect.name == "postgresql":
            event.listen(engine, "connect", _postgresql_on_connect)
        return engine
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


def _postgresql_on_connect(dbapi_conn: Any, _record: Any) -> None:
    # the catalog holds UTC only: a session in the server's own TimeZone would hand back
    # timestamps with that zone's offset (the same instants, shown and serialised otherwise);
    # a writer waits for the ledger's lock as long as SQLite's busy timeout, then fails
    cur = dbapi_conn.cursor()
    try:
        cur.execute("SET TIME ZONE 'UTC'")
        cur.execute(f"SET lock_timeout = {int(_BUSY_TIMEOUT_MS)}")
    finally:
        cur.close()
    dbapi_conn.commit()


def _sqlite_begin_immediate(conn: Any) -> None:
    # straight to the DB-API connection; a unit of work that began it itself (see
    # _Transaction) is already inside BEGIN IMMEDIATE when its session joins
    dbapi = conn.connection.dbapi_connection
    if not dbapi.in_transaction:
        dbapi.execute("BEGIN IMMEDIATE")


def _release(spare: list[PoolProxiedConnection]) -> None:
    while spare:
        with suppress(Exception):
            spare.pop().close()


def _rollback_quietly(tx: _Transaction) -> None:
    # the original error is what the caller needs to see, not a failed rollback after it
    with suppress(Exception):
        tx.rollback()


def _wrap(exc: Exception, doing: str) -> CatalogError:
    """A :class:`CatalogError` for an SQLAlchemy error or a DB-API error of the driver."""
    detail = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
    message = str(detail).splitlines()[0] if str(detail) else type(detail).__name__
    operational = isinstance(exc, OperationalError) or any(
        kind.__name__ == "OperationalError" for kind in type(detail).__mro__
    )  # the driver's own class (sqlite3, psycopg), raised by statements on the raw connection
    hint = ""
    if operational and ("locked" in message or "lock timeout" in message):
        hint = "another affidavit process holds the catalog; retry when it has finished"
    elif operational:
        hint = "check that the catalog file or server is reachable and writable"
    return CatalogError(f"could not {doing}: {message}", hint=hint or None)
