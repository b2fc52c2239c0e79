"""A throwaway SecantusDB server: a MongoDB-wire-protocol server (PyPI ``SecantusDB``)."""

from __future__ import annotations

import importlib.util
import socket
import struct
import sys
from typing import ClassVar

from affidavit.errors import OperationError
from affidavit.scratch.base import ScratchServer

_OP_MSG = 2013


class SecantusScratch(ScratchServer):
    """``python -m secantus`` on 127.0.0.1, storage in a temp folder, single-node replica set."""

    kind = "secantus"
    label: ClassVar[str] = "scratch:secantus"

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        if importlib.util.find_spec("secantus") is None:
            raise OperationError(
                "SecantusDB is not installed in this Python environment",
                hint="pip install SecantusDB (make demo / make test install it)",
            )

    @property
    def uri(self) -> str:
        return f"mongodb://127.0.0.1:{self.port}/?directConnection=true"

    def command(self, port: int) -> list[str]:
        return [
            sys.executable, "-m", "secantus",
            "--host", "127.0.0.1",
            "--port", str(port),
            "--storage-path", str(self.workdir / "data"),
            "--log-level", "WARNING",
        ]  # fmt: skip

    def ready(self) -> bool:
        # a minimal OP_MSG {ping: 1, $db: "admin"}; any OP_MSG reply means the server is up
        body = (
            b"\x10ping\x00\x01\x00\x00\x00"  # int32 ping: 1
            b"\x02$db\x00\x06\x00\x00\x00admin\x00"
        )
        doc = struct.pack("<i", len(body) + 5) + body + b"\x00"
        payload = struct.pack("<I", 0) + b"\x00" + doc
        header = struct.pack("<iiii", 16 + len(payload), 1, 0, _OP_MSG)
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=2.0) as sock:
                sock.sendall(header + payload)
                reply = sock.recv(16)
                return len(reply) == 16 and struct.unpack("<i", reply[12:16])[0] == _OP_MSG
        except OSError:
            return False
