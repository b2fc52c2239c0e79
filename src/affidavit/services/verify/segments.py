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

A verification's artifacts share one pool (:class:`Pipeline`, issue 18): a feeder thread
opens them in the order the verification checks them and submits their segments in file
order, so the next artifact's segments run while the one before is merged and finished; the
caller takes each with :meth:`Pipeline.claim` (only from the very file it opened itself) and
merges it here as its own threads' parts. There a deep segment hands its ciphertext to the
whole-file digest without waiting for its turn (:meth:`OrderedDigest.deposit`, which gives
its buffers back once hashed), at most ``2 x workers`` buffer sets taken at once.

Nothing here words the artifact's own findings: :func:`read_segments` returns what it found
(:class:`Segmented`), and the reader (:mod:`.reading`) decides; any discrepancy sends the
artifact through the sequential pass too, so its findings are exactly a sequential run's.
"""

from __future__ import annotations

import contextlib
import functools
import os
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from affidavit.crypto.age_reader import (
    CHUNK_SIZE,
    AgeDecryptError,
    AgeFile,
    AgePayload,
    PayloadKey,
    SegmentBuffers,
    SegmentRead,
    StreamLayout,
)
from affidavit.crypto.segments import OrderedDigest, SegmentPlace, geometry
from affidavit.errors import Error, FormatError
from affidavit.fingerprint.accumulator import Accumulator, SortedPairs, sort_pairs
from affidavit.fingerprint.model import record_tag
from affidavit.formats.base import MAX_BSON_DOCUMENT_SIZE, MIN_BSON_DOCUMENT_SIZE
from affidavit.formats.bson_codec import frame_exact_view
from affidavit.models.inventory import Vault, VaultKind
from affidavit.models.records import RecordEncoding
from affidavit.models.segments import Segment, SegmentTable
from affidavit.private_temp import open_private as open_private_spool
from affidavit.services.backends import vault_backend
from affidavit.vaults.base import VaultBackend

__all__ = [
    "Ahead",
    "BufferPool",
    "Pipeline",
    "RangedFile",
    "Remote",
    "SegmentJob",
    "SegmentPart",
    "SegmentUse",
    "Segmented",
    "check_segment",
    "default_workers",
    "frame_pairs",
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
    sorted: SortedPairs | None = field(default=None, repr=False)  # local: ``pairs``, sorted


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
    plain_digest: bool = True  # False: a fast verification (no plaintext SHA-256)


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
    buffers: SegmentBuffers | None = None,
    whole: tuple[OrderedDigest, int] | None = None,
    plain_digest: bool = True,
    release: Handover | None = None,
) -> SegmentPart:
    """Read, open, hash (and spool, frame) one segment of the age file ``payload`` opens:
    the one task of a segment, on a local thread or a cluster's worker. ``fetch(start,
    end)``, when given, is called before the file's bytes ``[start, end)`` are read (a
    worker's ranged copy of an artifact, :class:`RangedFile`). ``buffers``: the thread's
    reused memory (local threads). ``whole``: the artifact's :class:`OrderedDigest` and
    this segment's index; the ciphertext read is fed to it (as soon as it is this
    segment's turn, at the latest before returning), so the whole-file digest covers the
    very bytes opened here. ``plain_digest=False`` (a fast verification): every chunk is
    opened and authenticated, the plaintext is not hashed and not compared with the row's
    (:attr:`SegmentPart.plain_sha256` None). Raises the ``OSError`` of reading the file.

    ``release`` (with ``whole`` and ``buffers``): the segment's ciphertext is handed to the
    digest without waiting for its turn (:meth:`OrderedDigest.deposit`), which calls
    ``release()`` once it is hashed: then, and only then, may ``buffers`` be reused.
    :attr:`Handover.handed` tells (also after an exception) whether they were handed over;
    if not, the caller gives them back itself."""
    if whole is None:
        return _segment_part(
            payload,
            place,
            row,
            frame=frame,
            spool=spool,
            fetch=fetch,
            buffers=buffers,
            whole=None,
            plain_digest=plain_digest,
        )
    digest, k = whole
    fed: list[bool] = []
    try:
        return _segment_part(
            payload,
            place,
            row,
            frame=frame,
            spool=spool,
            fetch=fetch,
            buffers=buffers,
            whole=(digest, k, fed),
            plain_digest=plain_digest,
            release=release,
        )
    finally:
        if not fed and release is not None:
            digest.deposit(k, None, _nothing)  # never read whole: no digest (turn moves on)
        elif not fed:
            digest.feed(k, None)  # never read whole: no digest (the turn moves on)


def _segment_part(
    payload: AgePayload,
    place: SegmentPlace,
    row: Segment,
    *,
    frame: bool,
    spool: BinaryIO | None,
    fetch: Callable[[int, int], None] | None,
    buffers: SegmentBuffers | None,
    whole: tuple[OrderedDigest, int, list[bool]] | None,
    plain_digest: bool,
    release: Handover | None = None,
) -> SegmentPart:
    layout = payload.layout
    if fetch is not None:
        last = place.first_chunk + place.chunks - 1
        fetch(place.offset, layout.chunk_offset(last) + layout.sealed_size(last))
    read = payload.read_segment(
        place.first_chunk,
        place.chunks,
        from_offset=place.offset,
        plaintext=True,
        buffers=buffers,
        plain_digest=plain_digest,
    )

    def feed(wait: bool) -> None:
        if whole is None or whole[2]:
            return
        digest, k, fed = whole
        whole_read = read.ciphertext is not None and read.cipher_size == place.size
        data = read.ciphertext if whole_read else None
        if wait and release is not None:  # no waiting: the digest releases the buffers
            release.handed = True
            fed.append(True)
            digest.deposit(k, data, release)
        elif digest.feed(k, data, wait=wait):
            fed.append(True)

    feed(False)  # at once if its turn has come; else after the framing
    try:
        return _use_segment(payload, row, place, read, frame=frame, spool=spool, fetch=fetch)
    finally:
        feed(True)


def _use_segment(
    payload: AgePayload,
    row: Segment,
    place: SegmentPlace,
    read: SegmentRead,
    *,
    frame: bool,
    spool: BinaryIO | None,
    fetch: Callable[[int, int], None] | None,
) -> SegmentPart:
    # what the caller keeps: the digests, not the plaintext (memory: one segment per worker)
    part = SegmentPart(
        cipher_sha256=read.cipher_sha256,
        plain_sha256=read.plain_sha256,
        error=read.error.message if read.error is not None else None,
    )
    plain = read.plaintext
    if read.error is not None or plain is None:
        return part
    if read.cipher_sha256 != row.sha256:
        return part
    if read.plain_sha256 is not None and read.plain_sha256 != row.plain_sha256:
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
    (:func:`segment_part`), in segment memory the worker's threads reuse from task to task
    (:data:`_WORKER_BUFFERS`). A file the vault cannot hand out, or that cannot be read, is
    :attr:`SegmentPart.read_error`, never raised (the client words it)."""
    buffers = _WORKER_BUFFERS.take()
    try:
        backend = _worker_vault(job.vault)
        layout = StreamLayout.of(payload_offset=job.payload_offset, file_size=job.file_size)
        if job.vault.kind is VaultKind.FILE:
            with backend.open(job.path) as fh:
                payload = AgePayload(fh.fileno(), PayloadKey(job.key), layout)
                return _sorted(
                    segment_part(
                        payload,
                        job.place,
                        job.row,
                        frame=job.frame,
                        buffers=buffers,
                        plain_digest=job.plain_digest,
                    )
                )
        with RangedFile(backend, job.path, job.file_size) as ranged:
            payload = AgePayload(ranged.fileno(), PayloadKey(job.key), layout)
            return _sorted(
                segment_part(
                    payload,
                    job.place,
                    job.row,
                    frame=job.frame,
                    fetch=ranged.fetch,
                    buffers=buffers,
                    plain_digest=job.plain_digest,
                )
            )
    except (Error, OSError, ValueError) as exc:
        return SegmentPart(read_error=f"reading {job.path} on a cluster worker failed: {exc}")
    finally:
        _WORKER_BUFFERS.give(buffers)  # the part holds digests and pairs, no view of them


