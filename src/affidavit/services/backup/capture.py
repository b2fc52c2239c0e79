"""``backup run``: take a point-in-time backup of a registered source, streaming each
dataset from the engine into the vault (encrypted) while it is fingerprinted, so the backup is
read once.
"""

from __future__ import annotations

import contextlib
import threading
from typing import Any

from affidavit.engines.base import Engine, SnapshotTransfer
from affidavit.fingerprint.accumulator import Accumulator
from affidavit.models.backup import ArtifactRole, Backup
from affidavit.models.progress import Reporter, SilentReporter
from affidavit.private_temp import private_folder, unlinked_spool
from affidavit.services.artifacts import ArtifactSink
from affidavit.services.backends import engine_class, engine_for
from affidavit.services.backup import recording
from affidavit.services.backup.recording import (
    Captured,
    Run,
    begin,
    fail,
    finish,
    resolve_vault,
)
from affidavit.services.context import App
from affidavit.services.fingerprint import fingerprint_datasets, hash_exact_batch


def run_backup(
    app: App,
    source_name: str,
    *,
    datasets: list[str] | None = None,
    vault_name: str | None = None,
    retain_days: int | None = None,
    reporter: Reporter | None = None,
) -> Backup:
    """Take a point-in-time backup of a registered source."""
    rep = reporter or SilentReporter()
    with app.read() as uow:
        source = uow.sources.get(source_name)
    vault = resolve_vault(app, vault_name)
    fmt = engine_class(source.engine).backup_format
    with (
        engine_for(source, app.settings) as engine,
        contextlib.ExitStack() as transfer,
    ):
        description = engine.describe()  # fails (exit 3) before anything is recorded
        stream: SnapshotTransfer | None = None
        captured_at = 0
        if engine.snapshot_format is not None:
            # SYNC first: the server's diskless-sync delay and fork run while the counts
            # and the catalog work below are done (nothing is recorded if they fail)
            captured_at = int(recording.now().timestamp() * 1000)
            stream = engine.request_snapshot()
            transfer.callback(stream.close)
        names = datasets or engine.list_datasets()
        # NotFound before anything is recorded; the estimates size the progress bars
        totals = {name: engine.estimate_records(name) for name in names}
        run = begin(
            app,
            source=source,
            source_label=source.name,
            vault=vault,
            kind="run",
            fmt=fmt,
            retain_days=retain_days,
            reporter=rep,
        )
        try:
            if stream is None:
                captured = _capture_datasets(run, engine, totals, description.version)
            else:
                captured = _capture_stream(run, stream, captured_at, names, description.version)
        except BaseException as exc:
            fail(run, exc)
            raise
    try:  # a failure while signing or completing must not leave the row "running"
        return finish(
            run,
            source=source,
            source_label=source.name,
            vault=vault,
            captured=captured,
            kind="run",
            fmt=fmt,
        )
    except BaseException as exc:
        fail(run, exc)
        raise


def _capture_datasets(run: Run, engine: Engine, totals: dict[str, int], version: str) -> Captured:
    """A mongodump-layout backup read through the engine's dataset snapshot, dataset by
    dataset: each one's documents checked, hashed and stored in one pass, then its metadata
    and index. ``totals``: about the record count of each dataset before the snapshot (for
    progress only: an exact count is a full scan on servers without fast counts)."""
    results = []
    with engine.dataset_snapshot() as snap:
        for name, total in totals.items():
            db, _, coll = name.partition(".")
            run.reporter.task(f"backing up {name}", total)
            acc = Accumulator("exact")
            with run.sink(f"dump/{db}/{coll}.bson", ArtifactRole.DATA, name) as sink:
                batch = _DocumentBatch()
                for raw in snap.iter_raw(name):
                    if batch.add(raw):
                        _check_and_add(batch, sink, acc, run.reporter)
                _check_and_add(batch, sink, acc, run.reporter)
                artifact = sink.close()
            run.stored(artifact)
            run.store_bytes(
                f"dump/{db}/{coll}.metadata.json",
                snap.metadata_json(name),
                ArtifactRole.METADATA,
                name,
            )
            text, count, _ = run.store_index(acc, name, "bson")
            results.append((name, count, text))
            run.reporter.finish()
        consistency = snap.consistency
    return Captured(datasets=results, consistency=consistency, server_version=version)


class _DocumentBatch:
    """Raw BSON documents of a scan, collected into one buffer for a batched check."""

    RECORDS = 2048
    BYTES = 4 << 20

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.starts: list[int] = []
        self.size = 0

    def add(self, raw: bytes) -> bool:
        """Add a document; true when the batch is full."""
        self.starts.append(self.size)
        self.parts.append(raw)
        self.size += len(raw)
        return len(self.parts) >= self.RECORDS or self.size >= self.BYTES


