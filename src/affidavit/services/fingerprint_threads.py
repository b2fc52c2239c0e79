"""An uncompressed mongodump ``.bson`` file fingerprinted by threads that split it by bytes
(exact profile, no keys, no full decode: :func:`affidavit.services.fingerprint.add_bson_file`).

No walk comes first. The file is cut into nominal ranges of :data:`RANGE` bytes; the thread
that takes range ``k`` reads it (and a little past its end), *guesses* where documents start
again at its first byte and at its nominal end (``bson_codec._native.resync``: a few
documents in a row that look whole), frames and hashes the documents between the two
guesses, and sorts their pairs. Nothing is taken on trust: the caller adds the ranges in
order, and a range counts only when its start is where the previous one ended (offset 0
first) and its framing ended exactly at its end guess. Framing from a true document start
visits only true starts, so by induction every counted range starts and ends at a document
boundary, the ranges tile the file, and each document is hashed exactly once.

A range that does not line up (a wrong guess, a document longer than what the thread read,
a defect, a file that changed) is read again from where the previous range ended, by the
length-prefix walk (:func:`~affidavit.formats.bson_codec.file_ranges.bson_file_ranges`) up
to the first document boundary at or after its nominal end: the same work, and the same
error, at the same offset, as a walk of the whole file would give. So a wrong guess costs
time, never a result.

Why: the walk touched every page of the file on one thread before or beside the hashing
(0.15 s of CPU per GB); each thread's framing already walks its own documents.
"""

from __future__ import annotations

import os
import threading
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from affidavit.errors import FormatError
from affidavit.fingerprint.accumulator import Accumulator, SortedPairs, sort_pairs
from affidavit.fingerprint.model import record_tag
from affidavit.formats import bson_codec
from affidavit.formats.base import MAX_BSON_DOCUMENT_SIZE, MIN_BSON_DOCUMENT_SIZE
from affidavit.models.progress import Reporter, SilentReporter

__all__ = ["RANGE", "hash_file_threaded"]

RANGE: Final = 8 << 20
"""Nominal bytes per range (fewer, larger tasks; the ranges in flight are bounded)."""

SLACK: Final = 64 << 10
"""Bytes read past a range's nominal end, to find where the next range starts."""

GROW_LIMIT: Final = 32 << 20
"""The most a thread reads past its nominal end looking for where the next range starts (a
document longer than that: the range is left to the caller's walk). A range in which no
document starts and ends is left to the walk at once."""

CHAIN: Final = 4
"""Documents in a row that must look whole for a guess."""


@dataclass(frozen=True, slots=True)
class _Range:
    """A thread's result for nominal range ``index``: ``start`` and ``end`` (absolute
    offsets) and the sorted pairs of the documents between them, or ``run`` None when the
    thread could not frame from its guess (the caller reads the range again)."""

    index: int
    start: int
    end: int
    run: SortedPairs | None


_BUFFER = threading.local()


def _buffer(size: int) -> memoryview:
    buffer: bytearray | None = getattr(_BUFFER, "buffer", None)
    if buffer is None or len(buffer) < size:
        buffer = _BUFFER.buffer = bytearray(size + (1 << 20))  # grows to the largest
    return memoryview(buffer)


def _read(fd: int, view: memoryview, offset: int) -> int:
    """Read into ``view`` from ``offset`` until it is full or the file ends: bytes read."""
    got = 0
    while got < len(view):
        n = os.preadv(fd, [view[got:]], offset + got)
        if n <= 0:
            break
        got += n
    return got


def _guess(view: memoryview, at: int) -> tuple[int, int]:
    """Where documents seem to start again at or after ``at`` of ``view``, or -1; and where
    a guess over the same bytes with more after them must scan from (the found offset, or
    the first one refused only because the view ended: so a growing read is not scanned
    again from ``at``, which made ranges inside long documents cost many times their size)."""
    native = bson_codec._NATIVE
    assert native is not None  # the threaded path needs the compiled module
    found: int = native.resync(view, at, CHAIN, MIN_BSON_DOCUMENT_SIZE, MAX_BSON_DOCUMENT_SIZE)
    return (found, found) if found >= 0 else (-1, -1 - found)


def _frame(view: memoryview) -> tuple[bytes, int]:
    from affidavit.formats.bson_codec import frame_exact_view

    return frame_exact_view(view, record_tag("exact"))