def _nothing() -> None:
    """No memory to give back."""


class Handover:
    """Gives a task's segment memory back to its :class:`BufferPool` when called (by the
    :class:`OrderedDigest` that hashed the ciphertext in it); ``handed``: the task handed
    the memory to the digest and must not give it back itself."""

    __slots__ = ("buffers", "handed", "pool")

    def __init__(self, pool: BufferPool, buffers: SegmentBuffers) -> None:
        self.pool, self.buffers, self.handed = pool, buffers, False

    def __call__(self) -> None:
        self.pool.give(self.buffers)


def _sorted(part: SegmentPart) -> SegmentPart:
    """The part with its record pairs sorted as the client's accumulator files them
    (:func:`~affidavit.fingerprint.accumulator.sort_pairs`): the sort runs where the segment
    was read, on a local thread or a cluster's worker, not in the client's merge (which
    checks the order, :meth:`~affidavit.fingerprint.accumulator.SortedPairs.check`)."""
    if part.pairs and part.frame_error is None:
        part.sorted = sort_pairs(part.pairs)
        part.pairs = b""
    return part


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
    whole_sha256: str | None = None  # with ``whole_digest``: the file's, from the same reads

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
    whole_digest: bool = False,
    buffers: BufferPool | None = None,
    deep: bool = True,
    ahead: Ahead | None = None,
) -> Segmented:
    """Check every segment of the open age file ``age`` (``size`` ciphertext and
    ``plain_size`` plaintext bytes as signed) against ``table``, ``workers`` segments at a
    time. The table must tile the signed sizes at the file's own header size first;
    otherwise nothing is read (the caller falls back to the sequential pass).

    With ``remote`` (and no spool asked for: a spool is a local file), the segments run
    where ``remote`` sends them (:func:`check_segment`, the same :func:`segment_part` on
    the worker) and their parts are merged here exactly as local threads' are. Raises
    ``OSError`` when the vault's file could not be read, here or on a worker.

    ``whole_digest`` (local threads only): also the SHA-256 of the whole file
    (:attr:`Segmented.whole_sha256`), from the ciphertext the segments read, in file order
    (:class:`~affidavit.crypto.segments.OrderedDigest`): no second read of the file.
    ``buffers``: the segment memory to reuse (a verification's, over its artifacts; else
    this call's own). ``deep=False`` (a fast verification, docs/verification.md): no
    plaintext SHA-256 per segment, here or on a worker; every byte is still read, hashed on
    the ciphertext side, opened and authenticated, and framed as asked.

    ``ahead``: the same segments already under way on a verification's :class:`Pipeline`
    (started while the artifacts before this one were checked, from the same file); their
    parts are merged here exactly as this call's own threads' would be."""
    if ahead is not None:
        return _merge_ahead(ahead, table, size=size, dataset=dataset, advance=advance, deep=deep)
    result = Segmented()
    layout = age.layout
    result.table_issues = table.tiling_issues(
        size=size, plain_size=plain_size, payload_offset=layout.payload_offset
    )
    if result.table_issues:
        return result
    spool = open_spool(use.spool) if use.spool is not None and open_spool else None
    run = _SegmentRun(
        age,
        table,
        plain_size=plain_size,
        frame=use.frame and table.framing == "bson",
        spool=spool,
        buffers=buffers or BufferPool(),
        deep=deep,
    )
    local = remote is None or spool is not None
    if whole_digest and local:
        run.whole = OrderedDigest(len(run.places))
    try:
        parts = run.remote_parts(remote) if not local and remote else _threaded(run, workers)
        _merge_parts(result, run, parts, table, dataset=dataset, advance=advance, deep=deep)
        if spool is not None and result.ok:
            spool.flush()
            result.spool = use.spool
        if run.whole is not None:
            result.whole_sha256 = run.whole.result(size)
    finally:
        run.close()
    return result


