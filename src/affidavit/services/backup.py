"""Backups: take them from a live source, or ingest what another tool made, into a vault,
encrypted, locked for their retention, fingerprinted and described by a signed manifest.

Failure safety. A backup is first recorded as ``running`` (with a ledger event); every artifact
is recorded in the catalog right after the vault has it, so nothing in a vault is ever unknown
to the catalog for longer than one put; the backup turns ``complete`` only in the final unit of
work that also stores its manifest and attestation. Any failure (source dies, vault error,
Ctrl-C) is recorded as ``failed`` with the reason and every artifact that was written. A run
that dies without a word (SIGKILL, OOM, a lost host) is found by its lease, which it holds
and refreshes while it runs, and recorded ``failed`` as abandoned by a later command
(:mod:`affidavit.services.leases`); a run so recorded while it was in fact alive stops at its
next catalog write, before anything is signed.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

from affidavit import __version__
from affidavit.constants import EngineName
from affidavit.crypto.age import new_identity
from affidavit.crypto.age_process import AgeProcess, FileEncryption, encrypt_file
from affidavit.crypto.digest import sha256_hex
from affidavit.errors import (
    Error,
    FormatError,
    InputError,
    IntegrityError,
    OperationError,
    PolicyViolation,
)
from affidavit.fingerprint.accumulator import Accumulator
from affidavit.fingerprint.model import Fingerprint
from affidavit.formats.base import GZIP_MAGIC, check_input_path
from affidavit.formats.bson_codec import exact_record
from affidavit.input_files import is_regular_entry
from affidavit.ledger.attestation import BACKUP_PREDICATE_TYPE, Statement, Subject
from affidavit.models.backup import (
    ArtifactRole,
    Backup,
    BackupArtifact,
    BackupDataset,
    BackupStatus,
    Hold,
)
from affidavit.models.inventory import Source, Vault
from affidavit.models.progress import Reporter, SilentReporter
from affidavit.models.records import RecordEncoding
from affidavit.models.uri import ConnectionUri
from affidavit.private_temp import private_folder, unlinked_spool
from affidavit.services.artifacts import CHUNK, PROCESS_FROM, ArtifactSink
from affidavit.services.backends import engine_for, format_engine, reader_class, vault_backend
from affidavit.services.context import App
from affidavit.services.fingerprint import (
    add_bson_file,
    add_framed,
    fingerprint_rdb,
    hash_exact_batch,
)
from affidavit.services.keys import keystore_for, wrap_identity
from affidavit.services.leases import (
    INGESTED_LABEL,
    LEASE_TIMEOUT,
    Heartbeat,
    new_lease,
    reclaim_abandoned,
)
from affidavit.services.ledger import attest_and_record, require_verified_ledger
from affidavit.services.policy_vouch import protection
from affidavit.vaults.base import ArtifactLocked, ArtifactNotFound, StoredArtifact, VaultBackend

MANIFEST_TYPE = "https://affidavit.dev/backup-manifest/v1"
INGEST_FORMATS = ("mongodump", "mongodump-archive", "rdb")


def _now() -> datetime:
    return datetime.now(UTC)


def new_backup_id(moment: datetime) -> str:
    """``bk-20261128T074512Z-3f9a1c``: sortable by time, unique by the random suffix."""
    return f"bk-{moment.strftime('%Y%m%dT%H%M%SZ')}-{os.urandom(3).hex()}"


@dataclass
class _Run:
    """State of one backup in progress."""

    app: App
    backup_id: str
    prefix: str
    vault: VaultBackend
    recipient: str
    retain_until: datetime
    artifacts: list[BackupArtifact]
    reporter: Reporter
    heartbeat: Heartbeat | None = None  # refreshes the run's lease until it ends

    def end(self) -> None:
        """The run is over (complete or failed): stop refreshing its lease."""
        if self.heartbeat is not None:
            self.heartbeat.stop()

    def sink(self, name: str, role: ArtifactRole, dataset: str | None = None) -> ArtifactSink:
        """A sink for the artifact ``PREFIX/name.age``."""
        return ArtifactSink(
            self.vault,
            f"{self.prefix}/{name}.age",
            recipient=self.recipient,
            retain_until=self.retain_until,
            role=role,
            dataset=dataset,
        )

    def stored(self, artifact: BackupArtifact) -> None:
        """Record an artifact the vault now holds (its own small unit of work). Raises
        :class:`OperationError` after recording it when another process has meanwhile
        recorded the backup abandoned (its lease lapsed): this run then stops."""
        self.artifacts.append(artifact)
        with self.app.change() as change:
            change.uow.backups.add_artifact(self.backup_id, artifact)
            change.record(
                "backup.artifact_stored",
                f"backup:{self.backup_id}",
                {"path": artifact.path, "sha256": artifact.sha256, "size": artifact.size},
            )
            status = change.uow.backups.status(self.backup_id)
        if status not in (BackupStatus.RUNNING, BackupStatus.COMPLETE):  # complete: its manifest
            raise _lost(self.backup_id)

    def store_bytes(
        self, name: str, data: bytes, role: ArtifactRole, dataset: str | None = None
    ) -> BackupArtifact:
        """Store a small artifact."""
        with self.sink(name, role, dataset) as sink:
            for i in range(0, len(data), CHUNK):
                sink.write(data[i : i + CHUNK])
            artifact = sink.close()
        self.stored(artifact)
        return artifact

    def store_index(self, acc: Accumulator, dataset: str, encoding: str) -> tuple[str, int, int]:
        """Finish a dataset's fingerprint, store its index; return (text, count, dups)."""
        with private_folder("idx") as tmp:  # keys in the clear: swept if the run is killed
            path = tmp / "index.afpidx"
            fingerprint, duplicates = acc.finish(path, dataset=dataset, encoding=encoding)
            with self.sink(f"index/{dataset}.afpidx", ArtifactRole.INDEX, dataset) as sink:
                with path.open("rb") as fh:
                    while chunk := fh.read(CHUNK):
                        sink.write(chunk)
                artifact = sink.close()
        self.stored(artifact)
        return fingerprint.text, fingerprint.count, duplicates


