"""Reader of Redis RDB files (``dump.rdb``, ``redis-cli --rdb`` output), versions 1 to 12.

Datasets are the logical databases that hold at least one key, ``db0``, ``db1``, ... sorted by
number. :meth:`RdbReader.records` yields one :class:`~affidavit.models.records.RedisRecord`
per key, shaped exactly as a live ``SCAN`` read by :mod:`affidavit.engines.redis` shapes it,
so that the fingerprint of a file equals the fingerprint of the server that loads it.

What is read, byte by byte, is described in ``docs/formats/rdb.md``. In short:

* every opcode: AUX, RESIZEDB, EXPIRETIME (seconds), EXPIRETIME_MS, SELECTDB, IDLE, FREQ,
  FUNCTION (7.0 pre-GA) and FUNCTION2, SLOT_INFO, EOF; every string encoding (length, int8/16/
  32, LZF); every value type and encoding: string; list (linked, ziplist, quicklist,
  quicklist 2 with listpacks); set (plain, intset, listpack); zset (plain, zset2, ziplist,
  listpack); hash (plain, zipmap, ziplist, listpack, and the field-expiry hashes of RDB 12);
  stream (listpacks 1, 2 and 3, consumer groups parsed and skipped);
* refused with :class:`~affidavit.errors.FormatError` (exit 2): wrong magic, Valkey files,
  versions above 12, module values and module auxiliary data (module state that affidavit
  cannot interpret, and that a stock ``redis-server`` cannot load either), a CRC-64 mismatch,
  malformed or truncated data (the message names the byte offset), trailing bytes.

Load semantics follow ``redis-server`` as a master: a key whose expiry lies before the reader's
reference time (``as_of_ms``, default: the wall clock when the reader is made) is dropped, as
is an empty list/set/zset/hash (Redis skips those on load). Pass ``as_of_ms`` = the capture
time of a backup to make its fingerprint independent of when the file is read.

Hash field expiry (Redis 7.4+, RDB 12): a field whose expiry lies before ``as_of_ms`` is
dropped (Redis does so on load); a live field with an expiry is folded into its value as the
deterministic CBOR array ``["hpexpireat", expire_at_ms, value]`` (see
:func:`fold_field_expiry`), so that a changed or lost field TTL changes the fingerprint.
Functions, Lua scripts, AUX fields, LRU/LFU hints and stream consumer groups are not records:
they are parsed (for framing) and not fingerprinted.

Speed: the common records (strings, sets, hashes, zsets, quicklists and their listpack,
ziplist and intset encodings) are parsed straight from the input buffer by a fast path that
hands anything else, and anything damaged, to the general path record by record; see
:meth:`_Parser.records`. Both give the same records and the same errors.

For fingerprints, :meth:`RdbReader.iter_pairs` goes further: the compiled module
``_native`` (``_native.c``, built by ``pip install -e .``) parses the common records, writes
their canonical records and hashes them in one step (~1 µs per key against ~5 µs), with the
same hand-over to the general path; without it, or with ``AFFIDAVIT_PURE_PYTHON=1``, the
same pairs come from :meth:`RdbReader.iter_all` through the encoder and ``RecordHasher``.
A reader made with ``feed`` reads a file that is still being written (a spool filling from a
server), with the same checks and results as for the complete file.
"""

from __future__ import annotations

import itertools
import math
import os
import struct
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from dataclasses import fields as dataclass_fields
from pathlib import Path
from types import ModuleType
from typing import Any, BinaryIO, ClassVar, Final

import anycrc
import cbor2

from affidavit.crypto.record_digest import RecordHasher
from affidavit.errors import FormatError, NotFound
from affidavit.formats.base import RecordReader
from affidavit.models.records import RecordEncoding, RedisRecord, RedisType
from affidavit.native import load_native

MAGIC: Final = b"REDIS"
VALKEY_MAGIC: Final = b"VALKEY"
MIN_VERSION: Final = 1
MAX_VERSION: Final = 12
#: the first version whose files end with a CRC-64
CHECKSUM_SINCE: Final = 5

# opcodes
OP_SLOT_INFO: Final = 244
OP_FUNCTION2: Final = 245
OP_FUNCTION_PRE_GA: Final = 246
OP_MODULE_AUX: Final = 247
OP_IDLE: Final = 248
OP_FREQ: Final = 249
OP_AUX: Final = 250
OP_RESIZEDB: Final = 251
OP_EXPIRETIME_MS: Final = 252
OP_EXPIRETIME: Final = 253
OP_SELECTDB: Final = 254
OP_EOF: Final = 255

# value types
T_STRING: Final = 0
T_LIST: Final = 1
T_SET: Final = 2
T_ZSET: Final = 3
T_HASH: Final = 4
T_ZSET_2: Final = 5
T_MODULE_PRE_GA: Final = 6
T_MODULE_2: Final = 7
T_HASH_ZIPMAP: Final = 9
T_LIST_ZIPLIST: Final = 10
T_SET_INTSET: Final = 11
T_ZSET_ZIPLIST: Final = 12
T_HASH_ZIPLIST: Final = 13
T_LIST_QUICKLIST: Final = 14
T_STREAM_LISTPACKS: Final = 15
T_HASH_LISTPACK: Final = 16
T_ZSET_LISTPACK: Final = 17
T_LIST_QUICKLIST_2: Final = 18
T_STREAM_LISTPACKS_2: Final = 19
T_SET_LISTPACK: Final = 20
T_STREAM_LISTPACKS_3: Final = 21
T_HASH_METADATA_PRE_GA: Final = 22
T_HASH_LISTPACK_EX_PRE_GA: Final = 23
T_HASH_METADATA: Final = 24
T_HASH_LISTPACK_EX: Final = 25

_CHUNK: Final = 1 << 20

#: the canonical record encoder of a Redis key (``redis_codec.encode_redis_record``)
Encoder = Callable[[RedisRecord], tuple[bytes, bytes]]


def _load_native() -> ModuleType | None:
    """The compiled fast path (``_native.c``), or None when it is not built or when the
    environment sets ``AFFIDAVIT_PURE_PYTHON=1`` (the pure-Python parser gives the same
    results; the switch exists to compare them and to rule the extension out)."""
    return load_native("affidavit.formats.rdb._native")


#: the compiled fast path of :meth:`RdbReader.iter_pairs`, or None (see :func:`_load_native`)
_NATIVE: ModuleType | None = _load_native()
_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
_I16 = struct.Struct("<h")
_I32 = struct.Struct("<i")
_U64 = struct.Struct("<Q")
_I64 = struct.Struct("<q")
_DOUBLE = struct.Struct("<d")
_MODULE_CHARSET: Final = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"

# --- CRC-64 (Jones polynomial, reflected, init 0, no final xor), as Redis' crc64.c ----------

_CRC64_REDIS: Final = anycrc.Model("CRC64-REDIS")  # Jones polynomial, as Redis computes it


def crc64(data: bytes | bytearray | memoryview, crc: int = 0) -> int:
    """Redis' CRC-64 of ``data`` continuing from ``crc`` (``crc64(b"123456789")`` is
    ``0xe9c6d914c4b8d9ca``), computed by the C library ``anycrc``."""
    return int(_CRC64_REDIS.calc(bytes(data) if not isinstance(data, bytes) else data, crc))


# --- LZF ------------------------------------------------------------------------------------