def _hash_range(fd: int, index: int, size: int, bucket_bits: int) -> _Range:
    """Thread worker: nominal range ``index`` guessed, framed, hashed and sorted."""
    lo = index * RANGE
    hi = min(size, lo + RANGE)
    failed = _Range(index, -1, -1, None)
    want = min(size, hi + SLACK) - lo
    start = 0 if index == 0 else -1
    end, end_from = -1, hi - lo
    held: object = None
    have = 0  # bytes of the range already in the buffer: a growing read adds only the rest
    while True:
        whole = _buffer(want)
        if whole.obj is not held:  # a new buffer: read from the start
            held, have = whole.obj, 0
        view = whole[:want]
        if _read(fd, view[have:], lo + have) != want - have:  # shrank: the walk words it
            return failed
        have = want
        if start < 0:
            start = _guess(view, 0)[0]
            if start < 0:
                # no document starts and ends in what was read: the range lies inside a long
                # one, left to the caller's walk (which steps over it by its length). A
                # longer read would scan the range again from its first byte each time it
                # grew (over random bytes the guesses stay undecided): 42x the file's bytes
                # for documents 5 ranges long (tests/attacks/test_attack_session11_fingerprint)
                break
        if hi == size:
            end = hi - lo
        else:
            end, end_from = _guess(view, end_from)
        if end < 0 and lo + want < size and want - (hi - lo) < GROW_LIMIT:
            want = min(size - lo, 2 * want - (hi - lo))  # a long document at the end
            continue
        break
    if start < 0 or end < start:
        return failed
    try:
        pairs, stop = _frame(view[start:end])
    except FormatError:
        return failed
    if stop != end - start:
        return failed
    return _Range(index, lo + start, lo + end, sort_pairs(pairs, bucket_bits=bucket_bits))


def _walk_range(path: Path, fd: int, start: int, nominal_end: int, bucket_bits: int) -> _Range:
    """The documents from ``start`` (a document boundary) to the first boundary at or after
    ``nominal_end``, found by the length-prefix walk and framed: what a range is when its
    thread's guesses did not line up. Raises the walk's or the framing's ``FormatError``."""
    from affidavit.formats.bson_codec.file_ranges import bson_file_ranges

    walk = bson_file_ranges(path, target=max(1, nominal_end - start), start=start)
    try:
        found = next(walk, None)
    finally:
        walk.close()
    if found is None:  # the file ends before ``start``: it shrank
        raise FormatError(f"{path}: the documents at byte offset {start} changed or do not frame")
    offset, length = found
    result = _hash_walked(fd, offset, length, bucket_bits, words=True)
    if result.run is None:
        raise FormatError(f"{path}: the documents at byte offset {offset} changed or do not frame")
    return result


def _hash_walked(
    fd: int, offset: int, length: int, bucket_bits: int, *, words: bool = False
) -> _Range:
    """Thread worker of the walk's ranges: ``length`` bytes of whole documents at
    ``offset``, read, framed, hashed and sorted (``run`` None when they do not frame; with
    ``words``, a defect the framing words is raised as it words it)."""
    view = _buffer(length)[:length]
    got = _read(fd, view, offset)
    try:
        pairs, stop = _frame(view[:got])
    except FormatError:
        if words:
            raise
        return _Range(-1, offset, offset + length, None)
    if got != length or stop != length:
        return _Range(-1, offset, offset + length, None)
    return _Range(-1, offset, offset + length, sort_pairs(pairs, bucket_bits=bucket_bits))


GIVE_UP: Final = 2
"""Ranges read again by the walk after which, when they are half of the ranges so far, the
guessing stops and the rest of the file is cut by the walk instead (documents of several
MiB, or payloads full of documents: the guesses keep failing there, and each failure is
read again on the caller's thread)."""


