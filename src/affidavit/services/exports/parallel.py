"""The record path of an export on several processes (``export run --workers N``,
docs/exports.md "Performance").

The parent reads the input (:meth:`~.passes.RecordPass.raw_batches`: a backup's BSON file
decrypted as it streams out of the vault, :mod:`.streamed`; or the live cursor) as batches
of about :data:`BATCH_BYTES` of whole raw BSON documents. Worker processes, forked when
the pass starts (so the pseudonymisation key, the consents and the compiled contract are
inherited in memory: no key is written to disk or sent down a pipe), run the per-record
path on each batch: decode, the filter, minimise and transform, consent, the contract's
per-record checks (:meth:`~.records.ContractCheck.inspect`), the output line (a CSV row;
for Parquet the record itself, which the parent's row-group writer takes) and the record's
logical fingerprint pair. The parent takes the batches' results back in input order and
keeps all the state of the pass: the counts, the ``unique`` rule (the workers send the
digests), the null counts, the output buffer, the fingerprint accumulator (the workers send
the hashed pairs) and everything after the pass; so the output is byte for byte the serial
pass's.

At most ``2 * workers + 1`` batches are in flight, so memory does not depend on the
dataset's size. A worker that dies (killed, out of memory) breaks the pool: the pass raises
:class:`~affidavit.errors.OperationError` (exit 3) and the run fails as any run does (nothing
delivered, the partial output removed, ``export.failed`` recorded). So does a worker found
stopped (SIGSTOP, a debugger, a frozen cgroup) for :data:`STALL_SECONDS` while the parent
waits on it. Every pass kills its workers when it ends (they have nothing left to do), so a
stopped one cannot hold the pool's shutdown. The workers ignore SIGINT (the parent handles
Ctrl-C), ask the kernel to kill them when their parent dies (``PR_SET_PDEATHSIG``: a parent
killed with SIGKILL leaves no worker running with the key in memory) and write to standard
streams of their own (never the parent's buffers, inherited through the fork). When a
worker stops the pass on a record and the input is a backup, the parent reads the rest of
it first, so that a ciphertext that is not the signed one is reported as the serial pass
reports it (its digest).
"""

from __future__ import annotations

import contextlib
import ctypes
import io
import itertools
import multiprocessing
import os
import signal
import sys
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from affidavit.errors import Error, IntegrityError, OperationError
from affidavit.fingerprint.accumulator import hash_records
from affidavit.formats.bson_codec.extjson_fast import (
    canonical_value,
    decode_document,
    logical_record_of,
)
from affidavit.models.export import OutputFormat
from affidavit.models.export_filter import QueryFilter
from affidavit.services.exports.encodings import Encoder
from affidavit.services.exports.passes import RecordPass
from affidavit.services.exports.records import encode_line, key_text
from affidavit.services.exports.sources import LiveRead

BATCH_BYTES: Final = 1024 * 1024
"""The raw BSON bytes of one batch (a worker's unit of work)."""
MAX_WORKERS: Final = 64
STALL_SECONDS: float = 30.0
"""How long a worker may be seen stopped (state ``T``) while the parent waits on a result
before the run fails (the tests lower it)."""
_POLL: Final = 0.25
"""How often (seconds) the parent, waiting on a result, looks at its workers' states."""
_PR_SET_PDEATHSIG: Final = 1
_INHERITED: list[object] = []
"""A worker's inherited standard streams, kept referenced: collected, they would flush the
parent's pending output a second time."""


def default_workers() -> int:
    """The default number of worker processes: the cores this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


Failure = tuple[int, list[tuple[str, str]], dict[str, bytes], str]
"""A record that failed the contract's per-record checks in a worker: its index among the
batch's candidates, its problems, its ``unique`` digests and its key text."""


