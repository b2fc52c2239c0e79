"""The byte source of the RDB parser: buffered reads from the file with the offset, a bound on
every length (nothing is allocated past the end of the file), the file's running CRC-64, and
the same for a file that is still being written (:class:`_GrowingInput`)."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import BinaryIO, Final

import anycrc

from affidavit.errors import FormatError

#: the bytes read from the file at a time (tests make it small to move the buffer boundaries)
_CHUNK: Final = 1 << 20
#: the size a growing file is given until it is complete (past any real offset)
_UNKNOWN_SIZE: Final = 1 << 62

# --- CRC-64 (Jones polynomial, reflected, init 0, no final xor), as Redis' crc64.c ----------

_CRC64_REDIS: Final = anycrc.Model("CRC64-REDIS")  # Jones polynomial, as Redis computes it


def crc64(data: bytes | bytearray | memoryview, crc: int = 0) -> int:
    """Redis' CRC-64 of ``data`` continuing from ``crc`` (``crc64(b"123456789")`` is
    ``0xe9c6d914c4b8d9ca``), computed by the C library ``anycrc``."""
    return int(_CRC64_REDIS.calc(bytes(data) if not isinstance(data, bytes) else data, crc))


# --- byte input -----------------------------------------------------------------------------


class _Input:
    """Buffered reads from the RDB file with the offset, a bound on every length (no
    allocation past the end of the file) and the running CRC-64 of ``[0, crc_end)``."""

    def __init__(self, stream: BinaryIO, *, source: str, size: int) -> None:
        self._stream = stream
        self.source = source
        self.size = size
        self.crc_end = size  # set once the version is known
        self.crc = 0
        self._crc_done = 0  # file bytes folded into self.crc
        self._buf = b""
        self._pos = 0
        self._base = 0
        self._head = b""

    @property
    def offset(self) -> int:
        return self._base + self._pos

    def error(self, what: str, offset: int | None = None) -> FormatError:
        at = self.offset if offset is None else offset
        return FormatError(
            f"{self.source}: {what} at byte offset {at}",
            hint="the file is not a complete, intact Redis RDB file",
        )

    def header(self, n: int) -> bytes:
        """The first ``n`` bytes, read before the CRC range is known (see :meth:`cover`)."""
        try:
            head = self._stream.read(n)
        except OSError as exc:
            raise self.error(f"unreadable file ({exc})") from exc
        self._base = len(head)
        self._head = head
        return head

    def cover(self, end: int) -> None:
        """Start the CRC-64 over ``[0, end)`` (the header included)."""
        self.crc_end = end
        self._crc_done = 0
        self._fold_crc(self._head)

    def _load(self, need: int) -> None:
        have = len(self._buf) - self._pos
        want = max(_CHUNK, need - have)
        parts = [self._buf[self._pos :]]
        got = have
        while got < need:
            try:
                more = self._stream.read(want)
            except OSError as exc:
                raise self.error(f"unreadable file ({exc})") from exc
            if not more:
                raise self.error("truncated file: it ends early")
            self._fold_crc(more)
            parts.append(more)
            got += len(more)
        self._base += self._pos
        self._buf = b"".join(parts)
        self._pos = 0

    def _fold_crc(self, chunk: bytes) -> None:
        start = self._crc_done
        self._crc_done += len(chunk)
        if start < self.crc_end:
            upto = min(len(chunk), self.crc_end - start)
            self.crc = crc64(chunk if upto == len(chunk) else memoryview(chunk)[:upto], self.crc)

    def extend(self, ahead: int) -> bool:
        """Make at least ``ahead`` bytes from the offset (or all the file has left) buffered;
        false when the buffer already reached the end of the file."""
        left = self.size - self.offset
        have = len(self._buf) - self._pos
        if have >= left:
            return False
        self._load(min(ahead, left))
        return True

    def widen(self, limit: int) -> bool:
        """Buffer twice as many bytes past the offset as now (at least a chunk) for a record
        that runs past the buffer; false when ``limit`` bytes past the offset are buffered
        already or the buffer reached the end of the file."""
        ahead = len(self._buf) - self._pos
        return ahead < limit and self.extend(max(2 * ahead, _CHUNK))

    def window(self) -> tuple[bytes, int, int]:
        """``(buffer, index, end)``: the buffered bytes, the index of the offset in them and
        the index where the file's bytes in them end, for a scanner that parses in place and
        then says where it stopped (:meth:`advance_to`)."""
        return self._buf, self._pos, min(len(self._buf), self.size - self._base)

    def advance_to(self, index: int) -> None:
        """Move the offset to ``index`` of the buffer :meth:`window` gave."""
        self._pos = index

    def read(self, n: int, what: str) -> bytes:
        pos = self._pos
        start = self._base + pos
        if n < 0 or n > self.size - start:
            raise self.error(
                f"truncated or lying {what}: {n} bytes declared, {self.size - start} left", start
            )
        if pos + n > len(self._buf):
            self._load(n)
            pos = 0
        self._pos = pos + n
        return self._buf[pos : pos + n]

    def byte(self, what: str) -> int:
        if self._pos < len(self._buf):
            b = self._buf[self._pos]
            self._pos += 1
            return b
        return self.read(1, what)[0]

    def settle(self) -> None:
        """Make :attr:`size` the file's final size (it is, for a file that is not growing)."""

    def checksum(self) -> int:
        """The CRC-64 of the covered range (see :meth:`cover`)."""
        return self.crc