def _merge_parts(
    result: Segmented,
    run: _SegmentRun,
    parts: Iterable[SegmentPart],
    table: SegmentTable,
    *,
    dataset: str,
    advance: Callable[[int], None],
    deep: bool,
) -> None:
    """Judge each segment's part in segment order, merge the good ones into ``result``, and
    finish the artifact when every segment was as signed (a read error raises ``OSError``)."""
    for k, part in enumerate(parts):
        if part.read_error is not None:
            raise OSError(part.read_error)
        advance(table.segments[k].size)
        _judge(result, k, table.segments[k], part, deep=deep)
        if result.ok:
            run.merge(result, k, part)
    if result.ok:
        run.finish(result, dataset)


def _merge_ahead(
    ahead: Ahead,
    table: SegmentTable,
    *,
    size: int,
    dataset: str,
    advance: Callable[[int], None],
    deep: bool,
) -> Segmented:
    """:func:`read_segments` over the parts of a :class:`Pipeline`'s artifact."""
    result = Segmented()
    run = ahead.run
    try:
        _merge_parts(result, run, ahead.parts(), table, dataset=dataset, advance=advance, deep=deep)
        if run.spool is not None:
            run.spool.flush()
            ahead.place_spool()
            if result.ok:
                result.spool = ahead.use.spool
        if run.whole is not None:
            result.whole_sha256 = run.whole.result(size)
    finally:
        ahead.close()
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
            if run.whole is not None:
                run.whole.close()  # a task waiting for a turn that will not come returns