@dataclass(slots=True)
class BatchResult:
    """What a worker returns for one batch, in columns (few Python objects to send back).
    The *candidates* are the records that reached the contract, in input order; those that
    passed its per-record checks are the *passed* ones, numbered in order."""

    records_in: int = 0
    fields_dropped: int = 0
    excluded: dict[str, int] = field(default_factory=dict)
    seen: set[str] = field(default_factory=set)
    candidates: int = 0
    failures: list[Failure] = field(default_factory=list)
    data: bytes = b""  # the passed records' output, one after another
    ends: list[int] = field(default_factory=list)  # where each passed record's output ends
    documents: list[dict[str, Any]] = field(default_factory=list)  # Parquet: passed records
    pairs: bytes = b""  # the passed records' logical fingerprint pairs (64 bytes each)
    digests: dict[str, list[bytes | None]] = field(default_factory=dict)  # by passed record
    keys: list[str] = field(default_factory=list)  # by passed record (``unique`` rules only)
    nulls: dict[str, list[int]] = field(default_factory=dict)  # passed records, by field
    error: tuple[type[Error], str, str] | None = None  # (class, message, hint): stop the pass


@dataclass(slots=True)
class _Stage:
    """The per-record path a worker runs (inherited through the fork)."""

    records: RecordPass
    encoder: Encoder
    plain_keys: bool


_STAGES: dict[int, _Stage] = {}
"""The passes under way in this process, by token: a pass's stage is set in the parent just
before its workers are forked (so they inherit it), and removed when the pass ends."""
_TOKENS = itertools.count(1)


