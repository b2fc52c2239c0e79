"""A database server process started on a random loopback port and stopped by PID."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import tempfile
import time
from abc import ABC, abstractmethod
from pathlib import Path
from types import TracebackType
from typing import Self

from affidavit.errors import OperationError

_STOP_GRACE_SECONDS = 10.0


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ScratchServer(ABC):
    """One server process in its own temporary folder.

    :meth:`start` picks a free port, launches the process and waits until it accepts
    connections; :meth:`stop` signals the PID, waits, and removes the folder.
    """

    kind: str = "server"
    start_timeout: float = 30.0

    def __init__(self, *, workdir: Path | None = None) -> None:
        self._own_dir = workdir is None
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix=f"affidavit-{self.kind}-"))
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

    def start(self) -> Self:
        """Start the server; raise :class:`OperationError` when it does not come up."""
        for _attempt in range(3):  # a port picked as free can be taken before we bind it
            self.port = free_port()
            with self.log_path.open("ab") as log:
                self._proc = subprocess.Popen(
                    self.command(self.port),
                    cwd=self.workdir,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            self.pid = self._proc.pid
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
        """Stop the process by PID (SIGTERM, then SIGKILL) and remove its folder."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=_STOP_GRACE_SECONDS)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=_STOP_GRACE_SECONDS)
        self.pid = None
        if remove and self._own_dir:
            _rmtree(self.workdir)

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
