"""Serving from several processes: one listening socket, ``N`` forked uvicorn workers, and a
supervisor that keeps them running and stops them by PID.

Why processes: one Python process serves one request at a time on the CPU (one GIL), and a
request costs milliseconds of CPU, so a single process saturates one core however many
clients wait (docs/performance.md, *API under load*). Why fork, and not uvicorn's own
``--workers``: uvicorn's supervisor *spawns* its workers, which must then rebuild the app from
an import string and the settings from somewhere (the environment, a file): secrets (the key
file's passphrase, the OpenID client secret) would travel or be re-read. A fork inherits the
app object built here, before any catalog is opened; each worker then opens its own
:class:`~affidavit.services.context.App` in its lifespan (its own connection pool), so no
connection, lock or thread crosses the fork.

What the workers share is what one process would share between its requests: the catalog
(every change a transaction under the writers' lock; the caches each worker keeps are checked
against the catalog's newest entries at every read), the signers' memories beside the keys
(``flock``), and the OpenID logins under way (a catalog table: :mod:`affidavit.services.oidc`).

The supervisor (the parent) accepts nothing itself. It forks the workers, restarts one that
dies unexpectedly (at most :data:`MAX_RESTARTS` times per minute, then it stops everything
rather than flap), and on SIGINT or SIGTERM sends SIGTERM to every worker, waits up to
:data:`STOP_GRACE` seconds for their requests under way, then SIGKILLs what is left.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from types import FrameType
from typing import TYPE_CHECKING, Final

from affidavit.processes import die_with_parent

if TYPE_CHECKING:
    import uvicorn

log = logging.getLogger("affidavit.server")

MAX_WORKERS: Final = 64
MAX_RESTARTS: Final = 5
RESTART_WINDOW: Final = 60.0  # seconds
STOP_GRACE: Final = 30.0  # seconds a worker gets to finish its requests under way


@dataclass(slots=True)
class Supervisor:
    """The parent of the workers: their PIDs, recent restarts, and whether it is stopping."""

    config: uvicorn.Config
    count: int
    sock: socket.socket | None = None
    workers: set[int] = field(default_factory=set)
    restarts: deque[float] = field(default_factory=deque)
    stopping: bool = False

    def run(self) -> int:
        """Bind, fork the workers, supervise until a signal; the exit status."""
        self.sock = self.config.bind_socket()
        previous = {
            signum: signal.signal(signum, self._stop) for signum in (signal.SIGINT, signal.SIGTERM)
        }
        try:
            for _ in range(self.count):
                self._fork()
            log.info("serving with %d worker processes: %s", self.count, sorted(self.workers))
            return self._watch()
        finally:
            self._terminate()
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            self.sock.close()

    def _stop(self, signum: int, _frame: FrameType | None) -> None:
        """A signal: stop. The workers get SIGTERM now, so that the ``waitpid`` the
        supervisor sits in (retried after a handler, PEP 475) returns as they end."""
        if not self.stopping:
            log.info("stopping %d workers (%s)", len(self.workers), signal.Signals(signum).name)
        self.stopping = True
        for pid in list(self.workers):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    def _fork(self) -> None:
        assert self.sock is not None
        orphan_guard = die_with_parent()  # looked up here, called in the worker
        # SIGINT and SIGTERM wait while the worker still has the supervisor's handler (which
        # would run there on the copy of the supervisor: the worker would signal its siblings
        # and outlive the signal meant to stop it); it gets them once its own are in place
        stopping = (signal.SIGINT, signal.SIGTERM)
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, stopping)
        try:
            pid = os.fork()
        except BaseException:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
            raise
        if pid == 0:  # the worker
            code = 1
            try:
                # its own process group: a Ctrl-C at the terminal (SIGINT to the foreground
                # group) reaches the supervisor alone, which stops each worker once (a second
                # signal would make uvicorn force-exit, cutting requests in flight)
                os.setpgid(0, 0)
                for signum in stopping:
                    signal.signal(signum, signal.SIG_DFL)  # uvicorn installs its own
                signal.pthread_sigmask(signal.SIG_SETMASK, mask)
                if orphan_guard is not None:  # a supervisor killed by SIGKILL takes it along
                    orphan_guard()
                code = _serve(self.config, self.sock)
            except BaseException:  # a worker reports and exits, never returns
                log.exception("worker %d failed", os.getpid())
            finally:
                with contextlib.suppress(Exception):
                    sys.stdout.flush()
                    sys.stderr.flush()
                os._exit(code)
        self.workers.add(pid)
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)

    def _watch(self) -> int:
        """Reap workers; restart one that died while not stopping."""
        while True:
            try:
                pid, status = os.waitpid(-1, 0)
            except ChildProcessError:
                return 0 if self.stopping else 1  # no worker left
            if pid not in self.workers:
                continue
            self.workers.discard(pid)
            if self._stopped():
                return 0
            log.error("worker %d ended (%s); starting another", pid, _status_text(status))
            now = time.monotonic()
            self.restarts.append(now)
            while self.restarts and now - self.restarts[0] > RESTART_WINDOW:
                self.restarts.popleft()
            if len(self.restarts) > MAX_RESTARTS:
                log.error(
                    "workers ended %d times within %.0f s: stopping the server",
                    len(self.restarts),
                    RESTART_WINDOW,
                )
                return 1
            self._fork()

    def _stopped(self) -> bool:
        return self.stopping  # set by the signal handler while waitpid waits

    def _terminate(self) -> None:
        """SIGTERM every worker, wait up to :data:`STOP_GRACE`, SIGKILL the rest; reap all."""
        for pid in list(self.workers):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE
        while self.workers and time.monotonic() < deadline:
            for pid in list(self.workers):
                with contextlib.suppress(ChildProcessError):
                    done, _ = os.waitpid(pid, os.WNOHANG)
                    if done == 0:
                        continue
                self.workers.discard(pid)
            if self.workers:
                time.sleep(0.05)
        for pid in list(self.workers):
            log.error("worker %d did not stop within %.0f s: killed", pid, STOP_GRACE)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
            self.workers.discard(pid)


def _serve(config: uvicorn.Config, sock: socket.socket) -> int:
    import uvicorn

    server = uvicorn.Server(config)
    server.run(sockets=[sock])
    return 0 if server.started else 3


def _status_text(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"killed by {signal.Signals(os.WTERMSIG(status)).name}"
    return f"exit status {os.WEXITSTATUS(status)}"


def serve_workers(config: uvicorn.Config, count: int) -> int:
    """Serve ``config`` from ``count`` forked workers until SIGINT or SIGTERM."""
    return Supervisor(config=config, count=count).run()
