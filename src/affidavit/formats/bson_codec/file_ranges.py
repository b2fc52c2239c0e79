"""The length-prefix walk that cuts an uncompressed mongodump ``.bson`` file into ranges of
whole documents, for processes that each read, frame and check their own range
(:func:`affidavit.services.fingerprint.add_bson_file`)."""

from __future__ import annotations

import mmap
import os
import struct
from collections.abc import Generator, Iterator
from pathlib import Path
from types import ModuleType
from typing import Final

from affidavit.errors import FormatError
from affidavit.formats import bson_codec
from affidavit.formats.base import MAX_BSON_DOCUMENT_SIZE, MIN_BSON_DOCUMENT_SIZE

__all__ = ["bson_file_ranges"]

_LENGTH: Final = struct.Struct("<i")


def bson_file_ranges(
    path: Path, target: int = 1 << 20, *, start: int = 0
) -> Generator[tuple[int, int], None, None]:
    """Byte ranges ``(offset, length)`` of about ``target`` bytes of whole documents that,
    back to back, make up an uncompressed ``.bson`` file, found by walking the documents'
    length prefixes only (each plausible and within the file; the file is mapped, not read).
    Whoever reads a range frames and checks its documents. A defect raises ``FormatError``
    naming the offset, tersely worded (:func:`affidavit.formats.mongodump.iter_bson_file` words it
    precisely). ``start``, a document boundary the caller knows, is where the walk begins
    (the ranges then make up the rest of the file).

    The walk runs in the compiled module of ``bson_codec`` (GIL released) when it is built,
    else here; both give the same ranges, then the same error after the ranges closed
    before the defect. The compiled walk goes window by window (:data:`_WINDOW`), so the
    first ranges are handed out while the rest of the file is still to be walked: whoever
    hashes them starts at once instead of after a walk of the whole file."""
    native = bson_codec._NATIVE  # read at each call (tests switch it off)
    with path.open("rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        if start >= size:
            return
        with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
            if native is not None:
                # a target beyond the file closes no range early; one <= 5 closes every one
                clamped = max(1, min(target, size + 1))
                yield from _native_walk(native, mapped, size, clamped, path, start=start)
                return
            unpack = _LENGTH.unpack_from
            pos = start
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


_PAGE: Final = mmap.PAGESIZE

_WINDOW: Final = 64 << 20
"""Bytes of the file the compiled walk takes at a time (at least twice the target)."""


def _native_walk(
    native: ModuleType, mapped: mmap.mmap, size: int, target: int, path: Path, *, start: int
) -> Iterator[tuple[int, int]]:
    """The compiled walk, window by window, giving exactly the ranges (and the error) of one
    walk over the whole file: a window keeps only the ranges that closed at ``target``
    bytes, and the next window starts where the last of them ends (a range start of the
    whole walk too); what a window's end cut (a document, a length prefix) is walked again
    by the next one. Only the last window's end is the file's."""
    pos, window = start, max(_WINDOW, 2 * target)
    while pos < size:
        end = min(size, pos + window)
        view = memoryview(mapped)[pos:end]
        try:
            found, status, bad = native.ranges(
                view, target, MIN_BSON_DOCUMENT_SIZE, MAX_BSON_DOCUMENT_SIZE
            )
        finally:
            view.release()
        if end == size:
            yield from ((pos + offset, length) for offset, length in found)
            if status == native.RANGES_MALFORMED:
                raise FormatError(f"{path}: malformed document at byte offset {pos + bad}")
            if status == native.RANGES_TRUNCATED:
                raise FormatError(f"{path}: truncated document at byte offset {pos + bad}")
            return
        closed = [(pos + offset, length) for offset, length in found if length >= target]
        yield from closed
        if status == native.RANGES_MALFORMED and bad + 4 <= end - pos:
            # a whole length prefix out of bounds: a defect wherever the window ends
            raise FormatError(f"{path}: malformed document at byte offset {pos + bad}")
        if closed:
            walked, pos = pos, closed[-1][0] + closed[-1][1]
            _forget(mapped, walked, pos)
        else:  # no range closed in this window (a document longer than it): a wider one
            window *= 2


def _forget(mapped: mmap.mmap, start: int, end: int) -> None:
    """Drop the walked pages ``[start, end)`` (whole pages inside it) from this process's
    resident set: the walk touches nearly every page of the file, so without this a walk of
    a 1 GB file ends with 1 GB resident (the page cache keeps the pages; a later read of
    them is not slower). Advice only: where ``madvise`` is missing nothing changes."""
    first = -(-start // _PAGE) * _PAGE
    last = end // _PAGE * _PAGE
    advise = getattr(mapped, "madvise", None)
    if advise is not None and last > first and hasattr(mmap, "MADV_DONTNEED"):
        advise(mmap.MADV_DONTNEED, first, last - first)