def _check_and_add(
    batch: _DocumentBatch, sink: ArtifactSink, acc: Accumulator, rep: Reporter
) -> None:
    """Check every document of ``batch`` in full (the check of ``exact_record_checked``, one
    call per batch: the compiled validator, pymongo for what it leaves), hash them into
    ``acc`` and write them to ``sink``; then empty the batch. A malformed document raises
    its ``FormatError`` before any of the batch is written."""
    if not batch.parts:
        return
    buffer = b"".join(batch.parts)
    pairs, keys = hash_exact_batch(buffer, batch.starts, check=True)
    sink.write(buffer)
    acc.add_pairs(pairs, keys)
    rep.advance(len(batch.parts))
    batch.parts, batch.starts, batch.size = [], [], 0


class _Abandoned(Exception):
    """The transfer failed: the fingerprint pass of its spool stops."""


class _SpoolFeed:
    """The spool of an RDB streaming from a server, shared by the thread that writes it (the
    one reading the socket) and the thread that parses it (:meth:`feed`, for
    ``RdbReader(feed=...)``). The parser waits for bytes that have not arrived; it never
    holds the transfer back, so the server streams at its own pace while records are parsed."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._appended = 0  # chunks written to the spool
        self._taken = 0  # chunks the parser knows of
        self._complete = False
        self._abandoned = False

    def appended(self) -> None:
        """A chunk was written (and flushed) to the spool."""
        with self._cond:
            self._appended += 1
            self._cond.notify()

    def complete(self) -> None:
        """The spool holds the whole RDB."""
        with self._cond:
            self._complete = True
            self._cond.notify()

    def abandon(self) -> None:
        """The transfer failed: :meth:`feed` raises :class:`_Abandoned` from now on."""
        with self._cond:
            self._abandoned = True
            self._cond.notify()

    def feed(self) -> bool:
        """Wait until more of the RDB is in the spool (True) or it is complete (False)."""
        with self._cond:
            while self._taken == self._appended and not (self._complete or self._abandoned):
                self._cond.wait()
            if self._abandoned:
                raise _Abandoned
            if self._taken < self._appended:
                self._taken = self._appended
                return True
            return False


def _capture_stream(
    run: Run, rdb: SnapshotTransfer, captured_at: int, names: list[str], version: str
) -> Captured:
    """The RDB (``rdb``: the engine's whole-server snapshot, requested at ``captured_at``, in
    ms) streams from the
    server into the vault (encrypted) and into a private local spool, which a second thread
    fingerprints while it grows (``RdbReader(feed=...)``): the pass overlaps the transfer. A
    spool, not a pipe: the parser checks lengths against the payload's final size, which a
    diskless transfer does not announce (a length beyond what arrived makes the parser wait
    for the end of the transfer). As before the two overlapped, the whole RDB is stored even
    when the pass then refuses it.

    The spool is the source's data in the clear, so it has no name while it is used
    (:func:`~affidavit.private_temp.unlinked_spool`: unlinked right after it is opened, read
    back through ``/proc/self/fd``) in a private folder named after this process: a run
    killed with SIGKILL leaves no plaintext behind, at most an empty folder that a later
    command sweeps (:func:`~affidavit.private_temp.sweep`)."""
    from affidavit.formats.rdb import RdbReader

    run.reporter.stage("streaming and fingerprinting the RDB")
    outcome: dict[str, Any] = {}
    with private_folder("rdb") as tmp:
        shared = _SpoolFeed()
        with unlinked_spool(tmp, "dump.rdb") as (local, spool):

            def fingerprint() -> None:
                try:
                    reader = RdbReader(spool, as_of_ms=captured_at, feed=shared.feed)
                    outcome["accumulators"] = fingerprint_datasets(reader, names)
                except BaseException as exc:  # handed to the streaming thread
                    outcome["error"] = exc

            worker = threading.Thread(target=fingerprint, name="affidavit-rdb-fingerprint")
            try:
                with run.sink("dump.rdb", ArtifactRole.DATA) as sink:
                    worker.start()
                    for chunk in rdb.payload():
                        sink.write(chunk)
                        local.write(chunk)
                        local.flush()  # the parser reads the spool through its own handle
                        shared.appended()
                    shared.complete()
                    artifact = sink.close()
                run.stored(artifact)
                worker.join()
            except BaseException:
                shared.abandon()  # the pass stops at its next wait for bytes
                if worker.is_alive():
                    worker.join(timeout=2.0)
                raise
        error = outcome.get("error")
        if error is not None:
            raise error
        accumulators: dict[str, Accumulator] = outcome["accumulators"]
        results = []
        for name in names:
            text, count, _ = run.store_index(accumulators[name], name, "redis")
            results.append((name, count, text))
    consistency = {"mode": "rdb-snapshot", "captured_at_ms": captured_at}
    return Captured(datasets=results, consistency=consistency, server_version=version)
