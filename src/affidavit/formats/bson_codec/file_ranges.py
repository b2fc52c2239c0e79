"""The length-prefix walk that cuts an uncompressed mongodump ``.bson`` file into ranges of
whole documents, for processes that each read, frame and check their own range
(:func:`affidavit.services.fingerprint.add_bson_file`)."""

from __future__ import annotations

import mmap
import os
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Final

from affidavit.errors import FormatError
from affidavit.formats import bson_codec
from affidavit.formats.base import MAX_BSON_DOCUMENT_SIZE, MIN_BSON_DOCUMENT_SIZE

__all__ = ["bson_file_ranges"]

_LENGTH: Final = struct.Struct("<i")


def bson_file_ranges(path: Path, target: int = 1 << 20) -> Iterator[tuple[int, int]]:
    """Byte ranges ``(offset, length)`` of about ``target`` bytes of whole documents that,
    back to back, make up an uncompressed ``.bson`` file, found by walking the documents'
    length prefixes only (each plausible and within the file; the file is mapped, not read).
    Whoever reads a range frames and checks its documents. A defect raises ``FormatError``
    naming the offset, tersely worded (:func:`affidavit.formats.mongodump.iter_bson_file` words it
    precisely).

    The walk runs in the compiled module of ``bson_codec`` (GIL released) when it is built,
    else here; both give the same ranges, then the same error after the ranges closed
    before the defect."""
    native = bson_codec._NATIVE  # read at each call (tests switch it off)
    with path.open("rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        if not size:
            return
        with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
            if native is not None:
                # a target beyond the file closes no range early; one <= 5 closes every one
                clamped = max(1, min(target, size + 1))
                found, status, bad = native.ranges(
                    mapped, clamped, MIN_BSON_DOCUMENT_SIZE, MAX_BSON_DOCUMENT_SIZE
                )
                yield from found
                if status == native.RANGES_MALFORMED:
                    raise FormatError(f"{path}: malformed document at byte offset {bad}")
                if status == native.RANGES_TRUNCATED:
                    raise FormatError(f"{path}: truncated document at byte offset {bad}")
                return
            unpack = _LENGTH.unpack_from
            start = pos = 0
            while pos < size:
                length = unpack(mapped, pos)[0] if pos + 4 <= size else 0
                if length < MIN_BSON_DOCUMENT_SIZE or length > MAX_BSON_DOCUMENT_SIZE:
                    raise FormatError(f"{path}: malformed document at byte offset {pos}")
                if pos + length > size:
                    raise FormatError(f"{path}: truncated document at byte offset {pos}")
                pos += length
                if pos - start >= target:
                    yield start, pos - start
                    start = pos
            if pos > start:
                yield start, pos - start
