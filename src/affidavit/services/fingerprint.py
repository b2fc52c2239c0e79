"""Fingerprinting use cases: a registered source's datasets or a backup file, and diffs.

The codec that turns a raw record into canonical ``(key, value)`` bytes comes from the codec
registry (:mod:`affidavit.formats.codecs`) by the reader's record encoding and the profile;
hashing and bucketing happen in
:mod:`affidavit.fingerprint`. With ``workers > 1`` the records are cut into batches that a
process pool canonicalises and hashes; the per-worker results merge into one accumulator
(the fingerprint does not depend on the split).
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections import deque
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from affidavit.crypto.record_digest import RecordHasher
from affidavit.engines.base import Engine
from affidavit.errors import FormatError, InputError, NotFound, OperationError, SyncRefused
from affidavit.fingerprint.accumulator import (
    Accumulator,
    hash_records,
)
from affidavit.fingerprint.diff import DiffResult, KeyDifference, diff_indexes
from affidavit.fingerprint.index import IndexHeader, IndexReader
from affidavit.fingerprint.model import PAIR_SIZE, Fingerprint, record_tag
from affidavit.formats.base import RecordReader, check_input_path
from affidavit.formats.codecs import Codec, codec_for
from affidavit.models.progress import Reporter, SilentReporter
from affidavit.models.records import Profile, RecordEncoding
from affidavit.private_temp import open_private, private_folder
from affidavit.services.backends import engine_for, reader_class, reader_classes

if TYPE_CHECKING:  # a file's fingerprint needs no catalog (tests/unit/test_startup_imports.py)
    from concurrent.futures import ProcessPoolExecutor

    from affidavit.services.context import App

_BATCH_RECORDS = 2048
_BATCH_BYTES = 4 << 20


def _hash_batch(
    encoding: RecordEncoding, profile: Profile, batch: list[Any]
) -> tuple[bytes, list[bytes]]:
    """Worker: canonicalise and hash one batch (module-level so that it pickles)."""
    codec = codec_for(encoding, profile)
    return hash_records(profile, (codec(raw) for raw in batch))


def _hash_framed(
    encoding: RecordEncoding, profile: Profile, buffer: bytes, starts: list[int], check: bool
) -> tuple[bytes, list[bytes] | None]:
    """Worker: the same as :func:`_hash_batch` for a framed batch of BSON documents. Without
    ``check`` the exact profile skips the full BSON decode of each document (its bytes are
    hashed as they are; the framing and the ``_id`` element are still checked)."""
    if encoding is RecordEncoding.BSON and profile == "exact":
        return hash_exact_batch(buffer, starts, check=check)
    ends = [*starts[1:], len(buffer)]
    docs = [buffer[a:b] for a, b in zip(starts, ends, strict=True)]
    return _hash_batch(encoding, profile, docs)


def hash_exact_batch(
    buffer: bytes, starts: list[int], *, check: bool, keys: bool = True
) -> tuple[bytes, list[bytes] | None]:
    """The exact-profile pairs (and keys, unless ``keys`` is false) of a framed batch of BSON
    documents, hashed where they lie in ``buffer``; with ``check`` every document is decoded
    in full first. Raises the ``FormatError`` that :func:`exact_record_checked` (with
    ``check``) or :func:`exact_record` raises for the first bad document, in order."""
    from affidavit.formats.bson_codec import (
        check_documents,
        exact_keys,
        exact_pairs_framed,
        exact_record,
        exact_record_checked,
    )

    tag = record_tag("exact")
    try:
        if check:
            check_documents(buffer, starts)
        fast = exact_pairs_framed(buffer, starts, tag)  # the compiled path, when it takes all
        if fast is not None:
            return fast[0], fast[1] if keys else None
        found = exact_keys(buffer, starts)
    except FormatError:  # which document fails first, and how: the per-document path says
        codec = exact_record_checked if check else exact_record
        ends = [*starts[1:], len(buffer)]
        for a, b in zip(starts, ends, strict=True):
            codec(buffer[a:b])
        raise
    pairs = RecordHasher(tag).pairs_framed(buffer, starts, found)
    return pairs, found if keys else None


@dataclass(frozen=True, slots=True, kw_only=True)
class DatasetFingerprint:
    """One dataset's result."""

    name: str
    fingerprint: Fingerprint
    duplicates: int
    index: Path | None


