"""A throwaway ``redis-server`` (Debian package ``redis-server``)."""

from __future__ import annotations

import shutil
import socket

from affidavit.errors import OperationError
from affidavit.scratch.base import ScratchServer


class RedisScratch(ScratchServer):
    """``redis-server`` on 127.0.0.1 with persistence off and its data in a temp folder."""

    kind = "redis"

    def __init__(self, *, executable: str | None = None, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        found = executable or shutil.which("redis-server")
        if found is None:
            raise OperationError(
                "redis-server is not installed",
                hint="install it: apt-get install redis-server (make test does this as root)",
            )
        self.executable = found

    @property
    def uri(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def command(self, port: int) -> list[str]:
        return [
            self.executable,
            "--port", str(port),
            "--bind", "127.0.0.1",
            "--dir", str(self.workdir),
            "--save", "",
            "--appendonly", "no",
            "--daemonize", "no",
            "--protected-mode", "yes",
        ]  # fmt: skip

    def ready(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1.0) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False