class Ahead:
    """One artifact's segments under way on a :class:`Pipeline`: its file (opened by the
    pipeline), its :class:`_SegmentRun` and the futures of the segments submitted so far,
    in segment order. The caller takes it with :meth:`Pipeline.claim`."""

    def __init__(
        self,
        path: str,
        fh: BinaryIO,
        *,
        run: _SegmentRun,
        use: SegmentUse,
        spool: Path | None,
        permits: threading.Semaphore,
        slots: threading.Semaphore,
    ) -> None:
        self.path = path
        self.fh = fh
        self.run = run
        self.use = use  # what the caller asks for (its spool's path)
        self.spool = spool  # the pipeline's own spool file, renamed to ``use.spool``
        self._permits = permits
        self._slots = slots
        self._futures: list[Future[SegmentPart]] = []
        self._cond = threading.Condition()
        self._stopped = False  # no more segments will be submitted
        self._taken = 0  # parts the caller consumed (their permits given back)

    def submit(self, pool: ThreadPoolExecutor) -> bool:
        """Submit the next segment (its permit and buffer slot held); False once stopped."""
        with self._cond:
            if self._stopped:
                self._permits.release()
                self._slots.release()
                return False
            k = len(self._futures)
            self._futures.append(pool.submit(self.run.task, k))
            if len(self._futures) == len(self.run.places):
                self._stopped = True
            self._cond.notify_all()
            return True

    def stop(self) -> None:
        """No more segments (the pipeline failed or is closing)."""
        with self._cond:
            self._stopped = True
            self._cond.notify_all()

    def parts(self) -> Iterator[SegmentPart]:
        """The parts of every segment, in order, as they come in."""
        for k in range(len(self.run.places)):
            with self._cond:
                while len(self._futures) <= k and not self._stopped:
                    self._cond.wait()
                if len(self._futures) <= k:
                    raise OSError(f"the segments of {self.path} were not all read")
                future = self._futures[k]
            part = future.result()
            with self._cond:
                self._taken += 1
            self._permits.release()
            yield part

    def place_spool(self) -> None:
        """Move the pipeline's spool to the path the caller asked for."""
        if self.spool is not None and self.use.spool is not None:
            os.replace(self.spool, self.use.spool)
            self.spool = None

    def close(self) -> None:
        """Cancel what did not run, wait for what runs, give back the permits of the parts
        never consumed, close the file, the spool and the run."""
        self.stop()
        with self._cond:
            futures = list(self._futures)
        for future in futures:
            if future.cancel():  # never ran: never took (nor gave back) its buffers
                self._slots.release()
        if self.run.whole is not None:
            self.run.whole.close()  # a task waiting for a turn that will not come returns
        wait(futures)
        with self._cond:
            unconsumed = len(self._futures) - self._taken
            self._taken = len(self._futures)
        for _ in range(unconsumed):
            self._permits.release()
        self.run.close()
        self.fh.close()
        if self.spool is not None:
            self.spool.unlink(missing_ok=True)
            self.spool = None


Prepare = Callable[
    [int], "tuple[str, BinaryIO, AgeFile, SegmentTable, int, SegmentUse, Path | None] | None"
]
"""Open the ``n``-th artifact of a pipeline for its segments: its path, file, age header,
table, plaintext size, what the caller will ask for and the pipeline's spool path (None:
that artifact is not checked ahead, the caller reads it as before)."""


