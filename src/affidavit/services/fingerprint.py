"""Fingerprinting use cases: a registered source's datasets or a backup file, and diffs.

The codec that turns a raw record into canonical ``(key, value)`` bytes is picked here by the
reader's record encoding and the profile; hashing and bucketing happen in
:mod:`affidavit.fingerprint`. With ``workers > 1`` the records are cut into batches that a
process pool canonicalises and hashes; the per-worker results merge into one accumulator
(the fingerprint does not depend on the split).
"""

from __future__ import annotations

import contextlib
import importlib
import os
import signal
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from affidavit.crypto.record_digest import RecordHasher
from affidavit.errors import FormatError, InputError, NotFound, OperationError
from affidavit.fingerprint.accumulator import Accumulator, hash_records
from affidavit.fingerprint.diff import DiffResult, diff_indexes
from affidavit.fingerprint.index import IndexReader
from affidavit.fingerprint.model import PAIR_SIZE, Fingerprint, record_tag
from affidavit.formats.base import RecordReader, check_input_path
from affidavit.models.progress import Reporter, SilentReporter
from affidavit.models.records import PROFILES, Profile, RecordEncoding
from affidavit.private_temp import open_private, private_folder
from affidavit.services.backends import engine_for, reader_class, reader_classes
from affidavit.services.context import App

Codec = Callable[[Any], tuple[bytes, bytes]]

_CODECS: dict[tuple[RecordEncoding, Profile], tuple[str, str]] = {
    # readers only frame BSON documents (see open_reader); the codec checks each in full
    (RecordEncoding.BSON, "exact"): ("affidavit.formats.bson_codec", "exact_record_checked"),
    (RecordEncoding.BSON, "logical"): ("affidavit.formats.bson_codec", "logical_record_from_bson"),
    (RecordEncoding.EXTJSON, "logical"): (
        "affidavit.formats.bson_codec",
        "logical_record_from_extjson",
    ),
    (RecordEncoding.REDIS, "exact"): ("affidavit.formats.redis_codec", "encode_redis_record"),
    (RecordEncoding.REDIS, "logical"): ("affidavit.formats.redis_codec", "encode_redis_record"),
}
_BATCH_RECORDS = 2048
_BATCH_BYTES = 4 << 20


def codec_for(encoding: RecordEncoding, profile: Profile) -> Codec:
    """The canonicaliser of ``encoding`` records under ``profile``."""
    if profile not in PROFILES:
        raise InputError(f"unknown profile {profile!r}", hint="use exact or logical")
    spec = _CODECS.get((encoding, profile))
    if spec is None:
        raise InputError(
            f"the {profile} profile is not defined for {encoding} records",
            hint="Extended JSON carries no raw BSON: use --profile logical",
        )
    fn: Codec = getattr(importlib.import_module(spec[0]), spec[1])
    return fn


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
    (re-read with the reader to word it as the reader does)."""
    from affidavit.formats.bson_codec.file_ranges import bson_file_ranges

    jobs = (
        (_hash_file_range, (str(path), offset, length, check))
        for offset, length in bson_file_ranges(path)
    )
    _hash_all(acc, jobs, workers=workers, rep=rep or SilentReporter())


def _hash_file_range(
    path: str, offset: int, length: int, check: bool
) -> tuple[bytes, list[bytes] | None]:
    """Worker: the exact-profile pairs and keys of the whole documents in ``length`` bytes at
    ``offset`` of a ``.bson`` file, framed and (with ``check``) decoded in full."""
    from affidavit.formats.bson_codec import check_documents, frame_exact_pairs

    with open(path, "rb") as fh:
        buffer = os.pread(fh.fileno(), length, offset)
    pairs, keys, stop = frame_exact_pairs(buffer, record_tag("exact"), keys=True)
    if len(buffer) != length or stop != length:
        raise FormatError(f"{path}: the documents at byte offset {offset} changed or do not frame")
    if check:
        check_documents(buffer, None)
    return pairs, keys


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


def fingerprint_rdb(
    reader: Any, names: list[str] | None, *, profile: Profile = "exact"
) -> dict[str, Accumulator]:
    """The fingerprints of ``names`` (``db0``...; None: every dataset the file holds) in ONE
    pass over the RDB (structure and CRC-64 checked to the end). Redis records have one
    canonical form, so ``profile`` only tags the record hashes.
    ``RdbReader.iter_pairs`` parses, encodes and hashes the records (through the compiled
    fast path when it is built: ~1 µs per key, against ~5 µs in pure Python) and hands over
    batches of one database's ``key_hash || record_hash`` pairs, which go to that
    database's accumulator as they are; records of datasets not asked for are dropped."""
    from affidavit.formats.redis_codec import encode_redis_record

    accumulators: dict[int, Accumulator] = {}
    if names is not None:
        accumulators = {int(name.removeprefix("db")): Accumulator(profile) for name in names}
    by_label: dict[str, Accumulator | None] = {}  # per label, not per batch
    hasher = RecordHasher(record_tag(profile))
    for dataset, pairs, keys in reader.iter_pairs(hasher, encode_redis_record):
        if dataset in by_label:
            acc = by_label[dataset]
        else:
            db = int(dataset.removeprefix("db"))
            acc = accumulators.get(db)
            if acc is None and names is None:
                acc = accumulators[db] = Accumulator(profile)
            by_label[dataset] = acc
        if acc is not None:
            acc.add_pairs(pairs, keys)
    out = {f"db{db}": acc for db, acc in sorted(accumulators.items())}
    if names is None:  # datasets() now answers from the pass just made
        for name in reader.datasets():
            out.setdefault(name, Accumulator(profile))
    return out


