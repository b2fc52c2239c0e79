"""The recorded life of one backup: begun (``running``, with its lease and a
``backup.started`` event), its artifacts recorded one by one as the vault holds them, then
finished (manifest signed, ``complete``) or failed. Taking the data (:mod:`.capture`) and
ingesting it (:mod:`.ingest`) both go through :func:`begin`, :class:`Run` and :func:`finish`
or :func:`fail`.

Failure safety. Every artifact is recorded in the catalog right after the vault has it, so
nothing in a vault is ever unknown to the catalog for longer than one put; the backup turns
``complete`` only in the final unit of work that also stores its manifest and attestation.
Any failure (source dies, vault error, Ctrl-C) is recorded as ``failed`` with the reason and
every artifact that was written. A run that dies without a word (SIGKILL, OOM, a lost host)
is found by its lease, which it holds and refreshes while it runs, and recorded ``failed`` as
abandoned by a later command (:mod:`affidavit.services.leases`); a run so recorded while it
was in fact alive stops at its next catalog write, before anything is signed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from affidavit import __version__
from affidavit.crypto.age import new_identity
from affidavit.crypto.digest import sha256_hex
from affidavit.errors import Error, InputError, OperationError
from affidavit.fingerprint.accumulator import Accumulator
from affidavit.ledger.attestation import BACKUP_PREDICATE_TYPE, Statement, Subject
from affidavit.models.backup import (
    ArtifactRole,
    Backup,
    BackupArtifact,
    BackupDataset,
    BackupStatus,
)
from affidavit.models.inventory import Source, Vault
from affidavit.models.manifest import (
    BACKUP_KINDS,
    BackupKind,
    BackupManifest,
    Consistency,
    ManifestArtifact,
    ManifestDataset,
    ManifestEncryption,
    ManifestSource,
    ManifestVault,
    ToolInfo,
)
from affidavit.models.progress import Reporter
from affidavit.models.uri import ConnectionUri
from affidavit.private_temp import private_folder
from affidavit.services.artifacts import ArtifactSink, ArtifactWriter, Staged
from affidavit.services.backends import vault_backend
from affidavit.services.context import App
from affidavit.services.keys import keystore_for, wrap_identity
from affidavit.services.leases import LEASE_TIMEOUT, Heartbeat, new_lease, reclaim_abandoned
from affidavit.services.ledger import attest_and_record


def now() -> datetime:
    """The clock of every backup service (one place, for tests that move it)."""
    return datetime.now(UTC)


def new_backup_id(moment: datetime) -> str:
    """``bk-20261128T074512Z-3f9a1c``: sortable by time, unique by the random suffix."""
    return f"bk-{moment.strftime('%Y%m%dT%H%M%SZ')}-{os.urandom(3).hex()}"


@dataclass
class Run:
    """State of one backup in progress: where its artifacts go (``writer``), what is stored
    so far, and the heartbeat that refreshes its lease."""

    app: App
    backup_id: str
    writer: ArtifactWriter
    artifacts: list[BackupArtifact]
    reporter: Reporter
    heartbeat: Heartbeat | None = None  # refreshes the run's lease until it ends

    @property
    def prefix(self) -> str:
        """The vault folder of this backup's artifacts."""
        return self.writer.prefix

    @property
    def retain_until(self) -> datetime:
        """Until when the vault locks every artifact."""
        return self.writer.retain_until

    def end(self) -> None:
        """The run is over (complete or failed): stop refreshing its lease."""
        if self.heartbeat is not None:
            self.heartbeat.stop()

    def sink(self, name: str, role: ArtifactRole, dataset: str | None = None) -> ArtifactSink:
        """A sink for the artifact ``PREFIX/name.age`` (record what it stores with
        :meth:`stored`)."""
        return self.writer.sink(name, role, dataset)

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
            raise lost(self.backup_id)

    def store_bytes(
        self, name: str, data: bytes, role: ArtifactRole, dataset: str | None = None
    ) -> BackupArtifact:
        """Store and record a small artifact."""
        artifact = self.writer.store_bytes(name, data, role, dataset)
        self.stored(artifact)
        return artifact

    def store_file(
        self,
        name: str,
        file: Path,
        *,
        role: ArtifactRole,
        dataset: str | None = None,
        staged: Staged | None = None,
    ) -> BackupArtifact:
        """Store and record the local ``file`` (see :meth:`ArtifactWriter.store_file`)."""
        artifact = self.writer.store_file(
            name, file, role=role, dataset=dataset, staged=staged, advance=self.reporter.advance
        )
        self.stored(artifact)
        return artifact

    def store_index(self, acc: Accumulator, dataset: str, encoding: str) -> tuple[str, int, int]:
        """Finish a dataset's fingerprint, store its index; return (text, count, dups)."""
        with private_folder("idx") as tmp:  # keys in the clear: swept if the run is killed
            path = tmp / "index.afpidx"
            fingerprint, duplicates = acc.finish(path, dataset=dataset, encoding=encoding)
            artifact = self.writer.store_file(
                f"index/{dataset}.afpidx", path, role=ArtifactRole.INDEX, dataset=dataset
            )
        self.stored(artifact)
        return fingerprint.text, fingerprint.count, duplicates


