"""An artifact with a signed segment table, verified segment by segment on every core.

Each segment (docs/formats/manifest.md, "Segment tables") is one task: its ciphertext range
read once and hashed, its chunks opened
(:meth:`~affidavit.crypto.age_reader.AgePayload.read_segment`), its plaintext hashed and, as
the content check asks (:class:`SegmentUse`), written at its offset into a private spool or
framed from its first record into exact record pairs
(:func:`~affidavit.formats.bson_codec.frame_exact_pairs`; a document cut by the segment's end
is completed from the next chunks, opened and authenticated again here). Tasks run on
``workers`` threads: ``pread``, ChaCha20-Poly1305 (``cryptography`` >= 45 on inputs of 2 KiB and
more), SHA-256 and the compiled framing all release the GIL (measured in
docs/performance.md). The partial results are merged in segment order into exactly what
one sequential pass computes: the record pairs into one
:class:`~affidavit.fingerprint.accumulator.Accumulator` (order-independent by design), the
framing checked as a chain (each segment's first record is where the documents of the
segments before it end; the last ends at the end of the plaintext).

Nothing here words the artifact's own findings: :func:`read_segments` returns what it found
(:class:`Segmented`), and the reader (:mod:`.reading`) decides; any discrepancy sends the
artifact through the sequential pass too, so its findings are exactly a sequential run's.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, cast

from affidavit.crypto.age_reader import CHUNK_SIZE, AgeDecryptError, AgeFile, SegmentRead
from affidavit.crypto.segments import geometry
from affidavit.errors import FormatError
from affidavit.fingerprint.accumulator import Accumulator
from affidavit.fingerprint.model import record_tag
from affidavit.formats.base import MAX_BSON_DOCUMENT_SIZE, MIN_BSON_DOCUMENT_SIZE
from affidavit.formats.bson_codec import frame_exact_pairs
from affidavit.models.records import RecordEncoding
from affidavit.models.segments import Segment, SegmentTable

__all__ = ["SegmentUse", "Segmented", "default_workers", "read_segments"]

_TAG = record_tag("exact")


def default_workers() -> int:
    """The cores this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


@dataclass(frozen=True, slots=True, kw_only=True)
class SegmentUse:
    """What the content check needs of the plaintext: written to ``spool`` (a private file)
    and/or its documents fingerprinted (``frame``: the table's framing must be ``bson``)."""

    spool: Path | None = None
    frame: bool = False


@dataclass(slots=True, kw_only=True)
class _Part:
    """One segment's outcome."""

    read: SegmentRead
    pairs: bytes = b""
    stop: int | None = None  # where the documents of this segment end (a document start)
    frame_error: str | None = None


@dataclass(slots=True, kw_only=True)
class Segmented:
    """What the segments of one artifact showed. ``problems``: one JSON object per segment
    whose ciphertext, decryption or plaintext differs from the table; ``table_issues``: why
    the table does not describe this file (tiling, chunk places, first records).
    ``fingerprint``: the exact fingerprint text of its documents (when framed and nothing
    failed); ``spool``: the spool written (when asked and nothing failed)."""

    problems: list[dict[str, Any]] = field(default_factory=list)
    table_issues: list[str] = field(default_factory=list)
    frame_errors: list[str] = field(default_factory=list)
    fingerprint: str | None = None
    spool: Path | None = None

    @property
    def ok(self) -> bool:
        """Every segment is as signed, the table describes the file, the framing held."""
        return not (self.problems or self.table_issues or self.frame_errors)


def read_segments(
    age: AgeFile,
    table: SegmentTable,
    *,
    size: int,
    plain_size: int,
    workers: int,
    use: SegmentUse,
    dataset: str,
    advance: Callable[[int], None],
    open_spool: Callable[[Path], BinaryIO] | None = None,
) -> Segmented:
    """Check every segment of the open age file ``age`` (``size`` ciphertext and
    ``plain_size`` plaintext bytes as signed) against ``table``, ``workers`` segments at a
    time. The table must tile the signed sizes at the file's own header size first;
    otherwise nothing is read (the caller falls back to the sequential pass)."""
    result = Segmented()
    layout = age.layout
    result.table_issues = table.tiling_issues(
        size=size, plain_size=plain_size, payload_offset=layout.payload_offset
    )
    if result.table_issues:
        return result
    spool = open_spool(use.spool) if use.spool is not None and open_spool else None
    run = _SegmentRun(
        age, table, plain_size=plain_size, frame=use.frame and table.framing == "bson", spool=spool
    )
    try:
        with ThreadPoolExecutor(max(1, workers), thread_name_prefix="affidavit-segment") as pool:
            futures = [pool.submit(run.task, k) for k in range(len(run.places))]
            try:
                for k, future in enumerate(futures):
                    part = future.result()
                    advance(table.segments[k].size)
                    _judge(result, k, table.segments[k], part)
                    if result.ok:
                        run.merge(result, k, part)
            finally:
                for future in futures:
                    future.cancel()
        if result.ok:
            run.finish(result, dataset)
        if spool is not None and result.ok:
            spool.flush()
            result.spool = use.spool
    finally:
        run.close()
    return result