class _Split:
    """The state of one file's split: the counted ranges end at :attr:`done`."""

    def __init__(self, acc: Accumulator, path: Path, fd: int, size: int, report: Reporter) -> None:
        self.acc, self.path, self.fd, self.size, self.report = acc, path, fd, size, report
        self.bits = acc.bucket_bits
        self.done = 0  # a document boundary
        self.seen = self.missed = 0

    def add(self, result: _Range) -> None:
        assert result.run is not None
        self.acc.add_sorted(result.run)
        self.report.advance(len(result.run.pairs))
        self.done = result.end

    def take(self, result: _Range) -> bool:
        """Count a guessed range, reading it again by the walk when it does not line up;
        whether guessing should go on."""
        self.seen += 1
        if result.run is not None and result.start == self.done:
            self.add(result)
            return True
        nominal_end = (result.index + 1) * RANGE
        if self.done >= min(self.size, nominal_end):
            return True  # the previous range ran past this one's end: nothing starts here
        self.missed += 1
        self.add(_walk_range(self.path, self.fd, self.done, nominal_end, self.bits))
        return not (self.missed >= GIVE_UP and 2 * self.missed >= self.seen)

    def take_walked(self, result: _Range) -> None:
        if result.run is None or result.start != self.done:  # worded by the one walk
            self.add(_walk_range(self.path, self.fd, self.done, result.end, self.bits))
        else:
            self.add(result)

    def walked_ranges(self) -> Iterator[tuple[int, int]]:
        from affidavit.formats.bson_codec.file_ranges import bson_file_ranges

        return bson_file_ranges(self.path, target=RANGE, start=self.done)


def hash_file_threaded(
    acc: Accumulator, path: Path, *, workers: int, rep: Reporter | None = None
) -> None:
    """Add every document of ``path`` to ``acc`` (exact profile, no keys), the file split by
    bytes among ``workers`` threads (one: this thread alone, the same steps); at most ``2 *
    workers`` ranges in flight, added in order. Where the guesses keep failing
    (:data:`GIVE_UP`), the rest is cut by the length-prefix walk and shared the same way. A
    defect raises ``FormatError`` worded as the length-prefix walk words it."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    try:
        size = os.fstat(fd).st_size
        split = _Split(acc, path, fd, size, rep or SilentReporter())
        # long documents: the walk touches a page per document (next to nothing), while a
        # guess has to read a whole document past a range's end to see one
        guess = not _documents_are_long(fd, size)
        count = -(-size // RANGE)
        if workers <= 1 or count <= 1:
            index = 0
            while guess and index < count:
                if not split.take(_hash_range(fd, index, size, split.bits)):
                    break
                index += 1
            if split.done < size:
                for offset, length in split.walked_ranges():
                    split.take_walked(_hash_walked(fd, offset, length, split.bits))
        else:
            _run_threads(split, count if guess else 0, workers=workers)
        if split.done != size:  # the last range ends at the end of the file, or a walk raised
            raise FormatError(
                f"{path}: the documents at byte offset {split.done} changed or do not frame"
            )
    finally:
        os.close(fd)


LONG_DOCUMENT: Final = 64 << 10
"""Mean length of a file's first documents from which it is cut by the walk from the start."""


def _documents_are_long(fd: int, size: int) -> bool:
    """Whether the first documents of the file (those starting in its first MiB, at most
    16) average :data:`LONG_DOCUMENT` bytes or more (a defect there: no, the threads word
    it)."""
    if size < 16 * LONG_DOCUMENT:
        return False
    pos = seen = 0
    while pos < min(size, 1 << 20) and seen < 16:
        prefix = os.pread(fd, 4, pos)
        length = int.from_bytes(prefix, "little", signed=True) if len(prefix) == 4 else 0
        if not MIN_BSON_DOCUMENT_SIZE <= length <= MAX_BSON_DOCUMENT_SIZE:
            return False
        pos += length
        seen += 1
    return pos >= seen * LONG_DOCUMENT


def _run_threads(split: _Split, count: int, *, workers: int) -> None:
    fd, size, bits = split.fd, split.size, split.bits
    pending: deque[Future[_Range]] = deque()
    with ThreadPoolExecutor(workers, thread_name_prefix="affidavit-fingerprint") as pool:
        try:
            guessing = True
            for index in range(count):
                if len(pending) >= 2 * workers:
                    guessing = split.take(pending.popleft().result())
                    if not guessing:
                        break
                pending.append(pool.submit(_hash_range, fd, index, size, bits))
            while guessing and pending:
                guessing = split.take(pending.popleft().result())
            for future in pending:  # guessed past where the walk takes over
                future.cancel()
            pending.clear()
            if split.done >= size:  # every range guessed and counted
                return
            walked: deque[Future[_Range]] = pending
            for offset, length in split.walked_ranges():
                if len(walked) >= 2 * workers:
                    split.take_walked(walked.popleft().result())
                walked.append(pool.submit(_hash_walked, fd, offset, length, bits))
            while walked:
                split.take_walked(walked.popleft().result())
        finally:
            for future in pending:
                future.cancel()