class Pipeline:
    """One pool of ``workers`` threads for the segments of every artifact of a verification
    (issue 18): a feeder thread opens the artifacts in the order the caller will check
    them (:data:`Prepare`) and submits their segments in file order, so that the next
    artifact's segments start while the caller merges and finishes the one before, and no
    core idles at an artifact's tail. At most ``2 x workers`` parts are submitted and not
    yet consumed (memory: a running task holds one segment's buffers, a finished part only
    digests and record pairs). The caller takes an artifact with :meth:`claim` (the
    artifacts before it that it did not take are dropped); what it does not claim it reads
    itself, as without a pipeline."""

    def __init__(
        self,
        count: int,
        prepare: Prepare,
        *,
        workers: int,
        buffers: BufferPool,
        deep: bool,
    ) -> None:
        self._count = count
        self._prepare = prepare
        self._deep = deep
        self._pool = ThreadPoolExecutor(max(1, workers), thread_name_prefix="affidavit-segment")
        # parts submitted and not yet merged (digests and record pairs: a few MB each)
        self._permits = threading.Semaphore(8 * max(1, workers))
        # segment buffers taken and not yet given back (a running task's, or a segment's
        # handed to its whole-file digest ahead of its turn): taken here, in segment order,
        # so the segment whose turn it is always has its own
        self._slots = threading.Semaphore(2 * max(1, workers))
        self._buffers = _SlottedBuffers(buffers, self._slots)
        self._lock = threading.Condition()
        self._ahead: dict[int, Ahead | None] = {}  # n -> its artifact (None: not ahead)
        self._closed = False
        self._floor = 0  # the caller has claimed this far
        self._feeder = threading.Thread(target=self._feed, name="affidavit-pipeline", daemon=True)

    def start(self) -> None:
        """Start the feeder. Apart from the constructor, so that the caller holds the
        pipeline (and closes it) even when a Ctrl-C lands while the thread starts."""
        self._feeder.start()

    def _feed(self) -> None:
        try:
            # a pool shut down under it (closed, Ctrl-C, exit): what was not submitted is
            # read by the caller itself, as if not ahead
            with contextlib.suppress(RuntimeError):
                self._submit_all()
        finally:
            with self._lock:
                for n in range(self._count):
                    self._ahead.setdefault(n, None)
                self._lock.notify_all()

    def _submit_all(self) -> None:
        for n in range(self._count):
            if self._is_closed():
                break
            try:
                ahead = self._publish(n, self._open(n))
            except Exception:  # the caller reads it itself, and words what is wrong
                ahead = self._publish(n, None)
            if ahead is None:
                continue
            for _ in ahead.run.places:
                if not self._take(self._permits):
                    ahead.stop()
                    break
                if not self._take(self._slots):
                    self._permits.release()
                    ahead.stop()
                    break
                try:
                    submitted = ahead.submit(self._pool)
                except RuntimeError:  # the pool was shut down (the caller is gone)
                    self._permits.release()
                    self._slots.release()
                    ahead.stop()
                    raise
                if not submitted:
                    break

    def _take(self, semaphore: threading.Semaphore) -> bool:
        """Acquire ``semaphore`` unless the pipeline closes first (False)."""
        while not semaphore.acquire(timeout=0.1):
            if self._is_closed():
                return False
        return True

    def _is_closed(self) -> bool:
        with self._lock:
            return self._closed

    def _publish(self, n: int, ahead: Ahead | None) -> Ahead | None:
        """Make the ``n``-th artifact claimable (None: it is not ahead); it is dropped at
        once when the caller has gone past it or the pipeline is closing."""
        with self._lock:
            gone = self._closed or n < self._floor
            self._ahead[n] = None if gone else ahead
            self._lock.notify_all()
        if ahead is not None and gone:
            ahead.close()
            return None
        return ahead

    def _open(self, n: int) -> Ahead | None:
        prepared = self._prepare(n)
        if prepared is None:
            return None
        path, fh, age, table, plain_size, use, spool_path = prepared
        try:
            if table.tiling_issues(
                size=age.layout.file_size,
                plain_size=plain_size,
                payload_offset=age.layout.payload_offset,
            ):
                fh.close()
                return None
            spool = open_private_spool(spool_path) if spool_path is not None else None
            run = _SegmentRun(
                age,
                table,
                plain_size=plain_size,
                frame=use.frame and table.framing == "bson",
                spool=spool,
                buffers=self._buffers,
                deep=self._deep,
            )
        except BaseException:
            fh.close()
            raise
        if self._deep:
            run.whole = OrderedDigest(len(run.places))
            run.deposit = True  # at most 2 x workers parts under way: so many buffers
        return Ahead(
            path,
            fh,
            run=run,
            use=use,
            spool=spool_path,
            permits=self._permits,
            slots=self._slots,
        )

    def claim(self, n: int, use: SegmentUse, fd: int) -> Ahead | None:
        """The ``n``-th artifact's segments under way, when they were started for ``use``
        from the very file ``fd`` is open on (same device and inode); else None (and
        nothing of it is kept). Drops the artifacts before ``n`` left unclaimed."""
        while True:
            with self._lock:
                self._floor = max(self._floor, n)
                dropped = [a for m, a in self._ahead.items() if m < n and a is not None]
                for m in [m for m in self._ahead if m < n]:
                    self._ahead[m] = None
                ready = n in self._ahead or self._closed
                if ready:
                    ahead = self._ahead.get(n)
                    self._ahead[n] = None
            for other in dropped:  # their permits back: the feeder may wait for them
                other.close()
            if ready:
                break
            with self._lock:
                if n not in self._ahead and not self._closed:
                    self._lock.wait(0.05)
        if ahead is None:
            return None
        mine, theirs = os.fstat(fd), os.fstat(ahead.fh.fileno())
        same = (mine.st_dev, mine.st_ino) == (theirs.st_dev, theirs.st_ino)
        if not same or use.frame != ahead.use.frame or (use.spool is None) != (ahead.spool is None):
            ahead.close()
            return None
        ahead.use = use
        return ahead

    def close(self) -> None:
        """Stop the feeder, drop what was not claimed, stop the threads."""
        with self._lock:
            self._closed = True
            left = [a for a in self._ahead.values() if a is not None]
            self._ahead = dict.fromkeys(self._ahead)
            self._lock.notify_all()
        for ahead in left:
            ahead.close()
        # the feeder may wait for a permit: the closes above gave them back (and it stops
        # waiting once closed); one that was never started has nothing to join
        if self._feeder.is_alive():
            self._feeder.join()
        with self._lock:
            left = [a for a in self._ahead.values() if a is not None]
            self._ahead = {}
        for ahead in left:
            ahead.close()
        self._pool.shutdown(wait=True, cancel_futures=True)