@dataclass(frozen=True, slots=True, kw_only=True)
class _Captured:
    datasets: list[tuple[str, int, str]]  # name, records, fingerprint text
    consistency: dict[str, Any] | None
    server_version: str | None


def _lost(backup_id: str) -> OperationError:
    return OperationError(
        f"backup {backup_id} was recorded abandoned by another affidavit process while this "
        "run was going on; it stops here",
        hint=f"`affidavit backup show {backup_id}` says why (a lease whose process looked "
        "gone, or whose heartbeat could not reach the catalog for longer than "
        f"{LEASE_TIMEOUT.total_seconds() / 60:g} minutes); run the backup again",
    )


def _resolve_vault(app: App, name: str | None) -> Vault:
    with app.read() as uow:
        if name is not None:
            return uow.vaults.get(name)
        vaults = uow.vaults.list()
    if len(vaults) == 1:
        return vaults[0]
    if not vaults:
        raise InputError("no vault is registered", hint="`affidavit vault add NAME --url ...`")
    raise InputError(
        "several vaults are registered: name one with --vault",
        hint=f"vaults: {', '.join(v.name for v in vaults)}",
    )


def _classification(app: App, source: Source | None, dataset: str) -> str:
    if source is None:
        return "unclassified"
    with app.read() as uow:
        found = uow.datasets.get(source.name, dataset)
    return (found.classification if found else source.classification).value


def _begin(
    app: App,
    *,
    source: Source | None,
    source_label: str,
    vault: Vault,
    kind: str,
    fmt: str,
    retain_days: int | None,
    reporter: Reporter,
    keys: tuple[str, str] | None = None,
) -> _Run:
    """Record a new backup as ``running``, with the lease this process holds on it (see
    :mod:`affidavit.services.leases`), and start refreshing the lease. ``keys``: its age
    ``(identity, recipient)`` when the caller made them earlier (an ingest encrypts while it
    checks), else new ones. Runs found dead are recorded abandoned first."""
    started = _now()
    backup_id = new_backup_id(started)
    days = retain_days if retain_days is not None else app.settings.retention_days
    if not 1 <= days <= 36500:
        raise InputError(f"retention of {days} days is outside 1..36500")
    reclaim_abandoned(app)
    retain_until = started + timedelta(days=max(days, vault.immutable_days or 0))
    keystore = keystore_for(app.settings)
    identity, recipient = keys if keys is not None else new_identity()
    wrapped = wrap_identity(keystore, backup_id, identity)
    del identity  # only the wrapped form is kept
    backend = vault_backend(vault)
    with app.change() as change:
        change.uow.backups.add(
            Backup(
                id=backup_id,
                source=source.name if source else None,
                vault=vault.name,
                kind=kind,
                format=fmt,
                status=BackupStatus.RUNNING,
                started_at=started,
                finished_at=None,
                retain_until=retain_until,
                recipient=recipient,
                wrapped_identity=wrapped.ciphertext,
                kek_id=wrapped.kek_id,
                kek_version=wrapped.version,
            )
        )
        change.uow.backups.add_lease(new_lease(backup_id, started))
        change.record(
            "backup.started",
            f"backup:{backup_id}",
            {
                "source": source_label,
                "vault": vault.name,
                "kind": kind,
                "format": fmt,
                "retain_until": retain_until.isoformat(),
                "recipient": recipient,
                "kek": {"id": wrapped.kek_id, "version": wrapped.version},
            },
        )
    heartbeat = Heartbeat(app, backup_id)
    heartbeat.start()
    return _Run(
        app=app,
        backup_id=backup_id,
        prefix=f"{source_label}/{backup_id}",
        vault=backend,
        recipient=recipient,
        retain_until=retain_until,
        artifacts=[],
        reporter=reporter,
        heartbeat=heartbeat,
    )


