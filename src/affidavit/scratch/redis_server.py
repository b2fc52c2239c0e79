"""A throwaway ``redis-server`` (Debian package ``redis-server``)."""

from __future__ import annotations

import shutil
import socket
from pathlib import Path
from typing import ClassVar, Self

from affidavit.errors import OperationError
from affidavit.private_temp import open_private
from affidavit.scratch.base import ScratchServer

#: seconds to wait for a server that loads an RDB at start-up (about 1 GiB per 10-20 s)
RDB_START_TIMEOUT = 600.0


class RedisScratch(ScratchServer):
    """``redis-server`` on 127.0.0.1 with persistence off and its data in a temp folder.

    With ``rdb``, the server starts from that RDB file: it is copied into the work folder
    (unless it is already there) and named as the server's ``--dbfilename``, so Redis loads
    it at start-up exactly as after a restart. :meth:`ready` is true only once the load is
    over (Redis answers ``-LOADING`` until then). Saving stays off, so the server never
    rewrites the file it loaded. ``replica_sync_delay`` (seconds) sets how long it waits
    before it streams an RDB to a replica that sent ``SYNC`` (Redis' default: 5).
    :meth:`start_preloaded` starts an unstarted server from an RDB the same way.
    """

    kind = "redis"
    label: ClassVar[str] = "scratch:redis-server"
    preload_format: ClassVar[str | None] = "rdb"

    def __init__(
        self,
        *,
        executable: str | None = None,
        rdb: Path | None = None,
        start_timeout: float | None = None,
        replica_sync_delay: int | None = None,
        **kwargs: object,
    ) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.replica_sync_delay = replica_sync_delay
        found = executable or shutil.which("redis-server")
        if found is None:
            raise OperationError(
                "redis-server is not installed",
                hint="install it: apt-get install redis-server (make test does this as root)",
            )
        self.executable = found
        self.rdb: Path | None = None
        self._timeout_given = start_timeout is not None
        if start_timeout is not None:
            self.start_timeout = start_timeout
        if rdb is not None:
            self._place(rdb)

    def _place(self, rdb: Path) -> None:
        """Make ``rdb`` the server's ``--dbfilename``: used in place when it lies in the work
        folder, else copied there as ``dump.rdb``."""
        if not rdb.is_file():
            raise OperationError(f"the RDB {rdb} does not exist")
        placed = rdb if rdb.resolve().parent == self.workdir.resolve() else None
        if placed is None:
            placed = self.workdir / "dump.rdb"
            with rdb.open("rb") as src, open_private(placed) as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
        self.rdb = placed
        if not self._timeout_given:
            self.start_timeout = RDB_START_TIMEOUT

    @property
    def preload_path(self) -> Path:
        """``dump.rdb`` in the work folder (Redis' own default name)."""
        return self.workdir / "dump.rdb"

    def start_preloaded(self, file: Path) -> Self:
        """Start from the RDB ``file`` (see the class), ready once Redis has loaded it. A
        server started on a backup is read back by one replica, the drill's (``SYNC``): unless
        ``replica_sync_delay`` was given, it streams its RDB at once (no wait for more)."""
        self._place(file)
        if self.replica_sync_delay is None:
            self.replica_sync_delay = 0
        return self.start()

    @property
    def uri(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def command(self, port: int) -> list[str]:
        argv = [
            self.executable,
            "--port", str(port),
            "--bind", "127.0.0.1",
            "--dir", str(self.workdir),
            "--save", "",
            "--appendonly", "no",
            "--daemonize", "no",
            "--protected-mode", "yes",
        ]  # fmt: skip
        if self.rdb is not None:
            argv += ["--dbfilename", self.rdb.name]
        if self.replica_sync_delay is not None:  # Redis' default (5 s) waits for more replicas
            argv += ["--repl-diskless-sync-delay", str(self.replica_sync_delay)]
        return argv

    def ready(self) -> bool:
        """True once PING answers ``+PONG``; false while Redis answers ``-LOADING``."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1.0) as sock:
                sock.sendall(b"PING\r\n")
                reply = sock.recv(64)
        except OSError:
            return False
        return reply.startswith(b"+PONG")  # -LOADING ...: still reading the RDB
