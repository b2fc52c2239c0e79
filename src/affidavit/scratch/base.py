"""A database server process started on a random loopback port and stopped by PID.

A scratch server must not outlive the process that started it, even one killed with SIGKILL:
on Linux the child is started with ``PR_SET_PDEATHSIG`` = SIGKILL
(:func:`affidavit.processes.die_with_parent`), so the kernel kills it when its parent dies;
its folder is private (0700), named after its owner and records the server's pid and start
time, so that a later command's :func:`affidavit.private_temp.sweep` removes it (killing the
server first, should it still run) once the owner is provably dead. Elsewhere the server is
stopped by :meth:`stop` only.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from abc import ABC, abstractmethod
from pathlib import Path
from types import TracebackType
from typing import ClassVar, Self

from affidavit.errors import OperationError
from affidavit.private_temp import make_private_folder, open_private, record_process
from affidavit.processes import die_with_parent

_STOP_GRACE_SECONDS = 10.0


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ScratchServer(ABC):
    """One server process in its own temporary folder.

    :meth:`start` picks a free port, launches the process (which dies with this one, see
    :func:`affidavit.processes.die_with_parent`) and waits until it accepts connections;
    :meth:`stop` signals the PID, waits, and removes the folder. Without ``workdir`` the
    folder is a private one of its own
    (:func:`~affidavit.private_temp.make_private_folder`); a given ``workdir`` should lie in
    one (a drill's). Either way the server's pid and start time are recorded in it
    (:func:`~affidavit.private_temp.record_process`).

    What drills need to know of a server is declared on its class: :attr:`label` (how a
    drill names it as its target) and :attr:`preload_format` (the backup file format it can
    start from, :meth:`start_preloaded`, its start-up then being the restore).
    """

    kind: str = "server"
    start_timeout: float = 30.0
    #: how a drill names this server as its target, e.g. ``scratch:redis-server``
    label: ClassVar[str] = "scratch:server"
    #: the backup file format (a registered ``--format`` name) this server can start from,
    #: loading it as it starts (:meth:`start_preloaded`); None: it starts empty, and a drill
    #: restores into it through the engine (:meth:`~affidavit.engines.base.Engine.restore`)
    preload_format: ClassVar[str | None] = None

    def __init__(self, *, workdir: Path | None = None) -> None:
        self._own_dir = workdir is None
        self.workdir = workdir or make_private_folder(self.kind)
        self.port = 0
        self.pid: int | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def host(self) -> str:
        """Always the loopback address."""
        return "127.0.0.1"

    @property
    @abstractmethod
    def uri(self) -> str:
        """The URI a client uses to connect."""

    @abstractmethod
    def command(self, port: int) -> list[str]:
        """The argv that starts the server on ``port``."""

    @abstractmethod
    def ready(self) -> bool:
        """True once the server answers a client request."""

    @property
    def log_path(self) -> Path:
        """Where the server's output goes."""
        return self.workdir / f"{self.kind}.log"

    def preloads(self, fmt: str) -> bool:
        """Whether :meth:`start_preloaded` can start this server from a file of ``fmt``."""
        return self.preload_format is not None and fmt == self.preload_format

    @property
    def preload_path(self) -> Path:
        """Where a file for :meth:`start_preloaded` goes to be used in place (not copied): in
        the server's folder."""
        return self.workdir / f"preload.{self.preload_format}"

    def start_preloaded(self, file: Path) -> Self:
        """Start the server on ``file``, a backup file of :attr:`preload_format`, and wait
        until it has loaded it; raise :class:`OperationError` when it does not come up. The
        default (a server with no :attr:`preload_format`) refuses."""
        raise OperationError(f"the scratch {self.kind} cannot start from a backup file")

    def start(self) -> Self:
        """Start the server; raise :class:`OperationError` when it does not come up."""
        for _attempt in range(3):  # a port picked as free can be taken before we bind it
            self.port = free_port()
            with open_private(self.log_path, "ab") as log:
                self._proc = subprocess.Popen(
                    self.command(self.port),
                    cwd=self.workdir,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    # only system calls run in the child (prctl, getppid, kill): no lock
                    # another thread may hold is taken between fork and exec
                    preexec_fn=die_with_parent(),  # noqa: PLW1509
                )
            self.pid = self._proc.pid
            with contextlib.suppress(OSError):
                record_process(self.workdir, self.pid)
            if self._wait_ready():
                return self
            self.stop(remove=False)
        tail = self.log_path.read_text(errors="replace").strip().splitlines()[-3:]
        raise OperationError(
            f"the scratch {self.kind} did not start: {' | '.join(tail) or 'no output'}",
            hint=f"see {self.log_path}",
        )

    def _wait_ready(self) -> bool:
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            assert self._proc is not None
            if self._proc.poll() is not None:
                return False
            if _port_open(self.port) and self.ready():
                return True
            time.sleep(0.05)
        return False

    def stop(self, *, remove: bool = True) -> None:
        """Stop the process by PID (:meth:`ask_to_stop`, then SIGKILL to its process group
        after a timeout) and remove its folder."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.ask_to_stop(proc.pid)
            try:
                proc.wait(timeout=_STOP_GRACE_SECONDS)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=_STOP_GRACE_SECONDS)
        self.pid = None
        if remove and self._own_dir:
            _rmtree(self.workdir)

    def ask_to_stop(self, pid: int) -> None:
        """Send the server process ``pid`` the signal that stops it: SIGTERM to its process
        group by default."""
        os.killpg(pid, signal.SIGTERM)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _rmtree(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)