def _worker_start(parent: int) -> None:
    """A worker's settings, before its first batch (``parent``: the parent's pid, read
    before the fork)."""
    # the kernel kills this worker when the thread that forked it ends (the pass runs in
    # that thread to its end): a parent killed with SIGKILL leaves no worker behind
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:  # the parent died before the line above: stop now
        os._exit(1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    # fresh standard streams: the inherited objects hold what the parent had not flushed
    # yet, which multiprocessing would flush again at the worker's exit
    _INHERITED.extend((sys.stdout, sys.stderr))
    for name, fd in (("stdout", 1), ("stderr", 2)):
        with contextlib.suppress(OSError, ValueError):
            raw = io.FileIO(fd, "w", closefd=False)
            setattr(sys, name, io.TextIOWrapper(raw, encoding="utf-8", errors="replace"))


def _stopped(pool: ProcessPoolExecutor) -> list[int]:
    """The pool's workers the kernel reports stopped (state ``T`` in ``/proc/<pid>/stat``)."""
    out = []
    for pid in list((getattr(pool, "_processes", None) or {}).keys()):
        try:
            stat = Path(f"/proc/{pid}/stat").read_bytes()
        except OSError:
            continue
        state = stat[stat.rfind(b")") + 2 : stat.rfind(b")") + 3]
        if state in (b"T", b"t"):
            out.append(pid)
    return out


def _wait(pool: ProcessPoolExecutor, future: Future[BatchResult]) -> BatchResult:
    """``future``'s result; raises :class:`OperationError` if a worker is seen stopped for
    :data:`STALL_SECONDS` meanwhile (the timer restarts when this process was suspended)."""
    since: float | None = None
    last = time.monotonic()
    while True:
        try:
            return future.result(timeout=_POLL)
        except FutureTimeout:
            pass
        now = time.monotonic()
        if now - last > 2 * _POLL + 1.0:  # this process was suspended (Ctrl-Z): start again
            since = None
        last = now
        stopped = _stopped(pool)
        if not stopped:
            since = None
            continue
        if since is None:
            since = now
        elif now - since >= STALL_SECONDS:
            pids = ", ".join(str(pid) for pid in stopped)
            raise OperationError(
                f"an export worker process is stopped (pid {pids}, for "
                f"{STALL_SECONDS:g} s): nothing was delivered",
                hint="find what stopped it (a debugger, SIGSTOP, a frozen cgroup) and run "
                "the export again (--workers 1 runs it in one process)",
            )


def _kill_workers(pool: ProcessPoolExecutor) -> None:
    """Kill the pool's workers (SIGKILL ends a stopped one too) and wait for them."""
    processes = list((getattr(pool, "_processes", None) or {}).values())
    for process in processes:
        with contextlib.suppress(Exception):
            process.kill()
    for process in processes:
        with contextlib.suppress(Exception):
            process.join(10)
    # CPython internal (3.11): the parent holds the write end of the pool's result pipe
    # too; a worker killed half-way through sending a result leaves the pool's management
    # thread waiting for the rest, for ever, unless the last writer closes and it reads EOF
    queue = getattr(pool, "_result_queue", None)
    writer = getattr(queue, "_writer", None)
    if writer is not None:
        with contextlib.suppress(Exception):
            writer.close()


def _drain(blobs: Iterator[bytes]) -> None:
    """Read the rest of a backup's input (its digest is checked at the end): a ciphertext
    that is not the signed one raises its :class:`IntegrityError` (as the serial pass
    reports it); any other error of the stream leaves the worker's standing."""
    try:
        for _ in blobs:
            pass
    except IntegrityError:
        raise
    except Error:
        pass


def _run_batch(token: int, blob: bytes) -> BatchResult:
    """Run one batch of framed BSON documents (in a worker process)."""
    stage = _STAGES[token]
    try:
        return _process(stage, blob)
    except Error as exc:  # sent back by value: the parent raises it again
        return BatchResult(error=(type(exc), exc.message, exc.hint))


def _split(blob: bytes) -> Iterator[bytes]:
    view = memoryview(blob)
    at, end = 0, len(blob)
    while at < end:
        size = int.from_bytes(view[at : at + 4], "little")
        yield blob[at : at + size]
        at += size


def _matches(query: QueryFilter, document: dict[str, Any], live: LiveRead | None) -> bool:
    """Whether ``document`` passes the spec's filter (a live read's server applied it
    already: ours must agree, or the pass stops)."""
    if query.match({k: canonical_value(document[k]) for k in query.fields if k in document}):
        return True
    if live is not None:
        key = key_text({"_id": canonical_value(document.get("_id"))})
        raise IntegrityError(
            f"{live.live.uri} returned a record of {live.live.dataset} that the "
            f"filter does not match ({key[:100]})",
            hint="the server's query semantics differ from docs/exports.md "
            "(a collation?); nothing was exported",
        )
    return False


def _process(stage: _Stage, blob: bytes) -> BatchResult:
    records = stage.records
    plan, minimiser, contract = records.plan, records.minimiser, records.contract
    consents, at = plan.consents, records.at
    consent = plan.spec.consent
    subject_field = consent.subject_field if consent is not None else "_id"
    query, live = plan.spec.input.filter, records.live
    fmt, encode, plain_keys = stage.encoder.format, stage.encoder.encode, stage.plain_keys
    unique = contract.digest_names  # the ``unique`` fields and the counted duplicate rules
    minimiser.seen.clear()
    result = BatchResult()
    excluded, failures, ends, documents = (
        result.excluded,
        result.failures,
        result.ends,
        result.documents,
    )
    data = bytearray()
    columns = {name: result.digests.setdefault(name, []) for name in unique}
    logical: list[tuple[bytes, bytes]] = []
    candidates = dropped_total = n = 0
    for raw in _split(blob):
        n += 1
        document = decode_document(raw)
        if query is not None and not _matches(query, document, live):
            excluded["filter"] = excluded.get("filter", 0) + 1
            continue
        out, dropped, refusals = minimiser.apply_decoded(document)
        dropped_total += dropped
        if consents is not None:
            refused = consents.judge_record(document, subject_field, at)
            if refused is not None:
                excluded[refused] = excluded.get(refused, 0) + 1
                continue
        problems, digests = contract.inspect(out, refusals)
        candidates += 1
        if problems:
            failures.append((candidates - 1, problems, digests, key_text(out)))
            continue
        passed = len(logical)
        if unique:
            for name, column in columns.items():
                column.append(digests.get(name))
            result.keys.append(key_text(out))
        for name in contract.null_fields(out):
            result.nulls.setdefault(name, []).append(passed)
        if fmt is OutputFormat.PARQUET:
            documents.append(out)
        else:
            data += encode_line(out) if fmt is OutputFormat.EXTJSON else encode(out)
            ends.append(len(data))
        logical.append(logical_record_of(out, plain_keys=plain_keys))
    if logical:
        result.pairs, _ = hash_records("logical", logical)
    result.records_in, result.fields_dropped, result.candidates = n, dropped_total, candidates
    result.data = bytes(data)
    result.seen = set(minimiser.seen)
    return result


def _settle(result: BatchResult, records: RecordPass, encoder: Encoder) -> tuple[bytes, bytes]:
    """Take one batch's result into the pass's state, in input order: the counts, the
    contract's whole-pass rules (``unique`` against every record before, the nulls), the
    records that ship; their output and logical pairs."""
    tally, contract, minimiser = records.tally, records.contract, records.minimiser
    excluded = tally.excluded
    tally.records_in += result.records_in
    tally.fields_dropped += result.fields_dropped
    for reason, count in result.excluded.items():
        excluded[reason] = excluded.get(reason, 0) + count
    minimiser.seen |= result.seen
    failures = {f[0]: f for f in result.failures}
    kept: list[int] | None = None  # the passed records that ship (None: all of them)
    if not result.digests:  # no rule across records: only the workers' failures fail
        for _, problems, digests, key in result.failures:
            contract.settle(problems, digests, key)
        for _ in range(result.candidates - len(failures)):
            contract.settle([], {}, "")
    else:
        kept = []
        passed = 0
        columns = list(result.digests.items())
        for index in range(result.candidates):
            failure = failures.get(index)
            if failure is not None:
                contract.settle(failure[1], failure[2], failure[3])
                continue
            digests = {}
            for name, column in columns:
                digest = column[passed]
                if digest is not None:
                    digests[name] = digest
            if contract.settle([], digests, result.keys[passed]):
                kept.append(passed)
            passed += 1
    shipped = len(result.ends) + len(result.documents) if kept is None else len(kept)
    excluded_now = result.candidates - shipped
    if excluded_now:
        excluded["contract"] = excluded.get("contract", 0) + excluded_now
    tally.records_out += shipped
    if kept is None:
        for name, where in result.nulls.items():
            contract.count_nulls([name] * len(where))
        if result.documents:
            return b"".join(encoder.encode(d) for d in result.documents), result.pairs
        return result.data, result.pairs
    ships = set(kept)
    for name, where in result.nulls.items():
        contract.count_nulls([name] * sum(1 for j in where if j in ships))
    pairs = b"".join(result.pairs[j * 64 : j * 64 + 64] for j in kept)
    if result.documents:
        return b"".join(encoder.encode(result.documents[j]) for j in kept), pairs
    data, ends = result.data, result.ends
    return b"".join(data[(ends[j - 1] if j else 0) : ends[j]] for j in kept), pairs


def _raise(error: tuple[type[Error], str, str]) -> None:
    cls, message, hint = error
    try:
        exc = cls(message, hint=hint)
    except TypeError:  # an error class that takes more than a message and a hint
        exc = OperationError(message, hint=hint)
    raise exc


def parallel_pass(
    records: RecordPass, work: Path, *, encoder: Encoder, plain_keys: bool, workers: int
) -> Iterator[tuple[bytes, bytes]]:
    """The shipped records of ``records``'s pass as ``(output bytes, logical pairs)`` per
    batch, computed on ``workers`` forked processes (see the module docstring); the pass's
    counts, contract and fields seen are kept in ``records`` as the serial pass keeps them.
    For Parquet the output bytes are what ``encoder`` made final."""
    token = next(_TOKENS)
    _STAGES[token] = _Stage(records=records, encoder=encoder, plain_keys=plain_keys)
    for stream in (sys.stdout, sys.stderr):  # nothing pending is inherited by the workers
        with contextlib.suppress(Exception):
            stream.flush()
    pool = ProcessPoolExecutor(
        max_workers=workers,
        mp_context=multiprocessing.get_context("fork"),
        initializer=_worker_start,
        initargs=(os.getpid(),),
    )
    try:
        pending: deque[Future[BatchResult]] = deque()
        blobs = records.raw_batches(work, BATCH_BYTES)
        more = True
        while more or pending:
            while more and len(pending) < 2 * workers + 1:
                blob = next(blobs, None)
                if blob is None:
                    more = False
                else:
                    pending.append(pool.submit(_run_batch, token, blob))
            if not pending:
                break
            result = _wait(pool, pending.popleft())
            if result.error is not None:
                if records.live is None:  # a backup: its digest speaks first
                    _kill_workers(pool)
                    _drain(blobs)
                _raise(result.error)
            yield _settle(result, records, encoder)
    except BrokenProcessPool:  # from submit() or result(): a worker died
        raise OperationError(
            "an export worker process died (killed, or out of memory): nothing was delivered",
            hint="run the export again (--workers 1 runs it in one process)",
        ) from None
    finally:
        _STAGES.pop(token, None)
        _kill_workers(pool)  # success or failure: they have nothing left to do
        pool.shutdown(wait=True, cancel_futures=True)
