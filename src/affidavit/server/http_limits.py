"""The HTTP/1.1 protocol the server speaks: uvicorn's ``httptools`` protocol (llhttp, in C),
with a bound on a request's head.

llhttp refuses what HTTP forbids in a head (control characters in header values, bad
framing) but, unlike ``h11``, sets no limit on its size: the request line and headers it
buffers until they are complete could grow with whatever a client sends. Here every
connection counts the bytes of the head it is reading; once they pass
:data:`MAX_HEAD_BYTES` before the head is complete the connection is answered ``431 Request
Header Fields Too Large`` and closed, before anything reaches the app. (Bodies are bounded
by :class:`~affidavit.server.hardening.Hardening`.) A head must also arrive within
:data:`MAX_HEAD_SECONDS` of the connection (or of the end of the previous response): llhttp
and uvicorn set no such limit, and a client sending a head a byte at a time (or nothing)
held its connection, and a file descriptor, for ever; a late head is answered ``408`` and
the connection closed (one that sent nothing is closed quietly). The refusals, these and
the parser's own ``400`` for bytes that are not HTTP, are in the access log
(:func:`affidavit.server.access.record_refusal`).

Two counts, so that only a head's bytes count, however the reads fall:

- a head still incomplete: what arrives is fed to the parser in pieces of at most
  :data:`_PIECE` bytes, and a piece counts when a head is incomplete after it. The next
  request's head glued to the end of a body counts from the piece it began in (it cannot hide
  in the read that completes the request before it); a pipelined head is over-counted by at
  most one piece (the end of the message before it);
- a head complete: its request target and headers as parsed (plus their separators), so the
  bytes of a body that came in the same read never count (a request with a 60 KiB body is not
  refused), nor do small requests pipelined in one write.

When ``httptools`` is not installed, :func:`protocol` answers ``"h11"``: uvicorn's pure-Python
parser, whose own limit on an incomplete head applies.
"""

from __future__ import annotations

import asyncio
from typing import Any, Final

MAX_HEAD_BYTES: Final = 64 * 1024
MAX_HEAD_SECONDS: Final = 20.0
"""How long a request's head may take to arrive, from the connection (or the end of the
previous response) to its blank line."""
_PIECE: Final = 4096  # bytes fed to the parser at a time
_HEAD_LINE: Final = 24  # a request line's bytes beside its target: method, version, CRLFs


class _HeadTooLarge(Exception):
    """Raised in the parser's callback to stop it (it becomes the parser's error)."""


_TIMEOUT: Final = (
    b"HTTP/1.1 408 Request Timeout\r\n"
    b"content-type: text/plain; charset=utf-8\r\n"
    b"content-length: 43\r\n"
    b"connection: close\r\n\r\n"
    b"the request's head did not arrive in time\r\n"
)
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
            self._head_bytes = 0  # bytes counted for the head under way
            self._in_head = True  # between a message's end and its successor's headers
            self._refused = False
            self._head_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            self._arm_head_timer()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm_head_timer()
            super().connection_lost(exc)

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing():
                self._arm_head_timer()  # the next head, if any, has its own time

        def _arm_head_timer(self) -> None:
            self._disarm_head_timer()
            self._head_timer = self.loop.call_later(MAX_HEAD_SECONDS, self._head_overdue)

        def _disarm_head_timer(self) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None

        def _head_overdue(self) -> None:
            """No complete head within :data:`MAX_HEAD_SECONDS`: a connection that sent
            nothing is closed; one that sent part of a head is answered 408 (logged)."""
            self._head_timer = None
            busy = self.cycle is not None and not self.cycle.response_complete
            if self._refused or not self._in_head or busy or self.transport.is_closing():
                return
            self._refused = True
            if self._head_bytes:
                self.transport.write(_TIMEOUT)
                self.transport.close()
                self._log_refusal(408)
            else:
                self.transport.close()

        def data_received(self, data: bytes) -> None:
            for start in range(0, len(data), _PIECE):
                if self._refused or self.transport.is_closing():
                    return
                piece = data[start : start + _PIECE] if len(data) > _PIECE else data
                super().data_received(piece)
                if not self._in_head:  # the head completed in this piece: its body follows
                    continue
                # a head is incomplete after this piece: it began before it (every byte of
                # the piece is head) or in it (after a message that ended in it): counted whole
                self._head_bytes += len(piece)
                if self._head_bytes > MAX_HEAD_BYTES:
                    self._refuse()
                    return

        def _refuse(self) -> None:
            self._refused = True
            if not self.transport.is_closing():
                self.transport.write(_REFUSAL)
                self.transport.close()
                self._log_refusal(431)

        def _log_refusal(self, status: int) -> None:
            from affidavit.server.access import record_refusal

            client = getattr(self, "client", None)
            record_refusal(
                self.app,
                client_ip=client[0] if client else None,
                status=status,
                headers=list(getattr(self, "headers", [])),
            )

        def on_headers_complete(self) -> None:
            self._in_head = False
            self._disarm_head_timer()
            size = _HEAD_LINE + len(self.url) + sum(len(n) + len(v) + 4 for n, v in self.headers)
            if size > MAX_HEAD_BYTES:  # complete, in the piece that brought it: too large
                self._refuse()
                raise _HeadTooLarge  # the parser stops here; nothing reaches the app
            super().on_headers_complete()

        def send_400_response(self, msg: str) -> None:
            if not self._refused:  # the parser's error is our refusal, already answered
                super().send_400_response(msg)
                self._log_refusal(400)

        def on_message_complete(self) -> None:
            super().on_message_complete()
            self._in_head, self._head_bytes = True, 0

    return BoundedHttpToolsProtocol