class _SegmentRun:
    """The segments of one artifact: the task each runs on a worker thread, and the merge
    of their outcomes in segment order on the caller's."""

    def __init__(
        self,
        age: AgeFile,
        table: SegmentTable,
        *,
        plain_size: int,
        frame: bool,
        spool: BinaryIO | None,
    ) -> None:
        self.age = age
        self.table = table
        self.plain_size = plain_size
        self.places = geometry(
            payload_offset=age.layout.payload_offset,
            plain_size=plain_size,
            segment_size=table.segment_size,
        )
        self.frame = frame
        self.spool = spool
        self.acc = Accumulator("exact", keep_keys=False) if frame else None
        self.expect = 0  # the next document start, as the segments merged so far say

    def task(self, k: int) -> _Part:
        """Read, open, hash (and spool, frame) segment ``k``; on a worker thread."""
        place, row = self.places[k], self.table.segments[k]
        read = self.age.payload.read_segment(
            place.first_chunk, place.chunks, from_offset=place.offset, plaintext=True
        )
        # what the caller keeps: the digests, not the plaintext (memory: one segment per worker)
        part = _Part(
            read=SegmentRead(
                cipher_sha256=read.cipher_sha256,
                cipher_size=read.cipher_size,
                plain_sha256=read.plain_sha256,
                plain_size=read.plain_size,
                error=read.error,
            )
        )
        plain = read.plaintext
        if read.error is not None or plain is None:
            return part
        if read.cipher_sha256 != row.sha256 or read.plain_sha256 != row.plain_sha256:
            return part
        if self.spool is not None:
            _pwrite_all(self.spool.fileno(), plain, place.plain_offset)
        if self.frame and row.first_record is not None:
            try:
                part.pairs, part.stop = _frame(self.age, row, plain)
            except (FormatError, AgeDecryptError) as exc:
                part.frame_error = f"segment {k}: {exc.message}"
        return part

    def merge(self, result: Segmented, k: int, part: _Part) -> None:
        """Take segment ``k``'s records, checking the chain of first records."""
        if self.acc is None:
            return
        row = self.table.segments[k]
        end = row.plain_offset + row.plain_size
        if self.expect >= end:  # a document from before runs over the whole segment
            if row.first_record is not None:
                result.table_issues.append(
                    f"segment {k} names a first record at {row.first_record}, but the "
                    f"document before it runs to {self.expect}"
                )
            return
        if row.first_record != self.expect:
            result.table_issues.append(
                f"segment {k} names its first record at {row.first_record}, but the "
                f"documents before it end at {self.expect}"
            )
            return
        if part.frame_error is not None:
            result.frame_errors.append(part.frame_error)
            return
        assert part.stop is not None
        if part.pairs:
            self.acc.add_pairs(part.pairs, None)
        self.expect = part.stop

    def finish(self, result: Segmented, dataset: str) -> None:
        """The documents must end where the plaintext does; then the fingerprint."""
        if self.acc is None:
            return
        if self.expect != self.plain_size:
            result.table_issues.append(
                f"the documents end at {self.expect}, the plaintext at {self.plain_size}"
            )
            return
        fingerprint, _ = self.acc.finish(None, dataset=dataset, encoding=RecordEncoding.BSON.value)
        result.fingerprint = fingerprint.text

    def close(self) -> None:
        """Remove the accumulator's runs; close the spool."""
        if self.acc is not None:
            self.acc.close()
        if self.spool is not None:
            self.spool.close()


def _judge(result: Segmented, k: int, row: Segment, part: _Part) -> None:
    """Compare one segment with its row of the table."""
    read = part.read
    problem: dict[str, Any] = {"segment": k, "offset": row.offset, "size": row.size}
    if read.cipher_sha256 != row.sha256:
        problem.update(expected=row.sha256, actual=read.cipher_sha256)
    if read.error is not None:
        problem["undecryptable"] = read.error.message
    elif read.plain_sha256 != row.plain_sha256 and read.cipher_sha256 == row.sha256:
        problem.update(expected_plain=row.plain_sha256, actual_plain=read.plain_sha256)
    if len(problem) > 3:
        result.problems.append(problem)


def _pwrite_all(fd: int, data: bytearray, offset: int) -> None:
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view, offset = view[written:], offset + written


def _frame(age: AgeFile, row: Segment, plain: bytearray) -> tuple[bytes, int]:
    """The record pairs of the documents that start in this segment, and where the last of
    them ends (the next document's start). A document cut by the segment's end is completed
    from the next chunks, each authenticated. Raises ``FormatError`` for a framing defect,
    :class:`AgeDecryptError` when a chunk after the segment does not open."""
    assert row.first_record is not None
    begin = row.first_record - row.plain_offset
    view = memoryview(plain)[begin:]
    pairs, _, stop = frame_exact_pairs(cast(bytes, view), _TAG, keys=False)  # any buffer
    pos = row.first_record + stop
    end = row.plain_offset + row.plain_size
    if pos >= end:
        return pairs, pos
    layout = age.layout
    doc = bytearray(view[stop:])
    next_chunk = end // CHUNK_SIZE
    while True:
        length = int.from_bytes(doc[:4], "little", signed=True) if len(doc) >= 4 else None
        if length is not None and not MIN_BSON_DOCUMENT_SIZE <= length <= MAX_BSON_DOCUMENT_SIZE:
            raise FormatError(f"malformed document at byte offset {pos}")
        if length is not None and len(doc) >= length:
            break
        if next_chunk >= layout.chunks:
            raise FormatError(f"the stream ends inside the document at byte offset {pos}")
        missing = 4 - len(doc) if length is None else length - len(doc)
        count = min(-(-missing // CHUNK_SIZE), layout.chunks - next_chunk)
        doc += age.payload.decrypt_range(next_chunk, count)
        next_chunk += count
    assert length is not None
    more, _, done = frame_exact_pairs(cast(bytes, memoryview(doc)[:length]), _TAG, keys=False)
    if done != length:
        raise FormatError(f"malformed document at byte offset {pos}")
    return pairs + more, pos + length