class BufferPool:
    """Segment memory (:class:`~affidavit.crypto.age_reader.SegmentBuffers`) shared by the
    worker threads of one verification, artifact after artifact: a task takes a set, and
    gives it back when its segment is done (its whole-file digest fed). At most one set per
    task running at once (``workers``); freed with the pool, when the verification ends."""

    def __init__(self) -> None:
        self._free: list[SegmentBuffers] = []
        self._lock = threading.Lock()

    def take(self) -> SegmentBuffers:
        """A free set (a new, empty one when none is free)."""
        with self._lock:
            return self._free.pop() if self._free else SegmentBuffers()

    def give(self, buffers: SegmentBuffers) -> None:
        """Return a set taken with :meth:`take`."""
        with self._lock:
            self._free.append(buffers)

    def clear(self) -> None:
        """Drop the free sets (their memory goes back to the system)."""
        with self._lock:
            self._free.clear()


class _SlottedBuffers(BufferPool):
    """A :class:`BufferPool` whose every set given back frees a slot of the
    :class:`Pipeline` that took it."""

    def __init__(self, pool: BufferPool, slots: threading.Semaphore) -> None:
        super().__init__()
        self._pool, self._slots = pool, slots

    def take(self) -> SegmentBuffers:
        return self._pool.take()

    def give(self, buffers: SegmentBuffers) -> None:
        self._pool.give(buffers)
        self._slots.release()