def _finish(
    run: _Run,
    *,
    source: Source | None,
    source_label: str,
    vault: Vault,
    captured: _Captured,
    kind: str,
    fmt: str,
) -> Backup:
    app = run.app
    datasets = [
        BackupDataset(
            name=name,
            records=records,
            fingerprint=text,
            classification=_classification(app, source, name),
        )
        for name, records, text in captured.datasets
    ]
    with app.read() as uow:
        started = uow.backups.get(run.backup_id)
    manifest_obj = {
        "type": MANIFEST_TYPE,
        "backup_id": run.backup_id,
        "kind": kind,
        "format": fmt,
        "source": {
            "name": source_label,
            "engine": source.engine.value if source else None,
            "uri": ConnectionUri.parse(source.engine, source.uri).redacted if source else None,
            "server_version": captured.server_version,
        },
        "tool": {"name": "affidavit", "version": __version__},
        "started_at": started.started_at.isoformat(),
        "consistency": captured.consistency,
        "vault": {"name": vault.name, "url": vault.url, "region": vault.region},
        "retain_until": run.retain_until.isoformat(),
        "encryption": {
            "format": "age",
            "recipient": run.recipient,
            "kek_id": started.kek_id,
            "kek_version": started.kek_version,
        },
        "artifacts": [
            {
                "path": a.path,
                "role": a.role.value,
                "dataset": a.dataset,
                "size": a.size,
                "sha256": a.sha256,
                "plain_size": a.plain_size,
                "plain_sha256": a.plain_sha256,
            }
            for a in sorted(run.artifacts, key=lambda a: a.path)
        ],
        "datasets": [
            {
                "name": d.name,
                "records": d.records,
                "fingerprint": d.fingerprint,
                "classification": d.classification,
            }
            for d in datasets
        ],
    }
    statement = Statement(
        subjects=tuple(Subject(name=a.path, sha256=a.sha256) for a in run.artifacts)
        or (Subject(name=f"{run.prefix}/empty", sha256=sha256_hex(b"")),),
        predicate_type=BACKUP_PREDICATE_TYPE,
        predicate=manifest_obj,
    )
    manifest = statement.to_json()  # RFC 8785: the manifest is the statement's predicate
    finished = _now()
    with app.change() as change:
        if change.uow.backups.status(run.backup_id) is not BackupStatus.RUNNING:
            raise _lost(run.backup_id)  # nothing signed: the change rolls back
        envelope = attest_and_record(change, statement)
        envelope_json = envelope.to_json()
        change.uow.backups.complete(
            run.backup_id,
            finished_at=finished,
            consistency=captured.consistency,
            manifest=manifest,
            manifest_sha256=sha256_hex(manifest),
            envelope=envelope_json,
            datasets=datasets,
        )
        change.record(
            "backup.completed",
            f"backup:{run.backup_id}",
            {
                "manifest_sha256": sha256_hex(manifest),
                "artifacts": len(run.artifacts),
                "datasets": {d.name: d.fingerprint for d in datasets},
            },
        )
    # the signed envelope also goes to the vault, in the clear, for auditors
    try:
        stored = run.vault.put(
            f"{run.prefix}/manifest.dsse.json",
            [envelope_json.encode()],
            retain_until=run.retain_until,
        )
        run.stored(
            BackupArtifact(
                path=stored.path, role=ArtifactRole.MANIFEST, size=stored.size, sha256=stored.sha256
            )
        )
    except Exception as exc:  # the backup is complete and signed in the catalog; say so loudly
        message = exc.message if isinstance(exc, Error) else f"{type(exc).__name__}: {exc}"
        with app.change() as change:
            change.record(
                "backup.manifest_copy_failed", f"backup:{run.backup_id}", {"error": message}
            )
    run.end()
    with app.read() as uow:
        return uow.backups.get(run.backup_id)


def _fail(run: _Run, exc: BaseException) -> None:
    run.end()
    message = exc.message if isinstance(exc, Error) else f"{type(exc).__name__}: {exc}"
    if isinstance(exc, KeyboardInterrupt):
        message = "interrupted (Ctrl-C)"
    with run.app.read() as uow:
        status = uow.backups.status(run.backup_id)
    if status is BackupStatus.FAILED:  # recorded abandoned by another process meanwhile
        lost = _lost(run.backup_id)
        if isinstance(exc, OperationError) and exc.message == lost.message:
            return
        raise lost from exc  # say why it really stopped, not what failed as a consequence
    if status is BackupStatus.COMPLETE:  # signed; only the clear-text manifest copy was cut short
        with run.app.change() as change:
            change.record(
                "backup.manifest_copy_failed", f"backup:{run.backup_id}", {"error": message}
            )
        return
    with run.app.change() as change:
        change.uow.backups.fail(run.backup_id, finished_at=_now(), error=message)
        change.record(
            "backup.failed",
            f"backup:{run.backup_id}",
            {
                "error": message,
                "artifacts_written": [a.path for a in run.artifacts],
            },
        )