@dataclass(frozen=True, slots=True, kw_only=True)
class Captured:
    datasets: list[tuple[str, int, str]]  # name, records, fingerprint text
    consistency: dict[str, Any] | None
    server_version: str | None


def lost(backup_id: str) -> OperationError:
    return OperationError(
        f"backup {backup_id} was recorded abandoned by another affidavit process while this "
        "run was going on; it stops here",
        hint=f"`affidavit backup show {backup_id}` says why (a lease whose process looked "
        "gone, or whose heartbeat could not reach the catalog for longer than "
        f"{LEASE_TIMEOUT.total_seconds() / 60:g} minutes); run the backup again",
    )


def resolve_vault(app: App, name: str | None) -> Vault:
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


def begin(
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
) -> Run:
    """Record a new backup as ``running``, with the lease this process holds on it (see
    :mod:`affidavit.services.leases`), and start refreshing the lease. ``keys``: its age
    ``(identity, recipient)`` when the caller made them earlier (an ingest encrypts while it
    checks), else new ones. Runs found dead are recorded abandoned first."""
    started = now()
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
    writer = ArtifactWriter(
        backend, prefix=f"{source_label}/{backup_id}", recipient=recipient,
        retain_until=retain_until,
    )  # fmt: skip
    return Run(
        app=app, backup_id=backup_id, writer=writer, artifacts=[], reporter=reporter,
        heartbeat=heartbeat,
    )  # fmt: skip


def finish(
    run: Run,
    *,
    source: Source | None,
    source_label: str,
    vault: Vault,
    captured: Captured,
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
    assert started.kek_id is not None
    assert started.kek_version is not None
    manifest_obj = BackupManifest(
        backup_id=run.backup_id,
        kind=_kind(kind),
        format=fmt,
        source=ManifestSource(
            name=source_label,
            engine=source.engine if source else None,
            uri=ConnectionUri.parse(source.engine, source.uri).redacted if source else None,
            server_version=captured.server_version,
        ),
        tool=ToolInfo(name="affidavit", version=__version__),
        started_at=started.started_at,
        consistency=Consistency.from_predicate(captured.consistency),
        vault=ManifestVault(name=vault.name, url=vault.url, region=vault.region),
        retain_until=run.retain_until,
        encryption=ManifestEncryption(
            recipient=run.writer.recipient,
            kek_id=started.kek_id,
            kek_version=started.kek_version,
        ),
        artifacts=tuple(
            ManifestArtifact(
                path=a.path,
                role=a.role,
                dataset=a.dataset,
                size=a.size,
                sha256=a.sha256,
                plain_size=a.plain_size,
                plain_sha256=a.plain_sha256,
                segments=a.segments,
            )
            for a in sorted(run.artifacts, key=lambda a: a.path)
        ),
        datasets=tuple(
            ManifestDataset(
                name=d.name,
                records=d.records,
                fingerprint=d.fingerprint,
                classification=d.classification,
            )
            for d in datasets
        ),
    ).to_predicate()
    statement = Statement(
        subjects=tuple(Subject(name=a.path, sha256=a.sha256) for a in run.artifacts)
        or (Subject(name=f"{run.prefix}/empty", sha256=sha256_hex(b"")),),
        predicate_type=BACKUP_PREDICATE_TYPE,
        predicate=manifest_obj,
    )
    manifest = statement.to_json()  # RFC 8785: the manifest is the statement's predicate
    finished = now()
    with app.change() as change:
        if change.uow.backups.status(run.backup_id) is not BackupStatus.RUNNING:
            raise lost(run.backup_id)  # nothing signed: the change rolls back
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
                # every segment table signed here agrees with its artifact's whole-file
                # digests: the writer gives none it did not prove (segment_tables.TableBuilder)
                "tables_proven": True,
            },
        )
    # the signed envelope also goes to the vault, in the clear, for auditors
    try:
        stored = run.writer.store_clear("manifest.dsse.json", envelope_json.encode())
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


def _kind(kind: str) -> BackupKind:
    for known in BACKUP_KINDS:
        if kind == known:
            return known
    raise ValueError(f"not a backup kind: {kind!r}")


def fail(run: Run, exc: BaseException) -> None:
    run.end()
    message = exc.message if isinstance(exc, Error) else f"{type(exc).__name__}: {exc}"
    if isinstance(exc, KeyboardInterrupt):
        message = "interrupted (Ctrl-C)"
    with run.app.read() as uow:
        status = uow.backups.status(run.backup_id)
    if status is BackupStatus.FAILED:  # recorded abandoned by another process meanwhile
        gone = lost(run.backup_id)
        if isinstance(exc, OperationError) and exc.message == gone.message:
            return
        raise gone from exc  # say why it really stopped, not what failed as a consequence
    if status is BackupStatus.COMPLETE:  # signed; only the clear-text manifest copy was cut short
        with run.app.change() as change:
            change.record(
                "backup.manifest_copy_failed", f"backup:{run.backup_id}", {"error": message}
            )
        return
    with run.app.change() as change:
        change.uow.backups.fail(run.backup_id, finished_at=now(), error=message)
        change.record(
            "backup.failed",
            f"backup:{run.backup_id}",
            {
                "error": message,
                "artifacts_written": [a.path for a in run.artifacts],
            },
        )
