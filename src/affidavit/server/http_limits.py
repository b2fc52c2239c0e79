"""The HTTP/1.1 protocol the server speaks: uvicorn's ``httptools`` protocol (llhttp, in C),
with a bound on a request's head.

llhttp refuses what HTTP forbids in a head (control characters in header values, bad
framing) but, unlike ``h11``, sets no limit on its size: the request line and headers it
buffers until they are complete could grow with whatever a client sends. Here every
connection counts the bytes it received since its current request began; once they pass
:data:`MAX_HEAD_BYTES` before the head is complete the connection is answered ``431 Request
Header Fields Too Large`` and closed, before anything reaches the app. (Bodies are bounded
by :class:`~affidavit.server.hardening.Hardening`.)

When ``httptools`` is not installed, :func:`protocol` answers ``"h11"``: uvicorn's pure-Python
parser, whose own limit on an incomplete head applies.
"""

from __future__ import annotations

import asyncio
from typing import Any, Final

MAX_HEAD_BYTES: Final = 64 * 1024
_REFUSAL: Final = (
    b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
    b"content-type: text/plain; charset=utf-8\r\n"
    b"content-length: 37\r\n"
    b"connection: close\r\n\r\n"
    b"the request's headers are too large\r\n"
)


def protocol() -> type[asyncio.Protocol] | str:
    """The protocol class to give ``uvicorn.Config(http=...)``."""
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
    except ImportError:  # httptools is not installed
        return "h11"

    class BoundedHttpToolsProtocol(HttpToolsProtocol):
        """uvicorn's httptools protocol, refusing a head over :data:`MAX_HEAD_BYTES`."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._head_bytes = 0
            self._in_head = True
            self._refused = False

        def data_received(self, data: bytes) -> None:
            if self._refused:
                return
            if self._in_head:
                self._head_bytes += len(data)
                if self._head_bytes > MAX_HEAD_BYTES:
                    self._refused = True
                    if not self.transport.is_closing():
                        self.transport.write(_REFUSAL)
                        self.transport.close()
                    return
            super().data_received(data)

        def on_headers_complete(self) -> None:
            self._in_head = False
            super().on_headers_complete()

        def on_message_complete(self) -> None:
            super().on_message_complete()
            self._in_head, self._head_bytes = True, 0

    return BoundedHttpToolsProtocol
