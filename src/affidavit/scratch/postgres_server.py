"""A throwaway PostgreSQL server (Debian package ``postgresql``), for a catalog under test.

:meth:`PostgresScratch.start` runs ``initdb`` into the server's folder, starts ``postgres``
on a random 127.0.0.1 port (no Unix socket, ``trust`` for 127.0.0.1 only: nothing else can
reach it), waits until it accepts connections and creates the database ``affidavit`` owned
by the superuser ``affidavit``; :attr:`~PostgresScratch.url` is the catalog URL of it.

PostgreSQL refuses to run as root. Started by root, ``initdb`` and ``postgres`` run as an
unprivileged user (``postgres`` where that user exists, else ``nobody``): its data folder
belongs to that user, the server's own folder stays root's (mode 0711, so that the user can
reach the data folder inside it but nobody can list it), and the server is started through
``setpriv``, which changes the credentials and then execs ``postgres``, so the pid is the
postmaster's own and the parent-death signal survives the change (``--pdeathsig keep``).

Durability is off (``fsync``, ``full_page_writes``): a scratch server's data is thrown
away with it.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import pwd
import re
import shutil
import signal
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Self

from affidavit.errors import OperationError
from affidavit.scratch.base import ScratchServer

if TYPE_CHECKING:
    import psycopg

#: where Debian puts the server binaries (``initdb`` and ``postgres`` are not on its PATH)
DEBIAN_BIN = Path("/usr/lib/postgresql")
SUPERUSER = "affidavit"
DATABASE = "affidavit"
_INITDB_SECONDS = 120.0
_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")


def find_binaries() -> Path | None:
    """The folder holding ``initdb`` and ``postgres``: the one on PATH, else Debian's newest
    ``/usr/lib/postgresql/N/bin``; None when PostgreSQL is not installed."""
    on_path = shutil.which("initdb")
    if on_path is not None:
        folder = Path(on_path).resolve().parent
        if (folder / "postgres").is_file():
            return folder
    versions: list[tuple[int, Path]] = []
    with contextlib.suppress(OSError):
        for entry in DEBIAN_BIN.iterdir():
            if entry.name.isdigit() and (entry / "bin" / "initdb").is_file():
                versions.append((int(entry.name), entry / "bin"))
    return max(versions)[1] if versions else None


class PostgresScratch(ScratchServer):
    """``postgres`` on 127.0.0.1 with a fresh cluster in a temp folder (see the module).

    ``user`` is who runs the server when this process is root (default: ``postgres``, else
    ``nobody``); otherwise the server runs as this process's user. ``bin_dir`` is where
    ``initdb`` and ``postgres`` are (default: :func:`find_binaries`).
    """

    kind = "postgres"
    label: ClassVar[str] = "scratch:postgres"

    def __init__(
        self, *, bin_dir: Path | None = None, user: str | None = None, **kwargs: object
    ) -> None:
        found = bin_dir or find_binaries()
        if found is None:
            raise OperationError(
                "PostgreSQL is not installed",
                hint="install it: apt-get install postgresql (make test does this as root)",
            )
        if importlib.util.find_spec("psycopg") is None:  # what the readiness check speaks
            raise OperationError(
                "the Python package psycopg is not installed",
                hint="pip install 'affidavit[postgresql]' (make test installs it)",
            )
        self.bin_dir = found
        self._account = _account(user) if os.geteuid() == 0 else None
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.data_dir = self.workdir / "data"
        self._initialised = False

    @property
    def run_as(self) -> str:
        """The user the server runs as."""
        if self._account is not None:
            return self._account.pw_name
        return pwd.getpwuid(os.geteuid()).pw_name

    @property
    def uri(self) -> str:
        return self.url_for(DATABASE)

    @property
    def url(self) -> str:
        """The catalog URL (SQLAlchemy with psycopg 3) of the database ``affidavit``."""
        return self.uri

    def url_for(self, database: str) -> str:
        """The catalog URL of another database of this server."""
        return f"postgresql+psycopg://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> Self:
        """Create the cluster (once), start the server and create the database ``affidavit``;
        raise :class:`OperationError` when any of it fails."""
        if not self._initialised:
            self._initdb()
            self._initialised = True
        super().start()
        try:
            self.create_database(DATABASE)
        except BaseException:
            self.stop()
            raise
        return self

    def ask_to_stop(self, pid: int) -> None:
        """Fast shutdown: SIGINT to the postmaster (clients are disconnected, nothing is
        waited for)."""
        os.kill(pid, signal.SIGINT)

    def command(self, port: int) -> list[str]:
        argv = [
            str(self.bin_dir / "postgres"),
            "-D", str(self.data_dir),
            "-p", str(port),
            "-c", "listen_addresses=127.0.0.1",
            "-c", "unix_socket_directories=",  # none: 127.0.0.1 is the only way in
            "-c", "fsync=off",
            "-c", "full_page_writes=off",
            "-c", "max_connections=100",
            "-c", "logging_collector=off",
        ]  # fmt: skip
        return self._as_user(argv)

    def ready(self) -> bool:
        """True once the server accepts a session (not while it starts up or recovers)."""
        try:
            with self._connect("postgres") as conn:
                conn.execute("SELECT 1")
        except OperationError:
            return False
        return True

    # -- databases ----------------------------------------------------------------------------

    def create_database(self, name: str) -> str:
        """Create the database ``name`` (lower-case letters, digits, ``_``) unless it exists;
        return its catalog URL."""
        from psycopg import sql

        with self._connect("postgres") as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
            if exists.fetchone() is None:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(_name(name))))
        return self.url_for(name)

    def drop_database(self, name: str) -> None:
        """Drop the database ``name``, disconnecting whoever is connected to it."""
        from psycopg import sql

        statement = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)")
        with self._connect("postgres") as conn:
            conn.execute(statement.format(sql.Identifier(_name(name))))

    def execute(
        self, database: str, statement: str, params: tuple[Any, ...] = ()
    ) -> list[tuple[Any, ...]]:
        """Run one statement (``%s`` placeholders) in ``database``, autocommitted, and return
        its rows: what a test does to a catalog behind affidavit's back."""
        with self._connect(database) as conn:
            cursor = conn.execute(statement, params)
            return list(cursor.fetchall()) if cursor.description else []

    # -- internals ----------------------------------------------------------------------------

    def _connect(self, database: str) -> psycopg.Connection[tuple[Any, ...]]:
        try:
            import psycopg
        except ModuleNotFoundError as exc:
            raise OperationError(
                "the Python package psycopg is not installed",
                hint="pip install 'affidavit[postgresql]' (make test installs it)",
            ) from exc
        try:
            return psycopg.connect(
                host="127.0.0.1",
                port=self.port,
                user=SUPERUSER,
                dbname=database,
                autocommit=True,
                connect_timeout=2,
            )
        except psycopg.Error as exc:
            raise OperationError(f"the scratch postgres: {exc}".splitlines()[0]) from exc

    def _initdb(self) -> None:
        """A new cluster in :attr:`data_dir`, owned by :attr:`run_as`, whose only way in is
        ``trust`` from 127.0.0.1 as the superuser ``affidavit``."""
        self.data_dir.mkdir(mode=0o700)
        if self._account is not None:
            os.chown(self.data_dir, self._account.pw_uid, self._account.pw_gid)
            # the user must reach its data folder; the folder around it stays root's
            os.chmod(self.workdir, 0o711)  # noqa: S103 - searchable, not listable
        argv = [
            str(self.bin_dir / "initdb"),
            "-D", str(self.data_dir),
            "-U", SUPERUSER,
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C",
            "--no-sync",
            "--no-instructions",
        ]  # fmt: skip
        try:
            done = subprocess.run(
                self._as_user(argv),
                cwd=self.workdir,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=_INITDB_SECONDS,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise OperationError(f"initdb did not run: {exc}") from exc
        if done.returncode != 0:
            output = (done.stderr or done.stdout).decode(errors="replace").strip().splitlines()
            raise OperationError(
                f"initdb failed: {' | '.join(output[-3:]) or f'exit {done.returncode}'}",
                hint=f"every folder above {self.data_dir} must be searchable by {self.run_as}",
            )
        hba = self.data_dir / "pg_hba.conf"
        hba.write_text(
            "# affidavit scratch server: the superuser, over TCP from 127.0.0.1, nothing else\n"
            f"host all {SUPERUSER} 127.0.0.1/32 trust\n",
            encoding="utf-8",
        )

    def _as_user(self, argv: list[str]) -> list[str]:
        """``argv`` run as :attr:`run_as`: through ``setpriv`` when this process is root
        (which execs, so the pid stays the server's, and keeps the parent-death signal)."""
        if self._account is None:
            return argv
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            raise OperationError(
                "setpriv is not installed (PostgreSQL refuses to run as root)",
                hint="install util-linux, or run as an unprivileged user",
            )
        return [
            setpriv,
            f"--reuid={self._account.pw_uid}",
            f"--regid={self._account.pw_gid}",
            "--clear-groups",
            "--pdeathsig=keep",
            "--",
            *argv,
        ]


def _account(user: str | None) -> pwd.struct_passwd:
    """The unprivileged account to run as (``user``, else ``postgres``, else ``nobody``)."""
    for name in (user,) if user is not None else ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            account = pwd.getpwnam(name)
            if account.pw_uid != 0:
                return account
    raise OperationError(
        f"no unprivileged user {user or 'postgres or nobody'} to run PostgreSQL as",
        hint="PostgreSQL refuses to run as root: create such a user, or run as another user",
    )


def _name(name: str) -> str:
    if not _NAME.fullmatch(name):
        raise ValueError(f"not a database name: {name!r}")
    return name
