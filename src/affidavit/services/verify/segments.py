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

The task is one function over plain values, :func:`segment_part`, so that a Dask cluster's
worker runs the very same code (``verify --cluster``, :mod:`.cluster`): a
:class:`SegmentJob` (the vault, the path, the payload key and geometry, the segment's place
and signed row) is what travels, :func:`check_segment` opens the artifact where the worker
runs (``pread`` of a folder vault's file; an S3 object's ranges into a :class:`RangedFile`),
and a :class:`SegmentPart` of digests and record pairs comes back to the same merge.

Nothing here words the artifact's own findings: :func:`read_segments` returns what it found
(:class:`Segmented`), and the reader (:mod:`.reading`) decides; any discrepancy sends the
artifact through the sequential pass too, so its findings are exactly a sequential run's.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, cast

from affidavit.crypto.age_reader import (
    CHUNK_SIZE,
    AgeDecryptError,
    AgeFile,
    AgePayload,
    PayloadKey,
    StreamLayout,
)
from affidavit.crypto.segments import SegmentPlace, geometry
from affidavit.errors import Error, FormatError
from affidavit.fingerprint.accumulator import Accumulator
from affidavit.fingerprint.model import record_tag
from affidavit.formats.base import MAX_BSON_DOCUMENT_SIZE, MIN_BSON_DOCUMENT_SIZE
from affidavit.formats.bson_codec import frame_exact_pairs
from affidavit.models.inventory import Vault, VaultKind
from affidavit.models.records import RecordEncoding
from affidavit.models.segments import Segment, SegmentTable
from affidavit.services.backends import vault_backend
from affidavit.vaults.base import VaultBackend

__all__ = [
    "RangedFile",
    "Remote",
    "SegmentJob",
    "SegmentPart",
    "SegmentUse",
    "Segmented",
    "check_segment",
    "default_workers",
    "read_segments",
    "segment_part",
]

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
class SegmentPart:
    """One segment's outcome, in plain values (it travels back from a cluster's worker):
    the SHA-256 of the ciphertext read and, when every chunk opened, of the plaintext (else
    ``error``, why a chunk did not open); the exact record pairs of the documents that start
    in it and where they end (``stop``, the next document's start), or why they did not
    frame. ``read_error``: the vault's file could not be read at all (says nothing of the
    backup: the run stops with exit 3)."""

    cipher_sha256: str = ""
    plain_sha256: str | None = None
    error: str | None = None
    pairs: bytes = b""
    stop: int | None = None  # where the documents of this segment end (a document start)
    frame_error: str | None = None
    read_error: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class SegmentJob:
    """One segment to check on another machine, in plain values (picklable): where the
    artifact is (``vault``: the registered vault, no credentials; ``path``), the age file's
    payload key and geometry (never the identity or the file key), the segment's place and
    signed row, and whether its documents are framed. :func:`check_segment` runs it."""

    vault: Vault
    path: str
    key: bytes = field(repr=False)
    payload_offset: int
    file_size: int
    index: int
    place: SegmentPlace
    row: Segment
    frame: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class Remote:
    """Where the segments of one artifact run instead of local threads: ``run`` takes the
    jobs and yields their parts in the same order (a Dask cluster:
    :mod:`affidavit.services.verify.cluster`)."""

    vault: Vault
    path: str
    run: Callable[[Sequence[SegmentJob]], Iterator[SegmentPart]]