class _GrowingInput(_Input):
    """:class:`_Input` over a file that is still being written: ``feed()`` appends the next
    part of it (True) or says that it is complete (False).

    A read waits, feeding, until its bytes are written; whatever needs the file's size (a
    length larger than what is written, the trailer) feeds to the end first. So every check
    is made against the final size, as for a complete file, with the same messages, and no
    more is buffered than for a complete file (a lying length is fed to the spool, not to
    memory). The CRC-64 is computed over the finished file when the trailer asks for it.
    """

    def __init__(self, stream: BinaryIO, *, source: str, feed: Callable[[], bool]) -> None:
        super().__init__(stream, source=source, size=_UNKNOWN_SIZE)
        self._feed = feed
        self._complete = False
        self._written = self._file_size()
        self._crc_wanted = False

    def _file_size(self) -> int:
        try:
            return os.fstat(self._stream.fileno()).st_size
        except OSError as exc:
            raise self.error(f"unreadable file ({exc})") from exc

    def _ensure(self, upto: int) -> None:
        """Feed until ``upto`` bytes are written or the file is complete (size known)."""
        while not self._complete and self._written < upto:
            more = self._feed()
            self._written = self._file_size()
            if not more:
                self._complete = True
                self.size = self._written

    def settle(self) -> None:
        self._ensure(_UNKNOWN_SIZE)

    def header(self, n: int) -> bytes:
        self._ensure(n)
        return super().header(n)

    def cover(self, end: int) -> None:
        self.crc_end = 0  # nothing is folded while reading: see checksum()
        self._crc_wanted = end > 0

    def checksum(self) -> int:
        self.settle()
        crc = 0
        if self._crc_wanted:
            end, done = self.size - 8, 0
            while done < end:
                try:
                    chunk = os.pread(self._stream.fileno(), min(_CHUNK << 3, end - done), done)
                except OSError as exc:
                    raise self.error(f"unreadable file ({exc})") from exc
                if not chunk:
                    raise self.error("truncated file: it ends early")
                crc = crc64(chunk, crc)
                done += len(chunk)
        return crc

    def extend(self, ahead: int) -> bool:
        if not self._complete:
            self._ensure(self.offset + max(ahead, 1))
        return super().extend(ahead)

    def read(self, n: int, what: str) -> bytes:
        if not self._complete and n >= 0:
            self._ensure(self.offset + n)
        return super().read(n, what)