# -- backup run ------------------------------------------------------------------------------


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
    vault = _resolve_vault(app, vault_name)
    fmt = "mongodump" if source.engine is EngineName.MONGODB else "rdb"
    with (
        engine_for(source, timeout=app.settings.connect_timeout) as engine,
        contextlib.ExitStack() as transfer,
    ):
        description = engine.describe()  # fails (exit 3) before anything is recorded
        rdb: Any = None
        captured_at = 0
        if source.engine is EngineName.REDIS:
            # SYNC first: the server's diskless-sync delay and fork run while the counts
            # and the catalog work below are done (nothing is recorded if they fail)
            captured_at = int(_now().timestamp() * 1000)
            rdb = cast(Any, engine).request_rdb()  # RedisEngine's
            transfer.callback(rdb.close)
        names = datasets or engine.list_datasets()
        # NotFound before anything is recorded; the estimates size the progress bars
        totals = {name: engine.estimate_records(name) for name in names}
        run = _begin(
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
            if source.engine is EngineName.MONGODB:
                captured = _capture_mongo(run, engine, totals, description.version)
            else:
                captured = _capture_redis(run, rdb, captured_at, names, description.version)
        except BaseException as exc:
            _fail(run, exc)
            raise
    try:  # a failure while signing or completing must not leave the row "running"
        return _finish(
            run,
            source=source,
            source_label=source.name,
            vault=vault,
            captured=captured,
            kind="run",
            fmt=fmt,
        )
    except BaseException as exc:
        _fail(run, exc)
        raise


def _capture_mongo(run: _Run, engine: Any, totals: dict[str, int], version: str) -> _Captured:
    """``totals``: about the record count of each dataset before the snapshot (for progress
    only: an exact count is a full scan on servers without fast counts)."""
    results = []
    with engine.snapshot() as snap:
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
    return _Captured(datasets=results, consistency=consistency, server_version=version)


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


def _capture_redis(
    run: _Run, rdb: Any, captured_at: int, names: list[str], version: str
) -> _Captured:
    """The RDB (``rdb``: the transfer requested at ``captured_at``, in ms) streams from the
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
                    outcome["accumulators"] = fingerprint_rdb(reader, names)
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
    return _Captured(datasets=results, consistency=consistency, server_version=version)


# -- ingest ----------------------------------------------------------------------------------


def ingest_backup(
    app: App,
    path: Path,
    *,
    fmt: str,
    source_name: str | None = None,
    vault_name: str | None = None,
    retain_days: int | None = None,
    reporter: Reporter | None = None,
) -> Backup:
    """Register a backup another tool made: copy it into a vault (encrypted) and fingerprint
    it. The whole input is checked (framing, BSON, CRCs) before the backup is recorded."""
    rep = reporter or SilentReporter()
    if fmt not in INGEST_FORMATS:
        raise InputError(f"cannot ingest format {fmt!r}", hint=f"use {'|'.join(INGEST_FORMATS)}")
    check_input_path(path)  # a FIFO, socket or device is refused before anything opens it
    source = None
    if source_name is not None:
        with app.read() as uow:
            source = uow.sources.get(source_name)
        _check_engine(fmt, source)
    label = source.name if source else INGESTED_LABEL
    vault = _resolve_vault(app, vault_name)
    reader = reader_class(fmt)(path)
    files = _ingest_files(path, fmt)
    seen = {file: _stat_key(file) for _, file in files}
    dataset_of = _datasets_by_file(reader, fmt, files)
    rep.stage(f"checking {path}")
    keys = new_identity()
    # the whole input is read, checked and fingerprinted before anything is recorded;
    # meanwhile the large files are encrypted into spool files of the vault (_Spooler)
    spooler = _Spooler(keys[1], [(file, seen[file]) for _, file in files], vault_backend(vault))
    encoding = "redis" if fmt == "rdb" else "bson"
    try:
        with (
            private_folder("ingest") as tmp,
            ThreadPoolExecutor(max_workers=1, thread_name_prefix="affidavit-index") as indexer,
        ):
            try:
                spooler.start()
                accumulators = _check_and_fingerprint(reader, fmt)
                # each dataset's fingerprint and index are folded (to private temporary
                # files) while the encryption may still be running
                indexes = _fold_indexes(indexer, accumulators, Path(tmp), encoding, spooler)
                spooler.join()
            except BaseException as exc:
                spooler.abort()
                if isinstance(exc, InputError) and not exc.hint:
                    exc.hint = f"{path} is not a complete, valid {fmt}; nothing was recorded"
                raise
            run = _begin(
                app,
                source=source,
                source_label=label,
                vault=vault,
                kind="ingest",
                fmt=fmt,
                retain_days=retain_days,
                reporter=rep,
                keys=keys,
            )
            del keys  # only the wrapped identity is kept
            try:
                results = _store_ingested(
                    run, files, indexes, fmt=fmt, dataset_of=dataset_of, seen=seen,
                    spooled=spooler.spooled,
                )  # fmt: skip
                captured = _Captured(
                    datasets=sorted(results),
                    consistency={"mode": "as-ingested", "source_path": str(path)},
                    server_version=None,
                )
                return _finish(
                    run, source=source, source_label=label, vault=vault, captured=captured,
                    kind="ingest", fmt=fmt,
                )  # fmt: skip
            except BaseException as exc:
                _fail(run, exc)
                raise
    finally:
        spooler.discard()


@dataclass(frozen=True, slots=True, kw_only=True)
class _Spooled:
    """A file's ciphertext in a spool file of the vault, and the digests its writer took."""

    cipher: Path
    encryption: FileEncryption


class _Spooler:
    """Encrypts the large files of an ingest into spool files of the vault
    (:meth:`VaultBackend.spool`) while the input is being checked: a thread runs one
    :func:`~affidavit.crypto.age_process.encrypt_file` child per file, which reads the file,
    encrypts, hashes both sides and writes the spool file itself, on another core. After the
    check a folder vault takes a spool file over as the artifact without copying it
    (:meth:`VaultBackend.put_file`); other vaults upload it.

    A spool file is no artifact: nothing is recorded for it, a folder vault never lists it,
    and :meth:`discard` removes every one not taken over. A spool that fails for any reason
    (or whose file changed meanwhile) is dropped quietly: the file is then copied the
    ordinary way, which meets the error again where it always was. :meth:`abort` stops the
    encryption (a refused input)."""

    def __init__(
        self, recipient: str, files: list[tuple[Path, tuple[int, int]]], vault: VaultBackend
    ) -> None:
        self._recipient = recipient
        self._files = [(file, seen) for file, seen in files if seen[0] >= PROCESS_FROM]
        self._vault = vault
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._spools: list[Path] = []
        self.spooled: dict[Path, _Spooled] = {}

    def start(self) -> None:
        if self._files:
            self._thread = threading.Thread(target=self._run, name="affidavit-spool", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        for file, seen in self._files:
            spooled = self.spool_now(file, seen)
            if spooled is not None:
                self.spooled[file] = spooled

    def spool_now(self, file: Path, seen: tuple[int, int] | None = None) -> _Spooled | None:
        """Encrypt ``file`` into a spool file, in the calling thread (the spooler's own for
        the input files; the indexer's for an index just folded). ``seen``: the file's (size,
        mtime) when it was listed, which it must still have afterwards. None when the spooler
        was stopped or anything fails: the spool is dropped, and the caller stores the file
        the ordinary way, which meets any error again where it always was."""
        if self._stop.is_set():
            return None
        cipher: Path | None = None
        try:
            if seen is not None and _stat_key(file) != seen:
                raise _changed(file)
            cipher = self._vault.spool()
            self._spools.append(cipher)
            done = encrypt_file(self._recipient, file, cipher, stop=self._stop)
            if seen is not None and (_stat_key(file) != seen or done.plain_size != seen[0]):
                raise _changed(file)
        except Exception:  # dropped (see above)
            if cipher is not None:
                cipher.unlink(missing_ok=True)
            return None
        return _Spooled(cipher=cipher, encryption=done)

    def join(self) -> None:
        """Wait for the spooling to end."""
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def abort(self) -> None:
        """Stop spooling (the encryption process is ended) and wait for the thread."""
        self._stop.set()
        self.join()

    def discard(self) -> None:
        """Stop, and remove every spool file that was not taken over."""
        self.abort()
        for cipher in self._spools:
            with contextlib.suppress(OSError):
                cipher.unlink(missing_ok=True)


@dataclass(frozen=True, slots=True)
class _Folded:
    """A dataset's fingerprint, its index file and, for a large index, its spooled
    ciphertext."""

    fingerprint: Fingerprint
    index: Path
    spooled: _Spooled | None


def _fold_indexes(
    indexer: ThreadPoolExecutor,
    accumulators: dict[str, Accumulator],
    tmp: Path,
    encoding: str,
    spooler: _Spooler,
) -> dict[str, Future[_Folded]]:
    """Start folding each dataset's fingerprint and index (to a file in ``tmp``); an index of
    :data:`.PROCESS_FROM` bytes or more is then encrypted into a spool file too, while the
    data files may still be encrypting."""

    def fold(acc: Accumulator, index: Path, name: str) -> _Folded:
        fingerprint, _ = acc.finish(index, dataset=name, encoding=encoding)
        large = index.stat().st_size >= PROCESS_FROM
        return _Folded(fingerprint, index, spooler.spool_now(index) if large else None)

    return {
        name: indexer.submit(fold, acc, tmp / f"{n}.afpidx", name)
        for n, (name, acc) in enumerate(accumulators.items())
    }


def _store_ingested(
    run: _Run,
    files: list[tuple[str, Path]],
    indexes: dict[str, Future[_Folded]],
    *,
    fmt: str,
    dataset_of: dict[Path, str],
    seen: dict[Path, tuple[int, int]],
    spooled: dict[Path, _Spooled],
) -> list[tuple[str, int, str]]:
    """Copy every file into the vault and store each dataset's index (``indexes``: being
    folded by a thread meanwhile); returns (name, records, fingerprint) per dataset."""
    rep = run.reporter
    for rel, file in files:
        rep.task(f"storing {rel}", seen[file][0])
        role = (
            ArtifactRole.DATA
            if rel.endswith((".bson", ".bson.gz", ".rdb", ".archive")) or fmt != "mongodump"
            else ArtifactRole.METADATA
        )
        artifact = _copy_file(
            run, file, rel=rel, role=role, dataset=dataset_of.get(file), seen=seen[file],
            rep=rep, spooled=spooled.get(file),
        )  # fmt: skip
        run.stored(artifact)
        rep.finish()
    results = []
    for name, folding in indexes.items():
        folded = folding.result()
        rel = f"index/{name}.afpidx"
        if folded.spooled is not None:
            artifact = _store_spooled(
                run, folded.spooled, rel, role=ArtifactRole.INDEX, dataset=name
            )
        else:
            with run.sink(rel, ArtifactRole.INDEX, name) as sink:
                with folded.index.open("rb") as fh:
                    while chunk := fh.read(CHUNK):
                        sink.write(chunk)
                artifact = sink.close()
        run.stored(artifact)
        results.append((name, folded.fingerprint.count, folded.fingerprint.text))
    return results


def _check_and_fingerprint(reader: Any, fmt: str) -> dict[str, Accumulator]:
    """Read the whole input once: framing, a full BSON decode of every document (or the RDB's
    structure and CRC-64, the archive's CRCs), and the exact fingerprint of every dataset.
    Raises ``InputError`` (exit 2) for anything malformed."""
    if fmt == "rdb":
        return fingerprint_rdb(reader, None)
    names: list[str] = reader.datasets()
    accumulators = {name: Accumulator("exact") for name in names}
    if fmt == "mongodump-archive":  # one pass over the archive for every namespace
        batch: dict[str, list[tuple[bytes, bytes]]] = {name: [] for name in names}
        for name, doc in reader.iter_all():
            pending = batch[name]
            pending.append(exact_record(doc))
            if len(pending) >= 2048:
                accumulators[name].add_records(pending)
                pending.clear()
        for name, pending in batch.items():
            accumulators[name].add_records(pending)
        return accumulators
    files: dict[str, Path] = reader.dataset_files()
    big = any(file.stat().st_size >= PROCESS_FROM for file in files.values())
    workers = (os.cpu_count() or 1) if big else 1
    for name in names:  # every document framed and decoded in full, by worker processes
        try:
            if _gzipped(files[name]):
                add_framed(
                    accumulators[name],
                    reader.record_batches(name),
                    encoding=RecordEncoding.BSON,
                    profile="exact",
                    workers=workers,
                    check=True,
                )
            else:  # the processes read their parts of the file themselves
                add_bson_file(accumulators[name], files[name], workers=workers, check=True)
        except FormatError:
            # the first defect, named by file and byte offset as the reader names it: the
            # reader's own document-by-document check finds it again
            for doc in reader.records(name):  # validate="full"
                exact_record(doc)
            raise
    return accumulators


def _check_engine(fmt: str, source: Source) -> None:
    """Refuse to file a backup under a source of another engine (an RDB under a MongoDB
    source): its manifest, drills and policy results would speak of the wrong database."""
    engine = format_engine(fmt)
    if source.engine is not engine:
        fitting = "|".join(f for f in INGEST_FORMATS if format_engine(f) is source.engine)
        raise InputError(
            f"--format {fmt} holds {engine.value} data, but source {source.name} is a "
            f"{source.engine.value} source",
            hint=f"name a {engine.value} source with --source (or none); a {source.engine.value} "
            f"source takes --format {fitting}",
        )


def _gzipped(file: Path) -> bool:
    with file.open("rb") as fh:
        return fh.read(2) == GZIP_MAGIC


def _stat_key(file: Path) -> tuple[int, int]:
    info = file.stat()
    return info.st_size, info.st_mtime_ns


def _ingest_files(path: Path, fmt: str) -> list[tuple[str, Path]]:
    """(artifact name, file) pairs to copy, in a stable order."""
    if path.is_file():
        return [(path.name, path)]
    if fmt != "mongodump":
        raise InputError(f"{path} is a folder; --format {fmt} takes a file")
    # a pipe, socket, device or dangling link in a dump is refused (named), never skipped
    # and never opened
    entries = sorted(p for p in path.rglob("*") if not p.is_dir() or p.is_symlink())
    files = [p for p in entries if is_regular_entry(p)]
    if not files:
        raise InputError(f"{path} holds no files")
    out = []
    for file in files:
        rel = file.relative_to(path).as_posix()
        if any(part.startswith(".") for part in rel.split("/")):
            continue
        out.append((rel, file))
    _check_metadata(path, [r for r, _ in out])
    return out


def _check_metadata(root: Path, rels: list[str]) -> None:
    names = set(rels)
    for rel in rels:
        for suffix in (".bson", ".bson.gz"):
            if rel.endswith(suffix) and "/" in rel:
                stem = rel[: -len(suffix)]
                if stem.rsplit("/", 1)[-1] in ("oplog",) or stem.rsplit("/", 1)[-1].startswith(
                    "system."
                ):
                    continue
                meta = stem + ".metadata.json" + (".gz" if suffix.endswith(".gz") else "")
                if meta not in names and stem + ".metadata.json" not in names:
                    raise InputError(
                        f"{root / rel} has no metadata file ({meta})",
                        hint="mongorestore needs it to recreate the collection; dump again with "
                        "mongodump",
                    )


def _datasets_by_file(reader: Any, fmt: str, files: list[tuple[str, Path]]) -> dict[Path, str]:
    """Which dataset each copied file holds, named exactly as the reader (and so the manifest)
    names it; refuses an input where a dataset's file would not be copied (hidden, symlinked)
    so that no signed dataset lacks its data artifact."""
    if fmt != "mongodump":
        return {}
    by_file = {file.resolve(): name for name, file in reader.dataset_files().items()}
    copied = {file.resolve(): file for _, file in files}
    missing = sorted(name for resolved, name in by_file.items() if resolved not in copied)
    if missing:
        raise InputError(
            f"the data of {', '.join(missing)} is in a hidden or linked file that ingest "
            "does not copy",
            hint="ingest a plain copy of the dump (no symlinks, no hidden folders)",
        )
    return {copied[resolved]: name for resolved, name in by_file.items()}


def _copy_file(
    run: _Run,
    file: Path,
    *,
    rel: str,
    role: ArtifactRole,
    dataset: str | None,
    seen: tuple[int, int],
    rep: Reporter,
    spooled: _Spooled | None = None,
) -> BackupArtifact:
    """Copy ``file`` into the vault, encrypted (from its ``spooled`` ciphertext when the
    spooler made one). ``seen`` is its (size, mtime) when it was checked and fingerprinted: a
    file that changed since then is refused, so the bytes the vault stores are the bytes that
    were fingerprinted."""
    if _stat_key(file) != seen:
        raise _changed(file)
    if spooled is not None:
        artifact = _store_spooled(run, spooled, rel, role=role, dataset=dataset)
    elif seen[0] >= PROCESS_FROM:
        artifact = _put_encrypted(run, file, rel=rel, role=role, dataset=dataset, rep=rep)
    else:
        with run.sink(rel, role, dataset) as sink, file.open("rb") as raw:
            while chunk := raw.read(CHUNK):
                sink.write(chunk)
                rep.advance(len(chunk))
            artifact = sink.close()
    if _stat_key(file) != seen:
        raise _changed(file)
    return artifact


def _store_spooled(
    run: _Run, spooled: _Spooled, rel: str, *, role: ArtifactRole, dataset: str | None
) -> BackupArtifact:
    """Store a spooled ciphertext as the artifact ``PREFIX/rel.age`` (taken over by a folder
    vault, uploaded by others), with the digests its writer took."""
    done = spooled.encryption
    target = f"{run.prefix}/{rel}.age"
    stored = _stored(
        target,
        lambda: run.vault.put_file(
            target, spooled.cipher, retain_until=run.retain_until,
            sha256=done.cipher_sha256, size=done.cipher_size,
        ),
    )  # fmt: skip
    run.reporter.advance(done.plain_size)
    return BackupArtifact(
        path=stored.path,
        role=role,
        size=stored.size,
        sha256=stored.sha256,
        plain_size=done.plain_size,
        plain_sha256=done.plain_sha256,
        dataset=dataset,
    )


def _put_encrypted(
    run: _Run, file: Path, *, rel: str, role: ArtifactRole, dataset: str | None, rep: Reporter
) -> BackupArtifact:
    """:class:`ArtifactSink`'s work for a large file, with the encryption in a child process
    (:mod:`affidavit.crypto.age_process`): the cipher runs on another core while this one
    reads the file and the vault hashes and writes the ciphertext. The child hashes the
    plaintext it encrypts. Any failure leaves nothing in the vault (its ``put`` contract)
    and no process behind."""
    with file.open("rb") as raw:

        def chunks() -> Iterator[bytes]:
            while chunk := raw.read(CHUNK):
                rep.advance(len(chunk))
                yield chunk

        child = AgeProcess("encrypt", run.recipient, chunks())
        pieces = iter(child)
        try:
            stored = _put(run, f"{run.prefix}/{rel}.age", pieces)
        finally:
            pieces.close()  # type: ignore[attr-defined]
    assert child.plain_sha256 is not None
    assert child.plain_size is not None
    return BackupArtifact(
        path=stored.path,
        role=role,
        size=stored.size,
        sha256=stored.sha256,
        plain_size=child.plain_size,
        plain_sha256=child.plain_sha256,
        dataset=dataset,
    )


def _put(run: _Run, path: str, ciphertext: Iterator[bytes]) -> StoredArtifact:
    """``run.vault.put`` with its errors worded as :class:`ArtifactSink` words them."""
    return _stored(path, lambda: run.vault.put(path, ciphertext, retain_until=run.retain_until))


def _stored(path: str, store: Callable[[], StoredArtifact]) -> StoredArtifact:
    """The result of a vault call storing ``path``; an error that is not affidavit's own is
    worded as :class:`ArtifactSink` words it."""
    try:
        return store()
    except Error:
        raise
    except Exception as exc:
        raise OperationError(
            f"storing {path} failed: {exc}",
            hint="check that the vault is reachable and writable; the backup is recorded as "
            "failed with every artifact written so far",
        ) from exc


def _changed(file: Path) -> OperationError:
    return OperationError(
        f"{file} changed while it was being ingested",
        hint="ingest a copy that nothing writes to",
    )


# -- listing, holds, deletion ----------------------------------------------------------------


def list_backups(app: App, source: str | None = None) -> list[Backup]:
    """Backups (of one source), newest first; runs found dead are recorded abandoned first."""
    with app.read() as uow:
        if source is not None:
            uow.sources.get(source) if source != INGESTED_LABEL else None
    reclaim_abandoned(app)
    with app.read() as uow:
        return uow.backups.list(source)


def get_backup(app: App, backup_id: str) -> Backup:
    """One backup with its artifacts, datasets and holds (a dead run recorded abandoned
    first)."""
    reclaim_abandoned(app)
    with app.read() as uow:
        return uow.backups.get(backup_id)


def add_hold(app: App, backup_id: str, *, case_id: str, reason: str) -> Hold:
    """Place a legal hold: the backup cannot be deleted while it is active."""
    case_id, reason = case_id.strip(), reason.strip()
    if not case_id or not reason:
        raise InputError("a hold needs --case and --reason")
    with app.change() as change:
        hold = change.uow.backups.add_hold(
            backup_id, case_id=case_id, reason=reason, by=app.actor, at=_now()
        )
        change.record("hold.added", f"backup:{backup_id}", {"case": case_id, "reason": reason})
    return hold


def release_hold(app: App, backup_id: str, *, case_id: str, reason: str) -> Hold:
    """Release a legal hold."""
    if not reason.strip():
        raise InputError("releasing a hold needs --reason")
    with app.change() as change:
        hold = change.uow.backups.release_hold(
            backup_id, case_id, reason=reason.strip(), by=app.actor, at=_now()
        )
        change.record("hold.released", f"backup:{backup_id}", {"case": case_id, "reason": reason})
    return hold


def list_holds(app: App, backup_id: str | None = None, *, active_only: bool = False) -> list[Hold]:
    """Holds, oldest first."""
    with app.read() as uow:
        if backup_id is not None:
            uow.backups.get(backup_id)
        return uow.backups.holds(backup_id, active_only=active_only)


@dataclass(frozen=True, slots=True, kw_only=True)
class DeletionReceipt:
    """What a deletion removed and kept."""

    backup_id: str
    removed: list[str]
    kept_manifest_sha256: str | None


def _deletion_refusals(app: App, backup_id: str) -> tuple[Backup, Vault, list[str]]:
    """The backup, its vault and why it may not be deleted now. A deletion cannot be undone:
    it acts only on a ledger that verifies in full and whose receipt can be recorded, and
    takes the retention and holds from the signed events (the later and the more of them and
    the catalog's rows)."""
    with app.read() as uow:
        uow.backups.get(backup_id)  # NotFound first
    require_verified_ledger(app, refusing=f"to delete backup {backup_id}", nothing="deleted")
    app.check_signer()  # the receipt must be recordable before anything is removed
    with app.read() as uow:
        backup = uow.backups.get(backup_id)
        vault = uow.vaults.get(backup.vault)
        signed = protection(uow.ledger, backup_id)  # the catalog's copies may have been edited
    if signed.retain_until is None:
        raise IntegrityError(
            f"refusing to delete backup {backup_id}: the ledger holds no signed backup.started "
            "for it, so nothing vouches for its retention or its holds",
            hint="the catalog's row was not written by affidavit, or the ledger was started "
            "again after a lost catalog; nothing was deleted",
        )
    if backup.status is BackupStatus.DELETED:
        raise InputError(f"backup {backup_id} was already deleted")
    held = sorted({h.case_id for h in backup.holds if h.active} | set(signed.held))
    retained = max(backup.retain_until, signed.retain_until)
    refusals = []
    if _now() < retained:
        refusals.append(f"it is retained until {retained.isoformat()}")
    if held:
        refusals.append("it is under legal hold " + ", ".join(held))
    return backup, vault, refusals


def delete_backup(app: App, backup_id: str, *, reason: str) -> DeletionReceipt:
    """Delete a backup's artifacts after its retention and with no active hold. The manifest,
    fingerprints and history stay in the catalog; the receipt goes to the ledger."""
    if not reason.strip():
        raise InputError("a deletion needs --reason")
    backup, vault, refusals = _deletion_refusals(app, backup_id)
    if refusals:
        with app.change() as change:
            change.record(
                "backup.deletion_refused",
                f"backup:{backup_id}",
                {"reason": reason, "refused_because": refusals},
            )
        raise PolicyViolation(
            f"backup {backup_id} cannot be deleted: {'; '.join(refusals)}",
            hint="deletion waits for the retention date and for every hold to be released",
        )
    backend = vault_backend(vault)
    with app.read() as uow:  # a hold placed since the check above still wins
        if uow.backups.holds(backup_id, active_only=True):
            raise PolicyViolation(
                f"backup {backup_id} was put under legal hold while the deletion started",
                hint="deletion waits for every hold to be released",
            )
    removed: list[str] = []
    try:
        for artifact in backup.artifacts:
            if artifact.deleted:
                continue
            try:
                backend.delete(artifact.path)
            except ArtifactNotFound:
                pass
            except ArtifactLocked as exc:
                raise PolicyViolation(
                    f"the vault still locks {artifact.path}: {exc.message}",
                    hint="the storage's own retention is longer than the catalog's",
                ) from exc
            removed.append(artifact.path)
    except BaseException as exc:
        if removed:  # the vault changed: that is recorded even though the deletion stopped
            with app.change() as change:
                change.uow.backups.mark_artifacts_deleted(backup_id, removed)
                change.record(
                    "backup.deletion_partial",
                    f"backup:{backup_id}",
                    {"reason": reason.strip(), "removed": removed, "error": str(exc)},
                )
        raise
    with app.change() as change:
        change.uow.backups.mark_deleted(backup_id, at=_now())
        change.record(
            "backup.deleted",
            f"backup:{backup_id}",
            {
                "reason": reason.strip(),
                "removed": removed,
                "kept": {
                    "manifest_sha256": backup.manifest_sha256,
                    "datasets": len(backup.datasets),
                },
            },
        )
    return DeletionReceipt(
        backup_id=backup_id, removed=removed, kept_manifest_sha256=backup.manifest_sha256
    )