SNAPSHOT_FROM_KEYS = 100_000
"""A live Redis server with at least this many keys (in the datasets asked for) is read as one
RDB snapshot (:func:`redis_snapshot_fingerprints`); a smaller one key by key, which is then
faster than the server's diskless-sync delay (5 s by default)."""


def prefers_snapshot(engine: Any, names: list[str]) -> bool:
    """Whether to read ``names`` of a live server as one RDB snapshot: a Redis server with at
    least :data:`SNAPSHOT_FROM_KEYS` keys in them. Raises ``NotFound`` for an unknown one."""
    if engine.record_encoding is not RecordEncoding.REDIS:
        return False
    keys: int = sum(engine.count_records(name) for name in names)
    return keys >= SNAPSHOT_FROM_KEYS


def spool_redis_snapshot(engine: Any, spool: Path) -> Any:
    """Write one point-in-time RDB of a live Redis server to ``spool``, taken over the
    replication protocol as ``backup run`` takes one, and return an ``RdbReader`` of it that
    reads as of the moment it was asked for (keys expired by then are not there, as a read
    would not see them). None when the server refuses ``SYNC``; connection and ``AUTH``
    errors raise as reads would."""
    from affidavit.errors import SyncRefused
    from affidavit.formats.rdb import RdbReader

    as_of = int(time.time() * 1000)
    transfer = engine.request_rdb()
    try:
        with open_private(spool) as out:  # the keyspace in the clear: 0600
            for chunk in transfer.payload():
                out.write(chunk)
    except SyncRefused:
        return None
    finally:
        transfer.close()
    return RdbReader(spool, as_of_ms=as_of)


def redis_snapshot_fingerprints(
    engine: Any,
    names: list[str],
    *,
    profile: Profile,
    index_for: Callable[[str], Path | None],
    rep: Reporter,
) -> list[DatasetFingerprint] | None:
    """The fingerprints of a live Redis server's ``names`` from ONE point-in-time RDB of it,
    taken over the replication protocol exactly as ``backup run`` takes one
    (:meth:`~affidavit.engines.redis.RedisEngine.request_rdb`), spooled to a private file and
    read as of the moment it was asked for: about a second per million keys plus the
    server's diskless-sync delay, against about a minute for SCAN and typed reads, and exact
    absolute expiries. None when the server refuses ``SYNC`` (a user without the permission,
    a managed service that disables it): the caller reads key by key then. Every other
    failure raises as a read would."""
    rep.stage("reading the server's keyspace as one RDB snapshot (SYNC)")
    with private_folder("live-rdb") as tmp:  # swept by a later command if this one is killed
        reader = spool_redis_snapshot(engine, tmp / "live.rdb")
        if reader is None:
            return None
        accumulators = fingerprint_rdb(reader, names, profile=profile)
    results = []
    for name in names:
        acc = accumulators[name]
        index = index_for(name)
        try:
            fingerprint, duplicates = acc.finish(
                index, dataset=name, encoding=RecordEncoding.REDIS.value
            )
        finally:
            acc.close()
        results.append(
            DatasetFingerprint(
                name=name, fingerprint=fingerprint, duplicates=duplicates, index=index
            )
        )
    return results


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
    results = []
    for name in names:
        rep.task(f"fingerprinting {name} ({profile})", reader.size_hint(name))
        batches = getattr(reader, "record_batches", None)
        results.append(
            fingerprint_records(
                reader.records(name),
                framed=batches(name) if batches is not None else None,
                encoding=reader.encoding,
                profile=profile,
                workers=resolve_workers(workers),
                reporter=rep,
                index=_index_path(out, name, len(names) > 1),
                dataset=name,
                check_bson=check_bson,
            )
        )
        rep.finish()
    return results


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
    if getattr(reader, "validate", None) == "full":
        reader.validate = "framing"  # type: ignore[attr-defined]
    if getattr(reader, "validate_documents", None) is True:
        reader.validate_documents = False  # type: ignore[attr-defined]
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
    with engine_for(source, timeout=app.settings.connect_timeout) as engine:
        names = [wanted] if wanted else engine.list_datasets()
        if prefers_snapshot(engine, names):  # NotFound before anything else
            snapshot = redis_snapshot_fingerprints(
                engine, names, profile=profile, rep=rep,
                index_for=lambda name: _index_path(out, name, len(names) > 1),
            )  # fmt: skip
            if snapshot is not None:
                return snapshot
            rep.stage("the server refuses SYNC: reading it key by key")
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


def diff_report(left: Path, right: Path, *, limit: int | None) -> dict[str, Any]:
    """:func:`diff` as a JSON-ready report with keys decoded for people."""
    from affidavit.formats.keys import describe_key

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
                "key": describe_key(
                    header.encoding,
                    header.fingerprint.profile,
                    d.key,
                    truncated=d.key_truncated,
                ),
                "key_hash": d.key_hash.hex(),
                "side": d.side or None,
            }
            for d in result.differences
        ],
    }