def segment_part(
    payload: AgePayload,
    place: SegmentPlace,
    row: Segment,
    *,
    frame: bool,
    spool: BinaryIO | None = None,
    fetch: Callable[[int, int], None] | None = None,
) -> SegmentPart:
    """Read, open, hash (and spool, frame) one segment of the age file ``payload`` opens:
    the one task of a segment, on a local thread or a cluster's worker. ``fetch(start,
    end)``, when given, is called before the file's bytes ``[start, end)`` are read (a
    worker's ranged copy of an artifact, :class:`RangedFile`). Raises the ``OSError`` of
    reading the file."""
    layout = payload.layout
    if fetch is not None:
        last = place.first_chunk + place.chunks - 1
        fetch(place.offset, layout.chunk_offset(last) + layout.sealed_size(last))
    read = payload.read_segment(
        place.first_chunk, place.chunks, from_offset=place.offset, plaintext=True
    )
    # what the caller keeps: the digests, not the plaintext (memory: one segment per worker)
    part = SegmentPart(
        cipher_sha256=read.cipher_sha256,
        plain_sha256=read.plain_sha256,
        error=read.error.message if read.error is not None else None,
    )
    plain = read.plaintext
    if read.error is not None or plain is None:
        return part
    if read.cipher_sha256 != row.sha256 or read.plain_sha256 != row.plain_sha256:
        return part
    if spool is not None:
        _pwrite_all(spool.fileno(), plain, place.plain_offset)
    if frame and row.first_record is not None:
        try:
            part.pairs, part.stop = _frame(payload, row, plain, fetch)
        except (FormatError, AgeDecryptError) as exc:
            part.frame_error = exc.message
    return part


def check_segment(job: SegmentJob) -> SegmentPart:
    """Run one :class:`SegmentJob` where it lands (a cluster's worker): open the artifact
    in the vault and read only its segment, with ``pread`` from a folder vault's file or
    with ranged reads (:meth:`~affidavit.vaults.base.VaultBackend.read_range`: an S3
    ranged GET) into a private sparse memory file, and check it as a local thread does
    (:func:`segment_part`). A file the vault cannot hand out, or that cannot be read, is
    :attr:`SegmentPart.read_error`, never raised (the client words it)."""
    try:
        backend = _worker_vault(job.vault)
        layout = StreamLayout.of(payload_offset=job.payload_offset, file_size=job.file_size)
        if job.vault.kind is VaultKind.FILE:
            with backend.open(job.path) as fh:
                payload = AgePayload(fh.fileno(), PayloadKey(job.key), layout)
                return segment_part(payload, job.place, job.row, frame=job.frame)
        with RangedFile(backend, job.path, job.file_size) as ranged:
            payload = AgePayload(ranged.fileno(), PayloadKey(job.key), layout)
            return segment_part(payload, job.place, job.row, frame=job.frame, fetch=ranged.fetch)
    except (Error, OSError, ValueError) as exc:
        return SegmentPart(read_error=f"reading {job.path} on a cluster worker failed: {exc}")


@functools.lru_cache(maxsize=8)
def _worker_vault(vault: Vault) -> VaultBackend:
    """One backend per vault in a worker process: an S3 vault's client (its connection pool)
    serves every segment the worker reads, instead of a new client per task."""
    return vault_backend(vault)


class RangedFile:
    """A private anonymous file (``memfd``) of an artifact's size that holds only the
    ranges fetched from the vault (:meth:`fetch`, one ranged read each; the rest is a hole
    that reads as zeros and never authenticates). What a worker reads an S3 artifact's
    segment from with ``pread``, as it reads a folder vault's file; it never touches
    disk."""

    def __init__(self, backend: VaultBackend, path: str, size: int) -> None:
        self._backend = backend
        self._path = path
        self._size = size
        self._fd = os.memfd_create("affidavit-segment", os.MFD_CLOEXEC)
        os.ftruncate(self._fd, size)
        self._have: list[tuple[int, int]] = []

    def fileno(self) -> int:
        """The descriptor (``pread`` it)."""
        return self._fd

    def fetch(self, start: int, end: int) -> None:
        """Copy the artifact's bytes ``[start, end)`` here (fewer at its end), unless held."""
        end = min(end, self._size)
        if start >= end or any(a <= start and end <= b for a, b in self._have):
            return
        data = self._backend.read_range(self._path, start, end - start)
        _pwrite_all(self._fd, bytearray(data), start)
        self._have.append((start, start + len(data)))

    def as_file(self) -> BinaryIO:
        """A readable file over the same bytes (its own descriptor), for the age header."""
        return os.fdopen(os.dup(self._fd), "rb")

    def close(self) -> None:
        """Release the memory."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> RangedFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


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
    remote: Remote | None = None,
) -> Segmented:
    """Check every segment of the open age file ``age`` (``size`` ciphertext and
    ``plain_size`` plaintext bytes as signed) against ``table``, ``workers`` segments at a
    time. The table must tile the signed sizes at the file's own header size first;
    otherwise nothing is read (the caller falls back to the sequential pass).

    With ``remote`` (and no spool asked for: a spool is a local file), the segments run
    where ``remote`` sends them (:func:`check_segment`, the same :func:`segment_part` on
    the worker) and their parts are merged here exactly as local threads' are. Raises
    ``OSError`` when the vault's file could not be read, here or on a worker."""
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
        parts = (
            run.remote_parts(remote)
            if remote is not None and spool is None
            else _threaded(run, workers)
        )
        for k, part in enumerate(parts):
            if part.read_error is not None:
                raise OSError(part.read_error)
            advance(table.segments[k].size)
            _judge(result, k, table.segments[k], part)
            if result.ok:
                run.merge(result, k, part)
        if result.ok:
            run.finish(result, dataset)
        if spool is not None and result.ok:
            spool.flush()
            result.spool = use.spool
    finally:
        run.close()
    return result