def _batches(records: Iterable[Any]) -> Iterator[list[Any]]:
    batch: list[Any] = []
    size = 0
    for raw in records:
        batch.append(raw)
        size += len(raw) if isinstance(raw, bytes) else 64
        if len(batch) >= _BATCH_RECORDS or size >= _BATCH_BYTES:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


def fingerprint_records(
    records: Iterable[Any],
    *,
    framed: Iterable[tuple[bytes, list[int]]] | None = None,
    encoding: RecordEncoding,
    profile: Profile,
    workers: int = 1,
    reporter: Reporter | None = None,
    index: Path | None = None,
    dataset: str = "",
    check_bson: bool = True,
) -> DatasetFingerprint:
    """Fingerprint a stream of raw records (or ``framed`` batches of BSON documents; with
    ``check_bson`` false those are hashed without a full decode of each document)."""
    rep = reporter or SilentReporter()
    codec = codec_for(encoding, profile)  # fail early on an undefined combination
    acc = Accumulator(profile, keep_keys=index is not None)  # keys serve the index only
    try:
        if framed is not None:
            add_framed(
                acc,
                framed,
                encoding=encoding,
                profile=profile,
                workers=workers,
                rep=rep,
                check=check_bson,
            )
        elif workers <= 1:
            for batch in _batches(records):
                acc.add_records(codec(raw) for raw in batch)
                rep.advance(len(batch))
        else:
            _parallel(
                acc, records=records, encoding=encoding, profile=profile, workers=workers, rep=rep
            )
        fingerprint, duplicates = acc.finish(index, dataset=dataset, encoding=encoding.value)
    finally:
        acc.close()
    return DatasetFingerprint(
        name=dataset, fingerprint=fingerprint, duplicates=duplicates, index=index
    )


_STREAM_BATCH = 4 << 20


def fingerprint_bson_stream(stream: BinaryIO, *, dataset: str) -> Fingerprint:
    """The exact fingerprint of a stream of concatenated BSON documents (a mongodump
    ``.bson``), every document framed and keyed but not decoded in full, and no keys kept (no
    index): the pass of a verification whose plaintext hash proves the rest
    (docs/verification.md). Framing, key and hash happen in one pass per batch
    (:func:`~affidavit.formats.bson_codec.frame_exact_pairs`: compiled when built), with one
    copy of the bytes. Raises ``FormatError`` at the first defect, tersely worded: re-read
    with the reader to word it as the reader does."""
    from affidavit.formats.bson_codec import frame_exact_pairs

    acc = Accumulator("exact", keep_keys=False)
    tag = record_tag("exact")
    carry = b""
    try:
        while more := stream.read(_STREAM_BATCH):
            data = carry + more if carry else more
            pairs, _, stop = frame_exact_pairs(data, tag, keys=False)
            if pairs:
                acc.add_pairs(pairs, None)
            carry = data[stop:]
        if carry:
            raise FormatError(f"{dataset}: the stream ends inside a document")
        fingerprint, _ = acc.finish(None, dataset=dataset, encoding=RecordEncoding.BSON.value)
    finally:
        acc.close()
    return fingerprint