def lzf_decompress(data: bytes, expected: int) -> bytes:
    """Decompress LZF ``data`` into exactly ``expected`` bytes; ``ValueError`` on malformed
    input. Never produces more than ``expected`` bytes (a lying length cannot balloon)."""
    out = bytearray()
    size = 0  # len(out)
    i, n = 0, len(data)
    try:
        while i < n:
            ctrl = data[i]
            i += 1
            if ctrl < 32:  # literal run of ctrl + 1 bytes
                j = i + ctrl + 1
                if j > n:
                    raise ValueError("literal run past the end of the compressed data")
                size += ctrl + 1
                if size > expected:
                    raise ValueError("output longer than the declared length")
                out += data[i:j]
                i = j
                continue
            run = (ctrl >> 5) + 2  # back reference of run bytes, distance bytes back
            if run == 9:
                run += data[i]
                i += 1
            distance = ((ctrl & 0x1F) << 8) + 1 + data[i]
            i += 1
            if distance > size:
                raise ValueError("back reference before the start of the output")
            ref = size - distance
            size += run
            if size > expected:
                raise ValueError("output longer than the declared length")
            if distance >= run:
                out += out[ref : ref + run]
            else:  # overlapping copy: the last `distance` bytes repeat
                out += (out[ref:] * (run // distance + 1))[:run]
    except IndexError:  # data[i] past the end: a truncated back reference
        raise ValueError("back reference past the end of the compressed data") from None
    if size != expected:
        raise ValueError(f"decompressed to {size} bytes, declared {expected}")
    return bytes(out)


def fold_field_expiry(value: bytes, expire_at_ms: int) -> bytes:
    """The value that stands for a hash field ``value`` carrying a field expiry (HFE) in a
    :class:`RedisRecord`: the deterministic CBOR of ``["hpexpireat", expire_at_ms, value]``."""
    return bytes(cbor2.dumps(["hpexpireat", expire_at_ms, value], canonical=True))


# --- byte input -----------------------------------------------------------------------------


class _Input:
    """Buffered reads from the RDB file with the offset, a bound on every length (no
    allocation past the end of the file) and the running CRC-64 of ``[0, crc_end)``."""

    def __init__(self, stream: BinaryIO, *, source: str, size: int) -> None:
        self._stream = stream
        self._source = source
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
            f"{self._source}: {what} at byte offset {at}",
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

    def read(self, n: int, what: str) -> bytes:
        start = self.offset
        if n < 0 or n > self.size - start:
            raise self.error(
                f"truncated or lying {what}: {n} bytes declared, {self.size - start} left", start
            )
        if self._pos + n > len(self._buf):
            self._load(n)
        data = self._buf[self._pos : self._pos + n]
        self._pos += n
        return data

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


#: the size a growing file is given until it is complete (past any real offset)
_UNKNOWN_SIZE: Final = 1 << 62


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


# --- blobs inside strings: ziplist, listpack, intset, zipmap --------------------------------

Element = bytes | int


def _int_bytes(value: Element) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode()


def parse_ziplist(blob: bytes) -> list[Element]:  # noqa: PLR0915 - one flat byte switch
    """The entries of a ziplist; ``ValueError`` on any inconsistency (Redis' integrity check:
    header sizes, prevlen chain, tail offset, count, end byte)."""
    n = len(blob)
    if n < 11:
        raise ValueError("ziplist shorter than its header")
    zlbytes, zltail = _U32.unpack_from(blob, 0)[0], _U32.unpack_from(blob, 4)[0]
    zllen = _U16.unpack_from(blob, 8)[0]
    if zlbytes != n:
        raise ValueError(f"ziplist header says {zlbytes} bytes, blob has {n}")
    if blob[-1] != 0xFF:
        raise ValueError("ziplist does not end with 0xFF")
    out: list[Element] = []
    pos = 10
    prev_len = 0
    last_start = 10
    while True:
        if pos >= n:
            raise ValueError("ziplist entry past the end")
        if blob[pos] == 0xFF:
            break
        start = pos
        if blob[pos] < 254:
            prevlen = blob[pos]
            pos += 1
        else:
            if blob[pos] == 255 or pos + 5 > n:
                raise ValueError("bad ziplist prevlen")
            prevlen = _U32.unpack_from(blob, pos + 1)[0]
            pos += 5
        if prevlen != prev_len:
            raise ValueError("ziplist prevlen does not match the previous entry")
        if pos >= n:
            raise ValueError("ziplist entry past the end")
        enc = blob[pos]
        kind = enc >> 6
        value: Element
        if kind == 0:
            size, pos = enc & 0x3F, pos + 1
            value = blob[pos : pos + size]
        elif kind == 1:
            if pos + 2 > n:
                raise ValueError("ziplist entry past the end")
            size, pos = ((enc & 0x3F) << 8) | blob[pos + 1], pos + 2
            value = blob[pos : pos + size]
        elif kind == 2:
            if pos + 5 > n:
                raise ValueError("ziplist entry past the end")
            size, pos = int.from_bytes(blob[pos + 1 : pos + 5], "big"), pos + 5
            value = blob[pos : pos + size]
        else:
            pos += 1
            if enc == 0xC0:
                size = 2
            elif enc == 0xD0:
                size = 4
            elif enc == 0xE0:
                size = 8
            elif enc == 0xF0:
                size = 3
            elif enc == 0xFE:
                size = 1
            elif 0xF1 <= enc <= 0xFD:
                size = 0
            else:
                raise ValueError(f"unknown ziplist encoding 0x{enc:02x}")
            if size == 0:
                value = (enc & 0x0F) - 1
            else:
                value = int.from_bytes(blob[pos : pos + size], "little", signed=True)
        if pos + size > n - 1:
            raise ValueError("ziplist entry past the end")
        pos += size
        out.append(value)
        prev_len = pos - start
        last_start = start
    if pos != n - 1:
        raise ValueError("ziplist end byte is not the last byte")
    if out and zltail != last_start:
        raise ValueError("ziplist tail offset does not point at the last entry")
    if not out and zltail != 10:
        raise ValueError("empty ziplist with a bad tail offset")
    if zllen != 0xFFFF and zllen != len(out):
        raise ValueError(f"ziplist header says {zllen} entries, found {len(out)}")
    return out


def _backlen_size(length: int) -> int:
    if length < 128:
        return 1
    if length < 16384:
        return 2
    if length < 2097152:
        return 3
    if length < 268435456:
        return 4
    return 5


_LP_INT_SIZE: Final = {0xF1: 2, 0xF2: 3, 0xF3: 4, 0xF4: 8}


def _listpack_rare(blob: bytes, pos: int, end: int) -> tuple[Element, int]:
    """The listpack entry at ``pos`` whose encoding byte is 0xC0 or above (13-bit integer,
    12- and 32-bit strings, 16..64-bit integers) and the offset after its backlen."""
    enc = blob[pos]
    start = pos
    value: Element
    if enc < 0xE0:
        if pos + 2 > end:
            raise ValueError("listpack entry past the end")
        raw = ((enc & 0x1F) << 8) | blob[pos + 1]
        value = raw - 8192 if raw >= 4096 else raw
        pos += 2
    elif enc < 0xF0:
        if pos + 2 > end:
            raise ValueError("listpack entry past the end")
        size = ((enc & 0x0F) << 8) | blob[pos + 1]
        pos += 2
        value = blob[pos : pos + size]
        pos += size
    elif enc == 0xF0:
        if pos + 5 > end:
            raise ValueError("listpack entry past the end")
        size = _U32.unpack_from(blob, pos + 1)[0]
        pos += 5
        value = blob[pos : pos + size]
        pos += size
    elif 0xF1 <= enc <= 0xF4:
        size = _LP_INT_SIZE[enc]
        pos += 1
        value = int.from_bytes(blob[pos : pos + size], "little", signed=True)
        pos += size
    else:
        raise ValueError(f"unknown listpack encoding 0x{enc:02x}")
    if pos > end:
        raise ValueError("listpack entry past the end")
    return value, pos + _backlen_size(pos - start)


_LP_HEAD = struct.Struct("<IH")


def parse_listpack(blob: bytes) -> list[Element]:
    """The entries of a listpack; ``ValueError`` on any inconsistency (total size, entry
    bounds, count, end byte)."""
    n = len(blob)
    if n < 7:
        raise ValueError("listpack shorter than its header")
    total, count = _LP_HEAD.unpack_from(blob, 0)
    if total != n:
        raise ValueError(f"listpack header says {total} bytes, blob has {n}")
    out: list[Element] = []
    append = out.append
    pos = 6
    end = n - 1
    while True:  # invariant: pos <= end
        enc = blob[pos]
        if enc < 0x80:  # 7-bit unsigned integer; the entry is 1 byte, its backlen 1
            append(enc)
            pos += 2
        elif enc < 0xC0:  # string of up to 63 bytes; backlen 1
            nxt = pos + 1 + (enc & 0x3F)
            append(blob[pos + 1 : nxt])
            pos = nxt + 1
        elif enc == 0xFF:
            break
        else:
            value, pos = _listpack_rare(blob, pos, end)
            append(value)
        if pos > end:
            raise ValueError("listpack entry past the end")
    if pos != end:
        raise ValueError("listpack end byte is not the last byte")
    if count != 0xFFFF and count != len(out):
        raise ValueError(f"listpack header says {count} entries, found {len(out)}")
    return out


#: decimal text of 0..127 (7-bit listpack integers) and of the signed bytes 0..255 (int8)
_UINT7_TEXT: Final = tuple(b"%d" % i for i in range(128))
_INT8_TEXT: Final = tuple(b"%d" % (i - 256 if i > 127 else i) for i in range(256))


def listpack_texts(blob: bytes) -> list[bytes]:
    """:func:`parse_listpack` with every integer entry as its decimal text (what ``GET``,
    ``LRANGE``, ``HGETALL`` ... return); the same checks, faster on the common entries."""
    n = len(blob)
    if n < 7:
        raise ValueError("listpack shorter than its header")
    total, count = _LP_HEAD.unpack_from(blob, 0)
    if total != n:
        raise ValueError(f"listpack header says {total} bytes, blob has {n}")
    out: list[bytes] = []
    append = out.append
    small = _UINT7_TEXT
    pos = 6
    end = n - 1
    while True:  # invariant: pos <= end
        enc = blob[pos]
        if enc < 0x80:
            append(small[enc])
            pos += 2
        elif enc < 0xC0:
            nxt = pos + 1 + (enc & 0x3F)
            append(blob[pos + 1 : nxt])
            pos = nxt + 1
        elif enc < 0xE0:  # 13-bit signed integer: 2 bytes, backlen 1
            if pos + 2 > end:
                raise ValueError("listpack entry past the end")
            raw = ((enc & 0x1F) << 8) | blob[pos + 1]
            append(b"%d" % (raw - 8192 if raw >= 4096 else raw))
            pos += 3
        elif enc == 0xF2:  # 24-bit signed integer: 4 bytes, backlen 1
            if pos + 5 > end:
                raise ValueError("listpack entry past the end")
            raw = blob[pos + 1] | blob[pos + 2] << 8 | blob[pos + 3] << 16
            append(b"%d" % (raw - 0x1000000 if raw >= 0x800000 else raw))
            pos += 5
        elif enc == 0xF1:  # 16-bit signed integer: 3 bytes, backlen 1
            if pos + 4 > end:
                raise ValueError("listpack entry past the end")
            append(b"%d" % _I16.unpack_from(blob, pos + 1)[0])
            pos += 4
        elif enc == 0xFF:
            break
        else:
            value, pos = _listpack_rare(blob, pos, end)
            append(b"%d" % value if type(value) is int else value)  # type: ignore[arg-type]
        if pos > end:
            raise ValueError("listpack entry past the end")
    if pos != end:
        raise ValueError("listpack end byte is not the last byte")
    if count != 0xFFFF and count != len(out):
        raise ValueError(f"listpack header says {count} entries, found {len(out)}")
    return out


def ziplist_texts(blob: bytes) -> list[bytes]:
    """:func:`parse_ziplist` with every integer entry as its decimal text."""
    return [v if isinstance(v, bytes) else b"%d" % v for v in parse_ziplist(blob)]


def intset_texts(blob: bytes) -> list[bytes]:
    """:func:`parse_intset` with every member as its decimal text."""
    return [b"%d" % v for v in parse_intset(blob)]


def parse_intset(blob: bytes) -> list[int]:
    """The members of an intset (encoding 2, 4 or 8 bytes, sorted, unique)."""
    if len(blob) < 8:
        raise ValueError("intset shorter than its header")
    width, count = _U32.unpack_from(blob, 0)[0], _U32.unpack_from(blob, 4)[0]
    if width not in (2, 4, 8):
        raise ValueError(f"intset encoding {width} is not 2, 4 or 8")
    if len(blob) != 8 + width * count:
        raise ValueError(f"intset of {count} x {width} bytes has {len(blob) - 8} bytes")
    fmt = {2: "<h", 4: "<i", 8: "<q"}[width]
    out = [v for (v,) in struct.iter_unpack(fmt, memoryview(blob)[8:])]
    if any(a >= b for a, b in itertools.pairwise(out)):
        raise ValueError("intset members are not sorted and unique")
    return out


def parse_zipmap(blob: bytes) -> list[tuple[bytes, bytes]]:
    """The (field, value) pairs of a zipmap (RDB 1..3 hashes)."""
    n = len(blob)
    if n < 2:
        raise ValueError("zipmap shorter than its header")
    declared = blob[0]
    pos = 1

    def length() -> int:
        nonlocal pos
        if pos >= n:
            raise ValueError("zipmap entry past the end")
        first = blob[pos]
        if first < 254:
            pos += 1
            return first
        if first == 254:
            if pos + 5 > n:
                raise ValueError("zipmap length past the end")
            value = _U32.unpack_from(blob, pos + 1)[0]
            pos += 5
            return int(value)
        pos += 1
        return -1  # 255: end

    out: list[tuple[bytes, bytes]] = []
    while True:
        klen = length()
        if klen < 0:
            break
        if pos + klen > n:
            raise ValueError("zipmap field past the end")
        key = blob[pos : pos + klen]
        pos += klen
        vlen = length()
        if vlen < 0 or pos >= n:
            raise ValueError("zipmap value missing")
        free = blob[pos]
        pos += 1
        if pos + vlen + free > n:
            raise ValueError("zipmap value past the end")
        out.append((key, blob[pos : pos + vlen]))
        pos += vlen + free
    if pos != n:
        raise ValueError("zipmap end byte is not the last byte")
    if declared != 254 and declared != len(out):  # 254: "count it yourself"
        raise ValueError(f"zipmap header says {declared} entries, found {len(out)}")
    return out


def _module_name(module_id: int) -> str:
    ident = module_id >> 10
    chars = []
    for _ in range(9):
        chars.append(_MODULE_CHARSET[ident & 63])
        ident >>= 6
    return "".join(reversed(chars))


# --- the fast path's primitives -------------------------------------------------------------


class _Fallback(Exception):
    """The fast path leaves this record to the general path."""


#: what makes the fast path hand a record to the general path (which then reads it or
#: raises the FormatError that names the damage)
_FAST_ERRORS: Final = (_Fallback, IndexError, ValueError, struct.error)
#: the most bytes the fast path buffers ahead of one record before leaving it to the general
#: path (which reads any size in bounded chunks)
_FAST_AHEAD: Final = 64 << 20
_U32BE = struct.Struct(">I")
_U64BE = struct.Struct(">Q")


def _fast_count(buf: bytes, p: int) -> tuple[int, int]:
    """The length at ``p`` (6, 14, 32 or 64 bits) and the offset after it."""
    b = buf[p]
    if b < 0x40:
        return b, p + 1
    if b < 0x80:
        return ((b & 0x3F) << 8) | buf[p + 1], p + 2
    if b == 0x80:
        return int(_U32BE.unpack_from(buf, p + 1)[0]), p + 5
    if b == 0x81:
        return int(_U64BE.unpack_from(buf, p + 1)[0]), p + 9
    raise _Fallback


def _fast_string(buf: bytes, p: int) -> tuple[bytes, int]:
    """The string at ``p`` (any encoding) and the offset after it; the caller checks that the
    offset lies within the data (a slice past the end of ``buf`` is short, not an error)."""
    b = buf[p]
    if b < 0xC0:
        n, p = _fast_count(buf, p)
        return buf[p : p + n], p + n
    if b == 0xC0:
        return _INT8_TEXT[buf[p + 1]], p + 2
    if b == 0xC1:
        return b"%d" % _I16.unpack_from(buf, p + 1)[0], p + 3
    if b == 0xC2:
        return b"%d" % _I32.unpack_from(buf, p + 1)[0], p + 5
    if b != 0xC3:
        raise _Fallback
    clen = buf[p + 1]
    if clen < 0x40:
        p += 2
    else:
        clen, p = _fast_count(buf, p + 1)
    ulen = buf[p]
    if ulen < 0x40:
        p += 1
    else:
        ulen, p = _fast_count(buf, p)
    q = p + clen
    if q > len(buf) or (ulen > 1 << 32 and ulen > 1024 * clen):
        raise _Fallback
    return lzf_decompress(buf[p:q], ulen), q


def _record_setters() -> tuple[Any, Any, Any, Any] | None:
    """The slot setters of :class:`RedisRecord` (``key``, ``type``, ``value``,
    ``expire_at_ms``) when those are exactly its fields: filling a fresh instance through
    them skips the frozen dataclass' ``__init__`` (~1 µs per key). None otherwise."""
    names = ("key", "type", "value", "expire_at_ms")
    if getattr(RedisRecord, "__slots__", None) != names:
        return None
    if tuple(f.name for f in dataclass_fields(RedisRecord)) != names:
        return None
    key, rtype, value, expire = (vars(RedisRecord)[n].__set__ for n in names)
    return key, rtype, value, expire


_RECORD_SETTERS: Final = _record_setters()
_NO_SETTERS: Final[tuple[Any, Any, Any, Any]] = (None, None, None, None)


# --- the RDB parser -------------------------------------------------------------------------


@dataclass(slots=True)
class _Cursor:
    """Where a pass stands: the database, its live keys not yet counted in
    :attr:`_Scan.keys`, the expiry waiting for its key, and whether EOF was read."""

    db: int = 0
    label: str = "db0"
    live: int = 0
    expire: int | None = None
    done: bool = False


@dataclass(slots=True)
class _Scan:
    """What one pass over the file learned."""

    version: int = 0
    keys: dict[int, int] = field(default_factory=dict)


class _Parser:
    """One pass over an RDB file, yielding ``(dataset, record)`` for every live key;
    ``on_complete`` receives what the pass learned once it reached the end intact."""

    def __init__(
        self,
        path: Path,
        *,
        as_of_ms: int | None,
        on_complete: Callable[[_Scan], None],
        fast: bool = True,
        feed: Callable[[], bool] | None = None,
    ) -> None:
        self.path = path
        self.as_of_ms = as_of_ms
        self.scan = _Scan()
        self.on_complete = on_complete
        self.version = 0
        self.fast = fast
        self.feed = feed
        self.inp: _Input

    @contextmanager
    def opened(self) -> Iterator[_Input]:
        """The file open as :attr:`inp`, its header read."""
        try:
            fh = self.path.open("rb")
        except OSError as exc:
            raise FormatError(f"{self.path}: cannot open ({exc.strerror or exc})") from exc
        with fh:
            inp: _Input
            if self.feed is not None:
                inp = _GrowingInput(fh, source=str(self.path), feed=self.feed)
            else:
                inp = _Input(fh, source=str(self.path), size=os.fstat(fh.fileno()).st_size)
            self.inp = inp
            self.header()
            yield inp

    # -- primitives --

    def length(self, what: str) -> tuple[int, bool]:
        """``(value, is_encoded)``: a length, or a special string encoding tag."""
        inp = self.inp
        first = inp.byte(what)
        kind = first >> 6
        if kind == 0:
            return first & 0x3F, False
        if kind == 1:
            return ((first & 0x3F) << 8) | inp.byte(what), False
        if kind == 3:
            return first & 0x3F, True
        if first == 0x80:
            return int.from_bytes(inp.read(4, what), "big"), False
        if first == 0x81:
            return int.from_bytes(inp.read(8, what), "big"), False
        raise inp.error(f"unknown length encoding 0x{first:02x} in {what}", inp.offset - 1)

    def count(self, what: str) -> int:
        start = self.inp.offset
        value, encoded = self.length(what)
        if encoded:
            raise self.inp.error(f"a string encoding where {what} was expected", start)
        return value

    def string(self, what: str) -> bytes:
        inp = self.inp
        start = inp.offset
        value, encoded = self.length(what)
        if not encoded:
            return inp.read(value, what)
        if value == 0:
            return str(int.from_bytes(inp.read(1, what), "little", signed=True)).encode()
        if value == 1:
            return str(int.from_bytes(inp.read(2, what), "little", signed=True)).encode()
        if value == 2:
            return str(int.from_bytes(inp.read(4, what), "little", signed=True)).encode()
        if value == 3:
            clen = self.count(f"{what} (compressed length)")
            ulen = self.count(f"{what} (uncompressed length)")
            packed = inp.read(clen, f"{what} (LZF data)")
            if ulen > max(1 << 32, 1024 * clen):  # LZF expands at most ~ 264x
                raise inp.error(f"implausible LZF length {ulen} for {clen} bytes in {what}", start)
            try:
                return lzf_decompress(packed, ulen)
            except ValueError as exc:
                raise inp.error(f"corrupt LZF data in {what} ({exc})", start) from exc
        raise inp.error(f"unknown string encoding {value} in {what}", start)

    def blob(self, what: str, parse: Callable[[bytes], list[Element]]) -> list[Element]:
        start = self.inp.offset
        data = self.string(what)
        try:
            return parse(data)
        except (ValueError, struct.error) as exc:
            raise self.inp.error(f"corrupt {what} ({exc})", start) from exc

    def double_text(self, what: str) -> float:
        inp = self.inp
        start = inp.offset
        size = inp.byte(what)
        if size == 253:
            raise inp.error(f"NaN score in {what}", start)
        if size == 254:
            return math.inf
        if size == 255:
            return -math.inf
        text = inp.read(size, what)
        try:
            return float(text.decode("ascii"))
        except (UnicodeDecodeError, ValueError) as exc:
            raise inp.error(f"malformed score {text!r} in {what}", start) from exc

    def ms_time(self, what: str) -> int:
        return int(_I64.unpack(self.inp.read(8, what))[0])

    # -- the file --

    def header(self) -> None:
        inp = self.inp
        magic = inp.header(9)
        if magic.startswith(VALKEY_MAGIC):
            raise FormatError(
                f"{inp._source}: a Valkey RDB file ({magic.decode('ascii', 'replace')}, "
                f"version {magic[6:].decode('ascii', 'replace')}); affidavit reads Redis RDB "
                f"versions {MIN_VERSION}..{MAX_VERSION}",
                hint="dump the data with a Redis-compatible RDB (or fingerprint the live Valkey "
                "server) instead",
            )
        if len(magic) < 9 or not magic.startswith(MAGIC):
            raise FormatError(
                f"{inp._source}: not a Redis RDB file (wrong magic {magic[:5]!r}, "
                "expected b'REDIS') at byte offset 0",
                hint="give a dump.rdb or the output of `redis-cli --rdb`",
            )
        digits = magic[5:9]
        if not digits.isdigit():
            raise FormatError(f"{inp._source}: malformed RDB version {digits!r} at byte offset 5")
        version = int(digits)
        if version < MIN_VERSION or version > MAX_VERSION:
            raise FormatError(
                f"{inp._source}: RDB format version {version} is not supported "
                f"(affidavit reads versions {MIN_VERSION}..{MAX_VERSION}, Redis <= 8.0)",
                hint="the file was written by a newer Redis; save it with Redis 8.0 or older, "
                "or fingerprint the live server instead",
            )
        self.version = self.scan.version = version
        inp.cover(inp.size - 8 if version >= CHECKSUM_SINCE else 0)

    def records(self) -> Iterator[tuple[str, RedisRecord]]:  # noqa: PLR0915 - one hot loop
        """``(dataset, record)`` for every live key, in file order.

        Two paths read the same bytes. The fast path parses the common records (strings,
        plain sets and hashes, zsets with binary scores, listpack/ziplist/intset encodings,
        quicklists, millisecond expiries) straight from the input buffer with index
        arithmetic. Whenever it meets anything else (another opcode or encoding, a record
        that runs past the buffer, or damage of any kind) it leaves the record untouched and
        the general path below reads it through :class:`_Input`, with its bounds and error
        messages; a record that ran past the buffer is first retried with a larger buffer (at
        most ``_FAST_AHEAD`` bytes ahead). The fast path accepts a record only when the
        general path would accept it with the same result.
        """
        with self.opened() as inp:
            cur = _Cursor()
            as_of = self.as_of_ms
            db = 0
            label = "db0"
            live = 0  # live keys of ``db`` not yet counted in ``keys``
            expire: int | None = None
            fast = self.fast
            new = object.__new__
            record_cls = RedisRecord
            set_key, set_type, set_value, set_expire = _RECORD_SETTERS or _NO_SETTERS
            direct = _RECORD_SETTERS is not None
            lp_texts = listpack_texts
            zl_texts = ziplist_texts
            fstring = _fast_string
            fcount = _fast_count
            isnan = math.isnan
            unpack_i64 = _I64.unpack_from
            unpack_double = _DOUBLE.unpack_from
            while True:
                if fast:
                    buf = inp._buf
                    pos = inp._pos
                    end = min(len(buf), inp.size - inp._base)
                    ran_off = False
                    try:
                        while True:
                            op = buf[pos]
                            if op > T_SET_LISTPACK:
                                if op != OP_EXPIRETIME_MS or pos + 9 > end:
                                    break
                                expire = unpack_i64(buf, pos + 1)[0]
                                pos += 9
                                continue
                            b = buf[pos + 1]  # the key
                            if b < 64:
                                p = pos + 2 + b
                                key = buf[pos + 2 : p]
                            else:
                                key, p = fstring(buf, pos + 1)
                            rtype: RedisType
                            value: object
                            if op == T_STRING:
                                b = buf[p]
                                if b < 64:
                                    q = p + 1 + b
                                    value = buf[p + 1 : q]
                                else:
                                    value, q = fstring(buf, p)
                                rtype = "string"
                            elif op in (T_HASH_LISTPACK, T_HASH_ZIPLIST):
                                b = buf[p]
                                if b < 64:
                                    q = p + 1 + b
                                    blob = buf[p + 1 : q]
                                else:
                                    blob, q = fstring(buf, p)
                                if q > end:
                                    raise _Fallback
                                items = lp_texts(blob) if op == T_HASH_LISTPACK else zl_texts(blob)
                                fields = items[0::2]
                                if len(items) & 1 or len(set(fields)) != len(fields):
                                    raise _Fallback
                                value = tuple(zip(fields, items[1::2]))  # noqa: B905 - even
                                rtype = "hash"
                            elif op in (T_LIST_QUICKLIST_2, T_LIST_QUICKLIST):
                                b = buf[p]
                                if b < 64:
                                    nodes, q = b, p + 1
                                else:
                                    nodes, q = fcount(buf, p)
                                elements: list[bytes] = []
                                for _ in range(nodes):
                                    container = 2
                                    if op == T_LIST_QUICKLIST_2:
                                        container = buf[q]
                                        q += 1
                                    if container == 2:  # a listpack (or ziplist) node
                                        b = buf[q]
                                        if b < 64:
                                            r = q + 1 + b
                                            blob = buf[q + 1 : r]
                                        else:
                                            blob, r = fstring(buf, q)
                                        if r > end:
                                            raise _Fallback
                                        q = r
                                        elements += (
                                            lp_texts(blob)
                                            if op == T_LIST_QUICKLIST_2
                                            else zl_texts(blob)
                                        )
                                    elif container == 1:  # PLAIN: one big element
                                        element, q = fstring(buf, q)
                                        elements.append(element)
                                    else:
                                        raise _Fallback
                                value = tuple(elements)
                                rtype = "list"
                            elif op in (T_ZSET_LISTPACK, T_ZSET_ZIPLIST):
                                b = buf[p]
                                if b < 64:
                                    q = p + 1 + b
                                    blob = buf[p + 1 : q]
                                else:
                                    blob, q = fstring(buf, p)
                                if q > end:
                                    raise _Fallback
                                items = lp_texts(blob) if op == T_ZSET_LISTPACK else zl_texts(blob)
                                members = items[0::2]
                                scores = list(map(float, items[1::2]))
                                if (
                                    len(items) & 1
                                    or any(map(isnan, scores))
                                    or len(set(members)) != len(members)
                                ):
                                    raise _Fallback
                                value = tuple(zip(members, scores))  # noqa: B905 - even
                                rtype = "zset"
                            elif op == T_SET:
                                b = buf[p]
                                if b < 64:
                                    n, q = b, p + 1
                                else:
                                    n, q = fcount(buf, p)
                                elements = []
                                append = elements.append
                                for _ in range(n):
                                    b = buf[q]
                                    if b < 64:
                                        r = q + 1 + b
                                        append(buf[q + 1 : r])
                                        q = r
                                    else:
                                        element, q = fstring(buf, q)
                                        append(element)
                                value = frozenset(elements)
                                if len(value) != n:
                                    raise _Fallback
                                rtype = "set"
                            elif op in (T_SET_LISTPACK, T_SET_INTSET):
                                b = buf[p]
                                if b < 64:
                                    q = p + 1 + b
                                    blob = buf[p + 1 : q]
                                else:
                                    blob, q = fstring(buf, p)
                                if q > end:
                                    raise _Fallback
                                parse = lp_texts if op == T_SET_LISTPACK else intset_texts
                                items = parse(blob)
                                value = frozenset(items)
                                if len(value) != len(items):
                                    raise _Fallback
                                rtype = "set"
                            elif op == T_HASH:
                                b = buf[p]
                                if b < 64:
                                    n, q = b, p + 1
                                else:
                                    n, q = fcount(buf, p)
                                elements = []
                                append = elements.append
                                for _ in range(2 * n):
                                    b = buf[q]
                                    if b < 64:
                                        r = q + 1 + b
                                        append(buf[q + 1 : r])
                                        q = r
                                    else:
                                        element, q = fstring(buf, q)
                                        append(element)
                                fields = elements[0::2]
                                if len(set(fields)) != n:
                                    raise _Fallback
                                value = tuple(zip(fields, elements[1::2]))  # noqa: B905 - even
                                rtype = "hash"
                            elif op == T_ZSET_2:
                                b = buf[p]
                                if b < 64:
                                    n, q = b, p + 1
                                else:
                                    n, q = fcount(buf, p)
                                pairs: list[tuple[bytes, float]] = []
                                for _ in range(n):
                                    b = buf[q]
                                    if b < 64:
                                        r = q + 1 + b
                                        element = buf[q + 1 : r]
                                    else:
                                        element, r = fstring(buf, q)
                                    score = unpack_double(buf, r)[0]
                                    if isnan(score):
                                        raise _Fallback
                                    pairs.append((element, score))
                                    q = r + 8
                                if len({m for m, _ in pairs}) != n:
                                    raise _Fallback
                                value = tuple(pairs)
                                rtype = "zset"
                            else:
                                break
                            if q > end:
                                raise _Fallback
                            pos = q
                            at_expiry = expire
                            expire = None
                            if not value and rtype != "string":
                                continue  # an empty aggregate: redis-server skips it
                            if at_expiry is not None and as_of is not None and at_expiry < as_of:
                                continue  # already expired: redis-server drops it on load
                            if direct:
                                record = new(record_cls)
                                set_key(record, key)
                                set_type(record, rtype)
                                set_value(record, value)
                                set_expire(record, at_expiry)
                            else:
                                record = record_cls(
                                    key=key, type=rtype, value=value, expire_at_ms=at_expiry
                                )
                            live += 1
                            yield label, record
                    except _FAST_ERRORS:
                        ran_off = True
                    inp._pos = pos
                    if ran_off:
                        ahead = len(inp._buf) - pos
                        if ahead < _FAST_AHEAD and inp.extend(max(2 * ahead, _CHUNK)):
                            continue
                # the general path: one opcode
                cur.db, cur.label, cur.live, cur.expire = db, label, live, expire
                made = self.step(cur)
                if cur.done:
                    return
                db, label, live, expire = cur.db, cur.label, cur.live, cur.expire
                if made is not None:
                    yield label, made

    def step(self, cur: _Cursor) -> RedisRecord | None:
        """Read one opcode through the general path: the record it makes (None for other
        opcodes and for keys that are dropped); at EOF, the trailer is checked, the pass
        completed and ``cur.done`` set."""
        inp = self.inp
        keys = self.scan.keys
        at = inp.offset
        op = inp.byte("opcode")
        if op == OP_EOF:
            if cur.live:
                keys[cur.db] = keys.get(cur.db, 0) + cur.live
                cur.live = 0
            self.trailer()
            self.on_complete(self.scan)
            cur.done = True
        elif op == OP_SELECTDB:
            if cur.live:
                keys[cur.db] = keys.get(cur.db, 0) + cur.live
                cur.live = 0
            cur.db = self.count("database number")
            cur.label = f"db{cur.db}"
        elif op == OP_RESIZEDB:
            self.count("resize hint")
            self.count("resize hint")
        elif op == OP_AUX:
            self.string("aux field name")
            self.string("aux field value")
        elif op == OP_EXPIRETIME_MS:
            cur.expire = self.ms_time("expiry")
        elif op == OP_EXPIRETIME:
            cur.expire = int(_I32.unpack(inp.read(4, "expiry"))[0]) * 1000
        elif op == OP_IDLE:
            self.count("idle time")
        elif op == OP_FREQ:
            inp.byte("LFU frequency")
        elif op == OP_SLOT_INFO:
            for _ in range(3):
                self.count("slot info")
        elif op == OP_FUNCTION2:
            self.string("function library")
        elif op == OP_FUNCTION_PRE_GA:
            self.string("function name")
            self.string("function engine")
            if self.count("function description flag"):
                self.string("function description")
            self.string("function code")
        elif op == OP_MODULE_AUX:
            module_id = self.count("module id")
            raise inp.error(
                f"module auxiliary data of module {_module_name(module_id)!r} cannot be "
                "read (affidavit cannot certify module state)",
                at,
            )
        else:
            made = self.key_value(op, cur.expire, at)
            cur.expire = None
            if made is not None:
                cur.live += 1
            return made
        return None

    def pairs(
        self, hasher: RecordHasher, encode: Encoder, batch: int
    ) -> Iterator[tuple[str, bytes, list[bytes]]]:
        """``(dataset, pairs, keys)`` batches of at most ``batch`` live keys of one dataset, in
        file order: ``pairs`` holds ``hasher``'s ``key_hash || record_hash`` of each key's
        canonical record ``encode(record)``, concatenated, in the order of ``keys``.

        The compiled fast path (:data:`_NATIVE`) parses, encodes and hashes the common
        records straight from the input buffer; it stops before anything else (another
        opcode or encoding, damage, a record that runs past the buffer), which the general
        path then reads record by record, as in :meth:`records`. Without it (or with
        ``fast`` off) this is :meth:`records` through ``encode`` and ``hasher``.
        """
        native = _NATIVE
        if native is None or not self.fast:
            yield from self._python_pairs(hasher, encode, batch)
            return
        with self.opened() as inp:
            cur = _Cursor()
            as_of = self.as_of_ms
            tag = hasher.tag
            scan = native.scan
            more, full = native.MORE, native.FULL
            keys: list[bytes] = []
            chunks: list[bytes] = []
            while True:
                buf = inp._buf
                end = min(len(buf), inp.size - inp._base)
                pos, cur.expire, status, made_keys, made_pairs = scan(
                    buf, inp._pos, end, cur.expire, as_of, tag, batch - len(keys)
                )
                inp._pos = pos
                if made_keys:
                    cur.live += len(made_keys)
                    keys += made_keys
                    chunks.append(made_pairs)
                    if len(keys) >= batch:
                        yield cur.label, b"".join(chunks), keys
                        keys, chunks = [], []
                if status == full:
                    continue
                if status == more:
                    ahead = len(inp._buf) - pos
                    if ahead < _FAST_AHEAD and inp.extend(max(2 * ahead, _CHUNK)):
                        continue
                # the general path: one opcode
                label = cur.label
                record = self.step(cur)
                if record is not None:
                    key, value = encode(record)
                    keys.append(key)
                    chunks.append(hasher.pair(key, value))
                if keys and (cur.done or cur.label != label or len(keys) >= batch):
                    yield label, b"".join(chunks), keys
                    keys, chunks = [], []
                if cur.done:
                    return

    def _python_pairs(
        self, hasher: RecordHasher, encode: Encoder, batch: int
    ) -> Iterator[tuple[str, bytes, list[bytes]]]:
        label = ""
        records: list[tuple[bytes, bytes]] = []
        for dataset, record in self.records():
            if dataset != label or len(records) >= batch:
                if records:
                    yield label, b"".join(hasher.pairs(records)), [k for k, _ in records]
                records = []
                label = dataset
            records.append(encode(record))
        if records:
            yield label, b"".join(hasher.pairs(records)), [k for k, _ in records]

    def trailer(self) -> None:
        inp = self.inp
        inp.settle()
        if self.version >= CHECKSUM_SINCE:
            if inp.offset != inp.size - 8:
                raise inp.error(
                    f"{inp.size - inp.offset - 8} bytes of trailing data after the EOF opcode"
                    if inp.offset < inp.size - 8
                    else "truncated file: no room for the CRC-64 after the EOF opcode"
                )
            computed = inp.checksum()
            (stored,) = _U64.unpack(inp.read(8, "CRC-64"))
            if stored not in (0, computed):
                raise inp.error(
                    f"checksum mismatch: the file's CRC-64 is {stored:016x}, its content hashes "
                    f"to {computed:016x}",
                    inp.size - 8,
                )
        elif inp.offset != inp.size:
            raise inp.error(f"{inp.size - inp.offset} bytes of trailing data after EOF")

    # -- values --

    def key_value(self, kind: int, expire: int | None, at: int) -> RedisRecord | None:
        key = self.string("key")
        made = self.value(kind, at, key)
        if made is None:
            return None
        rtype, value = made
        if expire is not None and self.as_of_ms is not None and expire < self.as_of_ms:
            return None  # already expired: redis-server drops it on load
        return RedisRecord(key=key, type=rtype, value=value, expire_at_ms=expire)

    def value(self, kind: int, at: int, key: bytes) -> tuple[RedisType, object] | None:
        """The record type and value, or None for an empty aggregate (Redis drops those)."""
        if kind == T_STRING:
            return "string", self.string("string value")
        if kind == T_LIST:
            items = tuple(self.string("list element") for _ in range(self.count("list length")))
            return ("list", items) if items else None
        if kind in (T_LIST_ZIPLIST, T_LIST_QUICKLIST, T_LIST_QUICKLIST_2):
            items = tuple(self.quicklist(kind))
            return ("list", items) if items else None
        if kind in (T_SET, T_SET_INTSET, T_SET_LISTPACK):
            if kind == T_SET:
                members = [self.string("set member") for _ in range(self.count("set size"))]
            elif kind == T_SET_INTSET:
                members = [_int_bytes(v) for v in self.blob("intset", parse_intset)]  # type: ignore[arg-type]
            else:
                members = [_int_bytes(v) for v in self.blob("set listpack", parse_listpack)]
            frozen = frozenset(members)
            if len(frozen) != len(members):
                raise self.inp.error(f"duplicate member in set {key!r}", at)
            return ("set", frozen) if frozen else None
        if kind in (T_ZSET, T_ZSET_2, T_ZSET_ZIPLIST, T_ZSET_LISTPACK):
            pairs = self.zset(kind)
            self.unique(pairs, "zset member", key, at)
            return ("zset", tuple(pairs)) if pairs else None
        if kind in (
            T_HASH,
            T_HASH_ZIPMAP,
            T_HASH_ZIPLIST,
            T_HASH_LISTPACK,
            T_HASH_METADATA_PRE_GA,
            T_HASH_METADATA,
            T_HASH_LISTPACK_EX_PRE_GA,
            T_HASH_LISTPACK_EX,
        ):
            fields = self.hash(kind)
            self.unique(fields, "hash field", key, at)
            return ("hash", tuple(fields)) if fields else None
        if kind in (T_STREAM_LISTPACKS, T_STREAM_LISTPACKS_2, T_STREAM_LISTPACKS_3):
            return "stream", self.stream(kind)
        if kind in (T_MODULE_PRE_GA, T_MODULE_2):
            module_id = self.count("module id")
            raise self.inp.error(
                f"module type {_module_name(module_id)!r} cannot be read (key {key!r}): "
                "affidavit cannot certify module values",
                at,
            )
        raise self.inp.error(f"unknown opcode or value type {kind}", at)

    def unique(self, pairs: list[tuple[bytes, object]], what: str, key: bytes, at: int) -> None:
        names = {p[0] for p in pairs}
        if len(names) != len(pairs):
            raise self.inp.error(f"duplicate {what} in key {key!r}", at)

    def quicklist(self, kind: int) -> Iterator[bytes]:
        if kind == T_LIST_ZIPLIST:
            for v in self.blob("list ziplist", parse_ziplist):
                yield _int_bytes(v)
            return
        nodes = self.count("quicklist length")
        for _ in range(nodes):
            if kind == T_LIST_QUICKLIST:
                entries = self.blob("quicklist ziplist", parse_ziplist)
            else:
                container = self.count("quicklist container")
                if container == 1:  # PLAIN: one big element
                    yield self.string("quicklist element")
                    continue
                if container != 2:
                    raise self.inp.error(f"unknown quicklist container {container}")
                entries = self.blob("quicklist listpack", parse_listpack)
            for v in entries:  # an empty node is skipped, as redis-server does
                yield _int_bytes(v)

    def zset(self, kind: int) -> list[tuple[bytes, object]]:
        if kind in (T_ZSET, T_ZSET_2):
            out: list[tuple[bytes, object]] = []
            for _ in range(self.count("zset size")):
                member = self.string("zset member")
                if kind == T_ZSET:
                    score = self.double_text("zset score")
                else:
                    score = _DOUBLE.unpack(self.inp.read(8, "zset score"))[0]
                    if math.isnan(score):
                        raise self.inp.error("NaN zset score")
                out.append((member, score))
            return out
        parse = parse_ziplist if kind == T_ZSET_ZIPLIST else parse_listpack
        start = self.inp.offset
        items = self.blob("zset ziplist/listpack", parse)
        if len(items) % 2:
            raise self.inp.error("zset ziplist/listpack with an odd number of entries", start)
        pairs: list[tuple[bytes, object]] = []
        for i in range(0, len(items), 2):
            raw = items[i + 1]
            if isinstance(raw, int):
                score = float(raw)
            else:
                try:
                    score = float(raw.decode("ascii"))
                except (UnicodeDecodeError, ValueError) as exc:
                    raise self.inp.error(f"malformed zset score {raw!r}", start) from exc
                if math.isnan(score):
                    raise self.inp.error("NaN zset score", start)
            pairs.append((_int_bytes(items[i]), score))
        return pairs

    def hash(self, kind: int) -> list[tuple[bytes, object]]:
        inp = self.inp
        if kind == T_HASH:
            return [
                (self.string("hash field"), self.string("hash value"))
                for _ in range(self.count("hash size"))
            ]
        if kind == T_HASH_ZIPMAP:
            start = inp.offset
            data = self.string("hash zipmap")
            try:
                return list(parse_zipmap(data))
            except ValueError as exc:
                raise inp.error(f"corrupt hash zipmap ({exc})", start) from exc
        if kind in (T_HASH_ZIPLIST, T_HASH_LISTPACK):
            start = inp.offset
            parse = parse_ziplist if kind == T_HASH_ZIPLIST else parse_listpack
            items = self.blob("hash ziplist/listpack", parse)
            if len(items) % 2:
                raise inp.error("hash ziplist/listpack with an odd number of entries", start)
            return [
                (_int_bytes(items[i]), _int_bytes(items[i + 1])) for i in range(0, len(items), 2)
            ]
        if kind in (T_HASH_METADATA_PRE_GA, T_HASH_METADATA):
            base = self.ms_time("hash minimum field expiry") if kind == T_HASH_METADATA else 0
            out: list[tuple[bytes, object]] = []
            for _ in range(self.count("hash size")):
                ttl = self.count("hash field expiry")
                name = self.string("hash field")
                value = self.string("hash value")
                if ttl and kind == T_HASH_METADATA:
                    ttl = ttl + base - 1
                self.add_field(out, name, value, ttl or None)
            return out
        # T_HASH_LISTPACK_EX(_PRE_GA): [min expiry], listpack of field, value, expiry (0: none)
        if kind == T_HASH_LISTPACK_EX:
            self.ms_time("hash minimum field expiry")
        start = inp.offset
        items = self.blob("hash listpack-ex", parse_listpack)
        if len(items) % 3:
            raise inp.error("hash listpack-ex entries are not triplets", start)
        out = []
        for i in range(0, len(items), 3):
            ttl_raw = items[i + 2]
            if not isinstance(ttl_raw, int) or ttl_raw < 0:
                raise inp.error(f"malformed hash field expiry {ttl_raw!r}", start)
            self.add_field(out, _int_bytes(items[i]), _int_bytes(items[i + 1]), ttl_raw or None)
        return out

    def add_field(
        self, out: list[tuple[bytes, object]], name: bytes, value: bytes, ttl: int | None
    ) -> None:
        if ttl is None:
            out.append((name, value))
        elif self.as_of_ms is None or ttl >= self.as_of_ms:
            out.append((name, fold_field_expiry(value, ttl)))
        # else: the field expired before as_of_ms; redis-server drops it on load

    def stream(self, kind: int) -> tuple[tuple[bytes, tuple[tuple[bytes, bytes], ...]], ...]:
        inp = self.inp
        entries: list[tuple[bytes, tuple[tuple[bytes, bytes], ...]]] = []
        for _ in range(self.count("stream listpack count")):
            start = inp.offset
            node_key = self.string("stream node key")
            if len(node_key) != 16:
                raise inp.error("stream node key is not 16 bytes", start)
            master_ms, master_seq = struct.unpack(">QQ", node_key)
            items = self.blob("stream listpack", parse_listpack)
            try:
                entries.extend(_stream_entries(items, master_ms, master_seq))
            except (ValueError, IndexError, TypeError) as exc:
                raise inp.error(f"corrupt stream listpack ({exc})", start) from exc
        self.count("stream length")
        self.count("stream last id")
        self.count("stream last id")
        if kind >= T_STREAM_LISTPACKS_2:
            for _ in range(5):  # first id (2), max deleted id (2), entries added
                self.count("stream metadata")
        for _ in range(self.count("consumer group count")):
            self.string("consumer group name")
            self.count("consumer group last id")
            self.count("consumer group last id")
            if kind >= T_STREAM_LISTPACKS_2:
                self.count("consumer group entries read")
            for _ in range(self.count("pending entry count")):
                inp.read(16, "pending entry id")
                inp.read(8, "pending entry delivery time")
                self.count("pending entry delivery count")
            for _ in range(self.count("consumer count")):
                self.string("consumer name")
                inp.read(8, "consumer seen time")
                if kind >= T_STREAM_LISTPACKS_3:
                    inp.read(8, "consumer active time")
                for _ in range(self.count("consumer pending count")):
                    inp.read(16, "consumer pending entry id")
        for a, b in itertools.pairwise(entries):
            if _split_id(a[0]) >= _split_id(b[0]):
                raise inp.error("stream entries are not in id order")
        return tuple(entries)


def _split_id(raw: bytes) -> tuple[int, int]:
    ms, _, seq = raw.partition(b"-")
    return int(ms), int(seq)


def _stream_entries(
    items: list[Element], master_ms: int, master_seq: int
) -> Iterator[tuple[bytes, tuple[tuple[bytes, bytes], ...]]]:
    """The live entries of one stream listpack node (master entry first, then entries)."""

    def num(i: int) -> int:
        v = items[i]
        if not isinstance(v, int):
            raise ValueError(f"expected an integer, found {v!r}")
        return v

    n_master = num(2)
    master_fields = [_int_bytes(items[3 + j]) for j in range(n_master)]
    pos = 3 + n_master
    if num(pos) != 0:
        raise ValueError("master entry terminator is not 0")
    pos += 1
    while pos < len(items):
        flags = num(pos)
        entry_id = f"{master_ms + num(pos + 1)}-{master_seq + num(pos + 2)}".encode()
        pos += 3
        if flags & 2:  # SAMEFIELDS: values only, fields from the master entry
            values = [_int_bytes(items[pos + j]) for j in range(n_master)]
            if len(values) != n_master:
                raise ValueError("stream entry shorter than the master fields")
            pairs = tuple(zip(master_fields, values, strict=True))
            pos += n_master
        else:
            n_fields = num(pos)
            pos += 1
            flat = [_int_bytes(v) for v in items[pos : pos + 2 * n_fields]]
            if len(flat) != 2 * n_fields:
                raise ValueError("stream entry past the end of its listpack")
            pairs = tuple(zip(flat[0::2], flat[1::2], strict=True))
            pos += 2 * n_fields
        num(pos)  # lp-count of the entry
        pos += 1
        if not flags & 1:  # not DELETED
            yield entry_id, pairs


# --- the reader -----------------------------------------------------------------------------


class RdbReader(RecordReader):
    """A Redis RDB file (versions 1..12): datasets ``db0``, ``db1``, ... that hold keys.

    ``as_of_ms`` is the reference time of the load semantics (keys and hash fields that
    expired before it are dropped, as ``redis-server`` does when it loads the file); default:
    the wall clock when the reader is created. ``None`` cannot be passed to mean "never"; pass
    ``keep_expired=True`` to keep every key whatever its expiry.

    ``feed``: the file is still being written (an RDB streaming from a server into a spool):
    ``feed()`` appends its next part and returns True, or returns False once it is complete.
    The first pass reads the file as it grows (feeding when it needs more), so that parsing
    overlaps the transfer; its checks and results are those of the complete file.
    """

    name: ClassVar[str] = "rdb"
    encoding: ClassVar[RecordEncoding] = RecordEncoding.REDIS

    def __init__(
        self,
        path: Path,
        *,
        as_of_ms: int | None = None,
        keep_expired: bool = False,
        feed: Callable[[], bool] | None = None,
    ) -> None:
        super().__init__(path)
        self.as_of_ms: int | None = (
            None if keep_expired else (as_of_ms if as_of_ms is not None else _now_ms())
        )
        self._scan: _Scan | None = None
        self._fast = True  # False: every record through the general path (tests compare both)
        self._feed = feed

    def _feed_once(self) -> bool:
        """``feed`` until it says the file is complete; False from then on."""
        if self._feed is None:
            return False
        if self._feed():
            return True
        self._feed = None
        return False

    def _parser(self) -> _Parser:
        return _Parser(
            self.path,
            as_of_ms=self.as_of_ms,
            on_complete=self._completed,
            fast=self._fast,
            feed=None if self._feed is None else self._feed_once,
        )

    @classmethod
    def sniff(cls, path: Path) -> bool:
        try:
            with path.open("rb") as fh:
                head = fh.read(9)
        except OSError:
            return False
        return head.startswith(MAGIC) or head.startswith(VALKEY_MAGIC)

    def _pass(self) -> Iterator[tuple[str, RedisRecord]]:
        return self._parser().records()

    def _completed(self, scan: _Scan) -> None:
        self._scan = scan

    def iter_all(self) -> Iterator[tuple[str, RedisRecord]]:
        """Every live key of every database as ``(dataset, record)`` in one pass over the file
        (CRC-64 checked at the end); what a backup or verification of a whole RDB needs."""
        return self._pass()

    def iter_pairs(
        self, hasher: RecordHasher, encode: Encoder, *, batch: int = 4096
    ) -> Iterator[tuple[str, bytes, list[bytes]]]:
        """Every live key of every database, hashed for a fingerprint, in one pass over the
        file (CRC-64 checked at the end): ``(dataset, pairs, keys)`` batches of at most
        ``batch`` keys of one dataset, ``pairs`` being ``hasher``'s 64-byte ``key_hash ||
        record_hash`` of each key's canonical record, concatenated in the order of ``keys``
        (what ``Accumulator.add_pairs`` takes).

        ``encode`` must be ``affidavit.formats.redis_codec.encode_redis_record`` (passed in:
        format modules do not import each other): the compiled fast path writes the same
        bytes itself, and every record it leaves to the Python parser goes through
        ``encode``. The result does not depend on which path read a record."""
        if batch < 1:
            raise ValueError("batch must be at least 1")
        return self._parser().pairs(hasher, encode, batch)

    def _scanned(self) -> _Scan:
        if self._scan is None:
            for _ in self._pass():
                pass
        assert self._scan is not None
        return self._scan

    @property
    def version(self) -> int:
        """The file's RDB format version."""
        return self._scanned().version

    def key_counts(self) -> dict[str, int]:
        """The number of (live) keys per dataset, read by one full pass (CRC-64 checked)."""
        keys = self._scanned().keys
        return {f"db{n}": keys[n] for n in sorted(keys)}

    def datasets(self) -> list[str]:
        return list(self.key_counts())

    def records(self, dataset: str) -> Iterator[RedisRecord]:
        """The keys of ``dataset`` as :class:`RedisRecord` values, in file order. The whole
        file is read (and its CRC-64 checked at the end) whatever the dataset."""
        names = self.datasets()
        if dataset not in names:
            raise NotFound(
                f"{self.path} has no dataset {dataset!r}",
                hint=f"it holds: {', '.join(names) or 'nothing'}",
            )
        for name, record in self._pass():
            if name == dataset:
                yield record

    def size_hint(self, dataset: str) -> int | None:
        return self.path.stat().st_size


def _now_ms() -> int:
    return int(time.time() * 1000)