def _threaded(run: _SegmentRun, workers: int) -> Iterator[SegmentPart]:
    """The parts of every segment, in order, computed on ``workers`` local threads."""
    with ThreadPoolExecutor(max(1, workers), thread_name_prefix="affidavit-segment") as pool:
        futures = [pool.submit(run.task, k) for k in range(len(run.places))]
        try:
            for future in futures:
                yield future.result()
        finally:
            for future in futures:
                future.cancel()


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

    def task(self, k: int) -> SegmentPart:
        """Read, open, hash (and spool, frame) segment ``k``; on a worker thread."""
        part = segment_part(
            self.age.payload,
            self.places[k],
            self.table.segments[k],
            frame=self.frame,
            spool=self.spool,
        )
        if part.frame_error is not None:
            part.frame_error = f"segment {k}: {part.frame_error}"
        return part

    def remote_parts(self, remote: Remote) -> Iterator[SegmentPart]:
        """The parts of every segment, in order, computed where ``remote`` sends them."""
        payload = self.age.payload
        jobs = [
            SegmentJob(
                vault=remote.vault,
                path=remote.path,
                key=payload.key.secret,
                payload_offset=payload.layout.payload_offset,
                file_size=payload.layout.file_size,
                index=k,
                place=place,
                row=self.table.segments[k],
                frame=self.frame,
            )
            for k, place in enumerate(self.places)
        ]
        for k, part in enumerate(remote.run(jobs)):
            if part.frame_error is not None:
                part.frame_error = f"segment {k}: {part.frame_error}"
            yield part

    def merge(self, result: Segmented, k: int, part: SegmentPart) -> None:
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


def _judge(result: Segmented, k: int, row: Segment, part: SegmentPart) -> None:
    """Compare one segment with its row of the table."""
    problem: dict[str, Any] = {"segment": k, "offset": row.offset, "size": row.size}
    if part.cipher_sha256 != row.sha256:
        problem.update(expected=row.sha256, actual=part.cipher_sha256)
    if part.error is not None:
        problem["undecryptable"] = part.error
    elif part.plain_sha256 != row.plain_sha256 and part.cipher_sha256 == row.sha256:
        problem.update(expected_plain=row.plain_sha256, actual_plain=part.plain_sha256)
    if len(problem) > 3:
        result.problems.append(problem)


def _pwrite_all(fd: int, data: bytearray, offset: int) -> None:
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view, offset = view[written:], offset + written


def _frame(
    payload: AgePayload,
    row: Segment,
    plain: bytearray,
    fetch: Callable[[int, int], None] | None = None,
) -> tuple[bytes, int]:
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
    layout = payload.layout
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
        if fetch is not None:
            last = next_chunk + count - 1
            fetch(
                layout.chunk_offset(next_chunk),
                layout.chunk_offset(last) + layout.sealed_size(last),
            )
        doc += payload.decrypt_range(next_chunk, count)
        next_chunk += count
    assert length is not None
    more, _, done = frame_exact_pairs(cast(bytes, memoryview(doc)[:length]), _TAG, keys=False)
    if done != length:
        raise FormatError(f"malformed document at byte offset {pos}")
    return pairs + more, pos + length