def _ignore_interrupts() -> None:
    """Worker initialiser: Ctrl-C is the parent's to handle (it cancels and ends the pool)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


@contextlib.contextmanager
def _worker_pool(workers: int) -> Iterator[ProcessPoolExecutor]:
    """A process pool whose workers are always ended with it: on any error (a malformed
    record, Ctrl-C) the queued batches are cancelled and the workers waited for, and a worker
    that died turns into an ``OperationError`` (exit 3: the run says nothing about the data)."""
    from concurrent.futures import ProcessPoolExecutor  # (multiprocessing: only when used)
    from concurrent.futures.process import BrokenProcessPool

    pool = ProcessPoolExecutor(max_workers=workers, initializer=_ignore_interrupts)
    try:
        yield pool
    except BrokenProcessPool as exc:
        pool.shutdown(wait=True, cancel_futures=True)
        raise OperationError(
            "a fingerprint worker process ended unexpectedly",
            hint="run again; if it keeps failing, check memory limits (dmesg) or use --workers 1",
        ) from exc
    except BaseException:
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown(wait=True)


def _parallel(
    acc: Accumulator,
    *,
    records: Iterable[Any],
    encoding: RecordEncoding,
    profile: Profile,
    workers: int,
    rep: Reporter,
) -> None:
    pending: list[tuple[Future[tuple[bytes, list[bytes]]], int]] = []
    with _worker_pool(workers) as pool:
        for batch in _batches(records):
            pending.append((pool.submit(_hash_batch, encoding, profile, batch), len(batch)))
            while len(pending) > workers * 4:  # bounded in flight: bounded memory
                future, n = pending.pop(0)
                acc.add_pairs(*future.result())
                rep.advance(n)
        for future, n in pending:
            acc.add_pairs(*future.result())
            rep.advance(n)


def add_framed(
    acc: Accumulator,
    batches: Iterable[tuple[bytes, list[int]]],
    *,
    encoding: RecordEncoding,
    profile: Profile,
    workers: int,
    rep: Reporter | None = None,
    check: bool,
) -> None:
    """Add framed batches of BSON documents to ``acc``, canonicalised and hashed by
    ``workers`` processes (:func:`_hash_all`); a batch crosses to a pool process as one buffer,
    not one object per document. ``check`` decodes every document in full. The first bad
    document in stream order raises its ``FormatError``."""
    jobs = (
        (_hash_framed, (encoding, profile, buffer, starts, check)) for buffer, starts in batches
    )
    _hash_all(acc, jobs, workers=workers, rep=rep or SilentReporter())


def add_bson_file(
    acc: Accumulator, path: Path, *, workers: int, check: bool, rep: Reporter | None = None
) -> None:
    """Add every document of an uncompressed mongodump ``.bson`` file to ``acc`` (exact
    profile), as :func:`add_framed` does, except that the processes read their ranges of the
    file themselves: this process only walks the documents' length prefixes
    (:func:`~affidavit.formats.bson_codec.file_ranges.bson_file_ranges`), and no document
    crosses a pipe.
    ``check`` decodes every document in full. A defect raises ``FormatError``, tersely worded
    (re-read with the reader to word it as the reader does).

    Without ``check`` and without keys (no index asked for), ``workers`` threads of this
    process split the file by bytes instead, with no walk first
    (:func:`~affidavit.services.fingerprint_threads.hash_file_threaded`; one worker: this
    thread alone, the same steps): the compiled framing and hashing release the GIL when
    they keep no keys, so nothing needs to cross to another process."""
    from affidavit.formats.bson_codec.file_ranges import bson_file_ranges

    keys = acc.keep_keys
    if not check and not keys and bson_codec_compiled():
        from affidavit.services.fingerprint_threads import hash_file_threaded

        hash_file_threaded(acc, path, workers=workers, rep=rep)
        return
    jobs = (
        (_hash_file_range, (str(path), offset, length, check, keys))
        for offset, length in bson_file_ranges(path)
    )
    _hash_all(acc, jobs, workers=workers, rep=rep or SilentReporter())


def bson_codec_compiled() -> bool:
    """Whether the compiled BSON framing is loaded (it releases the GIL; the pure-Python
    path does not, so it keeps to processes)."""
    from affidavit.formats import bson_codec

    return bson_codec._NATIVE is not None


def _hash_file_range(
    path: str, offset: int, length: int, check: bool, keys: bool = True
) -> tuple[bytes, list[bytes] | None]:
    """Worker: the exact-profile pairs and (with ``keys``) keys of the whole documents in
    ``length`` bytes at ``offset`` of a ``.bson`` file, framed and (with ``check``) decoded in
    full."""
    from affidavit.formats.bson_codec import check_documents, frame_exact_pairs

    with open(path, "rb") as fh:
        buffer = os.pread(fh.fileno(), length, offset)
    pairs, found, stop = frame_exact_pairs(buffer, record_tag("exact"), keys=keys)
    if len(buffer) != length or stop != length:
        raise FormatError(f"{path}: the documents at byte offset {offset} changed or do not frame")
    if check:
        check_documents(buffer, None)
    return pairs, found


_Job = tuple[Callable[..., tuple[bytes, list[bytes] | None]], tuple[Any, ...]]


def _hash_all(acc: Accumulator, jobs: Iterable[_Job], *, workers: int, rep: Reporter) -> None:
    """Run hashing ``jobs`` (a function and its arguments, each giving pairs and keys) in
    ``workers`` processes: this one and ``workers - 1`` pool processes. This process runs a
    job itself whenever the pool is busy, so it does not wait idle and, on a machine whose
    other cores are taken, the work is not all paid for twice in copies. Results go to ``acc``
    as they come (the fingerprint does not depend on the order); the first defect in job
    order raises its ``FormatError``."""

    def add(result: tuple[bytes, list[bytes] | None]) -> None:
        acc.add_pairs(*result)
        rep.advance(len(result[0]) // PAIR_SIZE)

    if workers <= 1:
        for fn, args in jobs:
            add(fn(*args))
        return
    helpers = workers - 1
    pending: deque[Future[tuple[bytes, list[bytes] | None]]] = deque()
    with _worker_pool(helpers) as pool:
        for fn, args in jobs:
            while pending and pending[0].done():
                add(pending.popleft().result())
            if len(pending) < helpers * 2:  # bounded in flight: bounded memory
                pending.append(pool.submit(fn, *args))
                continue
            try:  # the pool is busy: run this job here
                result = fn(*args)
            except FormatError:
                while pending:  # a defect in an earlier job comes first
                    add(pending.popleft().result())
                raise
            add(result)
        while pending:
            add(pending.popleft().result())


def fingerprint_datasets(
    reader: RecordReader,
    names: Sequence[str] | None = None,
    *,
    profile: Profile = "exact",
    workers: int = 1,
    check: bool = True,
    keep_keys: bool = True,
    reporter: Reporter | None = None,
    observe: Callable[[str, Any], None] | None = None,
) -> dict[str, Accumulator]:
    """THE fingerprint pass over a reader: every dataset's accumulator (of ``names``; None:
    every dataset the input holds, in the reader's order), for backup, ingest, verify, drills
    and ``affidavit fingerprint`` alike, in the fewest passes the reader allows (what it
    declares, see :class:`~affidavit.formats.base.RecordReader`):

    - a reader with a fused pass (an RDB): one pass that parses, encodes and hashes
      (:func:`_fused`);
    - a reader whose datasets share one stream (an archive): one pass over
      :meth:`~RecordReader.iter_all`, each record through the codec;
    - otherwise dataset by dataset: an uncompressed BSON file is read in ranges by
      ``workers`` processes (:func:`add_bson_file`; exact profile), framed batches cross to
      the workers as one buffer each (:func:`add_framed`), other records go through the
      codec (in a process pool when ``workers > 1``).

    ``check``: every BSON document is decoded in full, by the codec (the reader is told to
    frame only, :meth:`~RecordReader.check_framing_only`; else framed and keyed only, exact
    profile). ``keep_keys``: the accumulators keep the keys an index file needs.
    ``observe(dataset, record)`` is shown every record of the datasets asked for as it passes
    (a drill's probes read back), in one pass over :meth:`~RecordReader.iter_all`. Raises
    ``FormatError`` at the first defect, worded as the reader words it. The caller finishes
    (and closes) each accumulator."""
    rep = reporter or SilentReporter()
    codec = codec_for(reader.encoding, profile)  # fails early on an undefined combination
    if reader.fused_pairs and observe is None:
        return _fused(reader, names, profile, keep_keys=keep_keys)
    wanted = list(names) if names is not None else reader.datasets()
    accumulators = {name: Accumulator(profile, keep_keys=keep_keys) for name in wanted}
    if check:
        reader.check_framing_only()  # the codec checks every record in full
    if reader.one_pass or observe is not None:
        records = reader.iter_all()
        if observe is not None:
            records = _observed(records, observe, accumulators.keys())
        try:
            _add_all(accumulators, records, codec, rep)
        except FormatError:
            reader.find_defect(None)  # the defect, named by offset as the reader does
            raise
        return accumulators
    for name in wanted:
        _add_dataset(
            accumulators[name], reader, name, profile=profile, workers=workers, check=check,
            rep=rep,
        )  # fmt: skip
    return accumulators


def _observed(
    records: Iterator[tuple[str, Any]],
    observe: Callable[[str, Any], None],
    names: Collection[str],
) -> Iterator[tuple[str, Any]]:
    for name, record in records:
        if name in names:
            observe(name, record)
        yield name, record


def _add_all(
    accumulators: dict[str, Accumulator],
    records: Iterable[tuple[str, Any]],
    codec: Codec,
    rep: Reporter,
) -> None:
    """``(dataset, record)`` pairs of one pass, each through ``codec`` into its dataset's
    accumulator, in batches; records of datasets not asked for are skipped."""
    pending: dict[str, list[tuple[bytes, bytes]]] = {name: [] for name in accumulators}
    for name, record in records:
        batch = pending.get(name)
        if batch is None:
            continue
        batch.append(codec(record))
        if len(batch) >= _BATCH_RECORDS:
            accumulators[name].add_records(batch)
            rep.advance(len(batch))
            batch.clear()
    for name, batch in pending.items():
        accumulators[name].add_records(batch)
        rep.advance(len(batch))


def _add_dataset(
    acc: Accumulator,
    reader: RecordReader,
    name: str,
    *,
    profile: Profile,
    workers: int,
    check: bool,
    rep: Reporter,
) -> None:
    """One dataset of a reader whose datasets lie apart, by the fastest road it offers."""
    bson = reader.encoding is RecordEncoding.BSON
    file = reader.dataset_file(name) if bson and profile == "exact" else None
    batches = reader.record_batches(name) if bson and file is None else None
    try:
        if file is not None:
            add_bson_file(acc, file, workers=workers, check=check, rep=rep)
            return
        if batches is not None:
            add_framed(
                acc, batches, encoding=reader.encoding, profile=profile, workers=workers,
                rep=rep, check=check,
            )  # fmt: skip
            return
    except FormatError:
        if check:  # the defect, named by file and offset as the reader names it
            reader.find_defect(name)
        raise
    if workers <= 1:
        codec = codec_for(reader.encoding, profile)
        for batch in _batches(reader.records(name)):
            acc.add_records(codec(raw) for raw in batch)
            rep.advance(len(batch))
    else:
        _parallel(
            acc, records=reader.records(name), encoding=reader.encoding, profile=profile,
            workers=workers, rep=rep,
        )  # fmt: skip


def finished(
    accumulators: dict[str, Accumulator],
    *,
    index_for: Callable[[str], Path | None],
    encoding: RecordEncoding,
    threads: int = 1,
) -> list[DatasetFingerprint]:
    """Finish (and close) every accumulator of :func:`fingerprint_datasets`, each with its
    index file where ``index_for`` names one, in the accumulators' order (``threads``: how
    many threads fold one without an index)."""
    results = []
    for name, acc in accumulators.items():
        index = index_for(name)
        try:
            fingerprint, duplicates = acc.finish(
                index, dataset=name, encoding=encoding.value, threads=threads
            )
        finally:
            acc.close()
        results.append(
            DatasetFingerprint(
                name=name, fingerprint=fingerprint, duplicates=duplicates, index=index
            )
        )
    return results


def _fused(
    reader: RecordReader, names: Sequence[str] | None, profile: Profile, *, keep_keys: bool
) -> dict[str, Accumulator]:
    """The fingerprints of ``names`` (None: every dataset the input holds) in ONE fused pass
    (:meth:`~RecordReader.iter_pairs`: an RDB parsed, encoded and hashed, through the
    compiled path when it is built, structure and CRC-64 checked to the end). Redis records
    have one canonical form, so ``profile`` only tags the record hashes. Batches of one
    dataset's ``key_hash || record_hash`` pairs go to its accumulator as they are; records of
    datasets not asked for are dropped."""
    accumulators: dict[str, Accumulator] = {}
    if names is not None:
        accumulators = {name: Accumulator(profile, keep_keys=keep_keys) for name in names}
    hasher = RecordHasher(record_tag(profile))
    encode = codec_for(reader.encoding, profile)
    for dataset, pairs, keys in reader.iter_pairs(hasher, encode):
        acc = accumulators.get(dataset)
        if acc is None:
            if names is not None:
                continue
            acc = accumulators[dataset] = Accumulator(profile, keep_keys=keep_keys)
        acc.add_pairs(pairs, keys)
    if names is not None:
        return accumulators
    # every dataset the input holds (datasets() answers from the pass just made), in its order
    return {
        name: accumulators.get(name) or Accumulator(profile, keep_keys=keep_keys)
        for name in reader.datasets()
    }


SNAPSHOT_FROM_KEYS = 100_000
"""A live server that streams whole-server snapshots (Redis) with at least this many records in
the datasets asked for is read as one snapshot (:func:`snapshot_fingerprints`); a smaller one
record by record, which is then faster than the server's delay before a snapshot (Redis's
diskless-sync delay, 5 s by default)."""


def prefers_snapshot(engine: Engine, names: list[str]) -> bool:
    """Whether to read ``names`` of a live server as one whole-server snapshot: an engine
    that streams them, with at least :data:`SNAPSHOT_FROM_KEYS` records in ``names``. Raises
    ``NotFound`` for an unknown dataset."""
    if engine.snapshot_format is None:
        return False
    records: int = sum(engine.count_records(name) for name in names)
    return records >= SNAPSHOT_FROM_KEYS


def spool_snapshot(engine: Engine, spool: Path) -> RecordReader | None:
    """Write one point-in-time whole-server snapshot of a live server to ``spool`` (for Redis
    an RDB taken over the replication protocol, as ``backup run`` takes one) and return a
    reader of it that reads as of the moment it was asked for (records expired by then are
    not there, as a read would not see them). None when the server refuses to give one;
    connection and authentication errors raise as reads would."""
    assert engine.snapshot_format is not None
    as_of = int(time.time() * 1000)
    transfer = engine.request_snapshot()
    try:
        with open_private(spool) as out:  # the keyspace in the clear: 0600
            for chunk in transfer.payload():
                out.write(chunk)
    except SyncRefused:
        return None
    finally:
        transfer.close()
    return reader_class(engine.snapshot_format).as_of(spool, captured_at_ms=as_of)


def snapshot_fingerprints(
    engine: Engine,
    names: list[str],
    *,
    profile: Profile,
    index_for: Callable[[str], Path | None],
    rep: Reporter,
) -> list[DatasetFingerprint] | None:
    """The fingerprints of a live server's ``names`` from ONE whole-server snapshot of it,
    taken exactly as ``backup run`` takes one (:meth:`Engine.request_snapshot`), spooled to
    a private file and read as of the moment it was asked for: for Redis about a second per
    million keys plus the server's diskless-sync delay, against about a minute for SCAN and
    typed reads, and exact absolute expiries. None when the server refuses (a user without
    the permission, a managed service that disables SYNC): the caller reads record by record
    then. Every other failure raises as a read would."""
    rep.stage("reading the server's keyspace as one snapshot")
    with private_folder("live-snapshot") as tmp:  # swept by a later command if this one dies
        reader = spool_snapshot(engine, tmp / "live.snapshot")
        if reader is None:
            return None
        accumulators = fingerprint_datasets(reader, names, profile=profile)
    return finished(accumulators, index_for=index_for, encoding=engine.record_encoding)


def resolve_workers(workers: int) -> int:
    """``0`` means one per CPU core."""
    if workers < 0:
        raise InputError("--workers must be 0 (one per core) or more")
    return workers or (os.cpu_count() or 1)


def _index_path(out: Path | None, dataset: str, many: bool) -> Path | None:
    if out is None:
        return None
    if many:
        out.mkdir(parents=True, exist_ok=True)
        return out / f"{dataset.replace('/', '_')}.afpidx"
    return out


def fingerprint_path(
    path: Path,
    *,
    fmt: str | None,
    dataset: str | None,
    profile: Profile,
    out: Path | None,
    workers: int = 1,
    reporter: Reporter | None = None,
    check_bson: bool = True,
) -> list[DatasetFingerprint]:
    """Fingerprint a backup file or folder (format detected unless ``fmt`` is given).
    ``check_bson`` decodes every BSON document in full as well (exact profile; the logical
    profile always does)."""
    reader = open_reader(path, fmt)
    names = reader.datasets()
    if dataset is not None:
        if dataset not in names:
            raise NotFound(
                f"{path} has no dataset {dataset!r}",
                hint=f"it holds: {', '.join(names) or 'nothing'}",
            )
        names = [dataset]
    rep = reporter or SilentReporter()
    if reader.fused_pairs or reader.one_pass:
        rep.task(f"fingerprinting {path.name} ({profile})", None)
        accumulators = fingerprint_datasets(
            reader, names, profile=profile, workers=resolve_workers(workers), check=check_bson,
            keep_keys=out is not None, reporter=rep,
        )  # fmt: skip
        rep.finish()
    else:
        accumulators = {}
        for name in names:
            rep.task(f"fingerprinting {name} ({profile})", reader.size_hint(name))
            one = fingerprint_datasets(
                reader, [name], profile=profile, workers=resolve_workers(workers),
                check=check_bson, keep_keys=out is not None, reporter=rep,
            )  # fmt: skip
            accumulators.update(one)
            rep.finish()
    many = len(names) > 1
    return finished(
        accumulators,
        index_for=lambda name: _index_path(out, name, many),
        encoding=reader.encoding,
        threads=resolve_workers(workers),
    )


def open_reader(path: Path, fmt: str | None) -> RecordReader:
    """The reader for ``path``: named by ``fmt`` or detected."""
    check_input_path(path)  # a FIFO would block the sniffers for ever
    if fmt is not None:
        return _frame_only(reader_class(fmt)(path))
    for cls in reader_classes():
        if cls.sniff(path):
            return _frame_only(cls(path))
    names = ", ".join(c.name for c in reader_classes())
    raise InputError(f"cannot tell the format of {path}", hint=f"pass --format ({names})")


def _frame_only(reader: RecordReader) -> RecordReader:
    """BSON readers only frame documents here: the codecs check every document in full
    (exact: :func:`exact_record_checked`; logical: by construction), in the worker processes
    when there are several, so the check is not done twice nor on one core."""
    reader.check_framing_only()
    return reader


def fingerprint_source(
    app: App,
    ref: str,
    *,
    dataset: str | None,
    profile: Profile,
    out: Path | None,
    workers: int = 1,
    reporter: Reporter | None = None,
) -> list[DatasetFingerprint]:
    """Fingerprint the datasets of a registered source (``SOURCE`` or ``SOURCE/DATASET``)."""
    source_name, _, inline = ref.partition("/")
    if inline and dataset and inline != dataset:
        raise InputError(f"{ref!r} and --dataset {dataset!r} name different datasets")
    wanted = inline or dataset
    with app.read() as uow:
        source = uow.sources.get(source_name)
    rep = reporter or SilentReporter()
    results = []
    with engine_for(source, app.settings) as engine:
        names = [wanted] if wanted else engine.list_datasets()
        if prefers_snapshot(engine, names):  # NotFound before anything else
            snapshot = snapshot_fingerprints(
                engine, names, profile=profile, rep=rep,
                index_for=lambda name: _index_path(out, name, len(names) > 1),
            )  # fmt: skip
            if snapshot is not None:
                return snapshot
            rep.stage("the server refuses a snapshot: reading it record by record")
        for name in names:
            total = engine.estimate_records(name)  # sizes the progress bar only
            rep.task(f"fingerprinting {source.name}/{name} ({profile})", total)
            results.append(
                fingerprint_records(
                    engine.iter_records(name),
                    encoding=engine.record_encoding,
                    profile=profile,
                    workers=resolve_workers(workers),
                    reporter=rep,
                    index=_index_path(out, name, len(names) > 1),
                    dataset=name,
                )
            )
            rep.finish()
    return results


def fingerprint_target(
    app_opener: Callable[[], Any],
    target: str,
    *,
    dataset: str | None,
    profile: Profile,
    fmt: str | None,
    out: Path | None,
    workers: int,
    reporter: Reporter | None = None,
    check_bson: bool = True,
) -> list[DatasetFingerprint]:
    """A path when it exists (no catalog needed), else a registered ``SOURCE[/DATASET]``."""
    path = Path(target)
    if path.exists():
        return fingerprint_path(
            path,
            fmt=fmt,
            dataset=dataset,
            profile=profile,
            out=out,
            workers=workers,
            reporter=reporter,
            check_bson=check_bson,
        )
    if fmt is not None:
        raise NotFound(f"{target} does not exist", hint="--format applies to files")
    with app_opener() as app:
        return fingerprint_source(
            app, target, dataset=dataset, profile=profile, out=out, workers=workers,
            reporter=reporter,
        )  # fmt: skip


def diff(left: Path, right: Path, *, limit: int | None) -> tuple[DiffResult, IndexReader]:
    """Compare two index files (both checked against their trailers first)."""
    readers = []
    for path in (left, right):
        reader = IndexReader(path)
        reader.verify_trailer()
        readers.append(reader)
    return diff_indexes(readers[0], readers[1], limit=limit), readers[0]


def difference_key(header: IndexHeader, difference: KeyDifference) -> str:
    """The key of ``difference`` (between indexes with ``header``) as people read it."""
    from affidavit.formats.keys import describe_key

    return describe_key(
        header.encoding,
        header.fingerprint.profile,
        difference.key,
        truncated=difference.key_truncated,
    )


def diff_report(left: Path, right: Path, *, limit: int | None) -> dict[str, Any]:
    """:func:`diff` as a JSON-ready report with keys decoded for people."""
    result, reader = diff(left, right, limit=limit)
    header = reader.header
    return {
        "equal": result.equal,
        "left": {"path": str(left), "records": result.left_count},
        "right": {"path": str(right), "records": result.right_count},
        "profile": header.fingerprint.profile,
        "counts": {change.value: n for change, n in result.counts.items()},
        "differences": [
            {
                "change": d.change.value,
                "key": difference_key(header, d),
                "key_hash": d.key_hash.hex(),
                "side": d.side or None,
            }
            for d in result.differences
        ],
    }
