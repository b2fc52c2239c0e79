"""The BSON wire layout that the exact and the logical codecs both walk: the packed integer
and float forms, the fixed value size of each type byte, the ``_id`` element's name, and the
``FormatError`` of a malformed document (worded with the byte offset inside the document)."""

from __future__ import annotations

import struct
from typing import Final

from affidavit.errors import FormatError

INT32: Final = struct.Struct("<i")
INT64: Final = struct.Struct("<q")
DOUBLE: Final = struct.Struct("<d")
TIMESTAMP: Final = struct.Struct("<II")  # increment, then seconds

NUL: Final = b"\x00"
ID_NAME: Final = b"_id\x00"
MIN_DOC: Final = 5

#: fixed value sizes by type byte (0 = no value bytes); variable-size types are absent
FIXED_SIZE: Final[dict[int, int]] = {
    0x01: 8,  # double
    0x06: 0,  # undefined
    0x07: 12,  # ObjectId
    0x08: 1,  # bool
    0x09: 8,  # UTC datetime
    0x0A: 0,  # null
    0x10: 4,  # int32
    0x11: 8,  # timestamp
    0x12: 8,  # int64
    0x13: 16,  # decimal128
    0x7F: 0,  # MaxKey
    0xFF: 0,  # MinKey
}


def bad(what: str, offset: int) -> FormatError:
    """The error of a malformed document, ``offset`` bytes into it."""
    return FormatError(f"malformed BSON document: {what} at byte {offset} of the document")


def string_end(buf: bytes, pos: int, end: int) -> int:
    """End offset of the BSON string (int32 length, bytes, NUL) at ``pos``, which must end by
    ``end``; checks its framing only (not that the bytes are UTF-8)."""
    if pos + 4 > end:
        raise bad("truncated string length", pos)
    n: int = INT32.unpack_from(buf, pos)[0]
    stop = pos + 4 + n
    if n < 1 or stop > end or buf[stop - 1] != 0:
        raise bad(f"bad string length {n}", pos)
    return stop