class _IdleBufferPool:
    """A :class:`BufferPool` for a cluster worker process, whose threads run segment after
    segment of many verifications: reused while tasks come (a fresh 64 MiB plaintext buffer
    per segment cost a fast run ~35 % more CPU per segment: docs/performance.md), and given
    back to the system once no task has used it for :attr:`IDLE` seconds, so an idle worker
    keeps none."""

    IDLE = 30.0

    def __init__(self) -> None:
        self._pool = BufferPool()
        self._lock = threading.Lock()
        self._timer: threading.Timer | None = None

    def take(self) -> SegmentBuffers:
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
        return self._pool.take()

    def give(self, buffers: SegmentBuffers) -> None:
        self._pool.give(buffers)
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
            self._timer = threading.Timer(self.IDLE, self._pool.clear)
            self._timer.daemon = True
            self._timer.start()


_WORKER_BUFFERS = _IdleBufferPool()
"""The segment memory of :func:`check_segment` in this process (a cluster worker)."""


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
        buffers: BufferPool,
        deep: bool = True,
    ) -> None:
        self.age = age
        self.deep = deep
        self.buffers = buffers
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
        self.whole: OrderedDigest | None = None  # the whole file's digest, in order
        # a task hands its ciphertext to ``whole`` without waiting for its turn (the
        # digest gives its buffers back): only where the tasks under way are bounded
        # (:class:`Pipeline`), since each one waiting for its turn keeps its buffers
        self.deposit = False

    def task(self, k: int) -> SegmentPart:
        """Read, open, hash (and spool, frame) segment ``k``; on a worker thread."""
        buffers = self.buffers.take()
        release = None
        if self.deposit and self.whole is not None:
            release = Handover(self.buffers, buffers)
        try:
            part = segment_part(
                self.age.payload,
                self.places[k],
                self.table.segments[k],
                frame=self.frame,
                spool=self.spool,
                buffers=buffers,
                whole=(self.whole, k) if self.whole is not None else None,
                plain_digest=self.deep,
                release=release,
            )
        finally:
            if release is None or not release.handed:
                self.buffers.give(buffers)  # the segment is done with them (its digest fed)
        if part.frame_error is not None:
            part.frame_error = f"segment {k}: {part.frame_error}"
            return part
        return _sorted(part)  # the sort of the accumulator's run, here (numpy, no GIL)

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
                plain_digest=self.deep,
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
        try:
            if part.sorted is not None:
                self.acc.add_sorted(part.sorted)
            elif part.pairs:
                self.acc.add_pairs(part.pairs, None)
        except ValueError as exc:  # pairs from a worker that are not what they claim
            result.frame_errors.append(f"segment {k}: {exc}")
            return
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


def _judge(result: Segmented, k: int, row: Segment, part: SegmentPart, *, deep: bool) -> None:
    """Compare one segment with its row of the table (``deep``: its plaintext digest too;
    a fast run computed none)."""
    problem: dict[str, Any] = {"segment": k, "offset": row.offset, "size": row.size}
    if part.cipher_sha256 != row.sha256:
        problem.update(expected=row.sha256, actual=part.cipher_sha256)
    if part.error is not None:
        problem["undecryptable"] = part.error
    elif deep and part.plain_sha256 != row.plain_sha256 and part.cipher_sha256 == row.sha256:
        problem.update(expected_plain=row.plain_sha256, actual_plain=part.plain_sha256)
    if len(problem) > 3:
        result.problems.append(problem)


def _pwrite_all(fd: int, data: bytearray | memoryview, offset: int) -> None:
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view, offset = view[written:], offset + written


def frame_pairs(view: memoryview) -> tuple[bytes, int]:
    """The exact record pairs of the whole documents at the start of ``view`` and where they
    end (:func:`~affidavit.formats.bson_codec.frame_exact_view`, no copy)."""
    return frame_exact_view(view, _TAG)


def _frame(
    payload: AgePayload,
    row: Segment,
    plain: bytearray | memoryview,
    fetch: Callable[[int, int], None] | None = None,
) -> tuple[bytes, int]:
    """The record pairs of the documents that start in this segment, and where the last of
    them ends (the next document's start). A document cut by the segment's end is completed
    from the next chunks, each authenticated. Raises ``FormatError`` for a framing defect,
    :class:`AgeDecryptError` when a chunk after the segment does not open."""
    assert row.first_record is not None
    begin = row.first_record - row.plain_offset
    view = memoryview(plain)[begin:]
    pairs, stop = frame_pairs(view)
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
    more, done = frame_pairs(memoryview(doc)[:length])
    if done != length:
        raise FormatError(f"malformed document at byte offset {pos}")
    return pairs + more, pos + length
