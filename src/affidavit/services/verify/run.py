"""One verification from its arguments to its recorded result (:func:`verify_backup`).

The checks run in this order, each adding its findings to the one :class:`~.state.Run`:
the signed manifest and its vault copy; the source's identity (before the live server is
reached, and fail before reading a GiB); the backup's vault folder; the key; each artifact
chosen (indexes first, they name keys; then metadata; then data, fingerprinted as it is
read); the fingerprints; and the live source. An outage (:class:`OperationError`) records
only ``verification.could_not_run``.
"""

from __future__ import annotations

import math
from datetime import datetime
from pathlib import Path

from affidavit.errors import InputError, OperationError
from affidavit.models.backup import ArtifactRole, Backup, BackupStatus
from affidavit.models.checks import Verification
from affidavit.models.inventory import Source, Vault
from affidavit.models.predicates import VerificationKind
from affidavit.models.progress import Reporter, SilentReporter
from affidavit.private_temp import private_folder, sweep
from affidavit.services.backends import engine_for, vault_backend
from affidavit.services.context import App
from affidavit.services.ledger import _identity
from affidavit.services.verify.against_source import check_source_identity, compare_with_source
from affidavit.services.verify.cluster import Cluster, ClusterTls, check_cluster_url
from affidavit.services.verify.content import ContentCheck, one_pass
from affidavit.services.verify.reading import ArtifactReader
from affidavit.services.verify.recording import Outcome, record
from affidavit.services.verify.sampling import new_seed, select
from affidavit.services.verify.segments import SegmentUse, default_workers
from affidavit.services.verify.state import Expected, Run, now, read_signed
from affidavit.services.verify.vouch import find_vouch
from affidavit.vaults.base import VaultBackend


def verify_backup(
    app: App,
    backup_id: str,
    *,
    against_source: bool = False,
    sample_percent: float | None = None,
    seed: str | None = None,
    workers: int | None = None,
    cluster: str | None = None,
    cluster_tls: ClusterTls | None = None,
    connected: Cluster | None = None,
    reporter: Reporter | None = None,
    deep: bool = False,
) -> Verification:
    """Verify a backup, record the signed result and return it.

    ``sample_percent`` (0 < p <= 100) checks a seeded random subset of the data artifacts;
    ``seed`` repeats an earlier sample. ``against_source`` also compares each dataset with
    the live source now. Raises :class:`NotFound` / :class:`InputError` (exit 2) for an
    unknown or deleted backup or bad arguments, and :class:`OperationError` (exit 3) when
    the vault or the source cannot be read (recorded only as ``verification.could_not_run``).
    ``workers`` (default: the cores available) is how many segments of an artifact with a
    signed segment table are checked at a time (:mod:`.segments`). ``cluster``
    (``tls://HOST:PORT``, or ``tcp://`` on loopback; ``cluster_tls``: the client's TLS files)
    sends those segments to a Dask cluster instead (:mod:`.cluster`): a scheduler that does
    not answer is :class:`OperationError` before anything is read or recorded.
    ``connected``: a cluster connection already open (``run-due --cluster`` shares one
    among its verifications), used instead of ``cluster`` and left open.

    An artifact with a segment table is verified **deep** (whole-file and plaintext digests
    too) unless the ledger vouches a passed deep verification of the same signed manifest
    (:func:`.vouch.deep_vouch`); then **fast** (docs/verification.md). ``deep`` forces deep.
    """
    rep = reporter or SilentReporter()
    if sample_percent is not None and not (
        math.isfinite(sample_percent) and 0 < sample_percent <= 100
    ):
        raise InputError(
            f"--sample {sample_percent:g} is outside 0 < PERCENT <= 100",
            hint="for example --sample 10 checks a tenth of the data artifacts",
        )
    if workers is not None and not 1 <= workers <= 1024:
        raise InputError(
            f"--workers {workers} is outside 1..1024",
            hint="leave it out for one per core this process may run on",
        )
    if seed is not None and sample_percent is None:
        raise InputError("a seed repeats a sample: give --sample PERCENT with it")
    if seed is not None and not (1 <= len(seed) <= 64 and seed.isprintable()):
        raise InputError("a seed is 1 to 64 printable characters")
    if cluster is not None:
        check_cluster_url(cluster)
    with app.read() as uow:
        backup = uow.backups.get(backup_id)
        vault = uow.vaults.get(backup.vault)
        source = None
        if against_source and backup.source is not None:
            source = uow.sources.get(backup.source)
    if backup.status is BackupStatus.DELETED:
        deleted = backup.deleted_at.isoformat() if backup.deleted_at else "earlier"
        raise InputError(
            f"backup {backup_id} was deleted ({deleted}): its artifacts are gone",
            hint=f"its manifest and fingerprints stay on record: `affidavit backup show "
            f"{backup_id}`; verify a newer backup",
        )
    if against_source and source is None:
        raise InputError(
            f"backup {backup_id} has no registered source to compare with",
            hint="it was ingested without --source",
        )
    _identity(app)  # no ledger key: exit 2 before anything is read
    kind: VerificationKind = "sample" if sample_percent is not None else (
        "against-source" if against_source else "full"
    )  # fmt: skip
    if sample_percent is not None and seed is None:
        seed = new_seed()
    remote = None
    if cluster is not None and connected is None:  # no answer: exit 3, nothing read or recorded
        remote = Cluster(cluster, tls=cluster_tls, timeout=app.settings.connect_timeout).connect()
    try:
        return _verify(
            app,
            backup,
            vault,
            source,
            kind=kind,
            rep=rep,
            sample_percent=sample_percent,
            seed=seed,
            workers=workers or default_workers(),
            cluster=connected or remote,
            deep=deep,
        )
    finally:
        if remote is not None:
            remote.close()


def _verify(
    app: App,
    backup: Backup,
    vault: Vault,
    source: Source | None,
    *,
    kind: VerificationKind,
    rep: Reporter,
    sample_percent: float | None,
    seed: str | None,
    workers: int,
    cluster: Cluster | None,
    deep: bool,
) -> Verification:
    """Run the checks in a private folder and record the outcome; an outage records only
    ``verification.could_not_run``."""
    sweep()  # plaintext spools of killed commands (affidavit.private_temp)
    started = now()
    try:
        with private_folder("verify") as tmp:  # plaintext: swept if this process is killed
            outcome = _check(
                app,
                backup,
                vault_backend(vault),
                source,
                tmp=tmp,
                rep=rep,
                kind=kind,
                started=started,
                sample_percent=sample_percent,
                seed=seed,
                workers=workers,
                cluster=cluster,
                deep=deep,
            )
    except OperationError as exc:
        with app.change() as change:
            change.record(
                "verification.could_not_run",
                f"backup:{backup.id}",
                {"kind": kind, "error": exc.message},
            )
        raise
    return record(app, outcome)


def _check(
    app: App,
    backup: Backup,
    vault: VaultBackend,
    source: Source | None,
    *,
    tmp: Path,
    rep: Reporter,
    kind: VerificationKind,
    started: datetime,
    sample_percent: float | None,
    seed: str | None,
    workers: int,
    cluster: Cluster | None = None,
    deep: bool = True,
) -> Outcome:
    """Run every check of one verification; what it found."""
    rep.stage(f"checking the signed manifest of {backup.id}")
    signed, findings = read_signed(app, backup)
    run = Run(
        app=app,
        backup=backup,
        vault=vault,
        rep=rep,
        tmp=tmp,
        signed=signed,
        workers=workers,
        cluster=cluster.run if cluster is not None else None,
    )
    run.findings.extend(findings)
    tabled = {a.path for a in signed.artifacts if a.segments is not None}
    if not deep and tabled:  # fast when the ledger vouches this manifest's tables
        _vouch(run, signed.manifest_sha256)
    reader = ArtifactReader(run)
    reader.check_copy()
    engine = None
    # the source must be the one the signed manifest names (a look-alike server holding
    # the backup's data is never read); then reach it: fail before reading a GiB
    if source is not None and check_source_identity(run, source):
        engine = engine_for(source, app.settings)
        engine.__enter__()
    try:
        if engine is not None:
            engine.describe()
        reader.check_unexpected()
        reader.unwrap()
        artifacts, coverage = select(signed.artifacts, sample_percent, seed)
        content = ContentCheck(run, reader)
        fmt = backup.format
        # a format whose datasets share one artifact (an RDB, an archive) is spooled and
        # read in one pass; one with a file per dataset is fingerprinted as it decrypts
        shared = one_pass(fmt)
        datasets_checked: set[str] = set()
        # every artifact's segments on one pool, in this order: the next one's start while
        # the one before is merged and finished (issue 18)
        reader.start_pipeline([(art, _segment_use(art, shared, tmp)) for art in artifacts])
        for art in artifacts:
            if art.role == ArtifactRole.INDEX.value and art.dataset:
                content.stored_index(art)
            elif art.role == ArtifactRole.DATA.value and shared is False:
                if content.dataset_file(art) and art.dataset:
                    datasets_checked.add(art.dataset)
            elif art.role == ArtifactRole.DATA.value and shared:
                if content.shared_file(art, fmt):
                    datasets_checked.update(signed.fingerprints)
            else:
                reader.check_artifact(art, None)
        content.compare_fingerprints()
        coverage["datasets_checked"] = sorted(datasets_checked)
        coverage["datasets_total"] = len(signed.fingerprints)
        against = None
        if source is not None and engine is not None:
            against = compare_with_source(run, source, engine, content.indexes)
            coverage["against_source"] = True
        elif source is not None:  # source-mismatch: the live server was not read
            against = {"source": source.name, "compared": False, "datasets": {}}
            coverage["against_source"] = False
    finally:
        reader.stop_pipeline()
        if engine is not None:
            engine.__exit__(None, None, None)
    return Outcome(
        backup=backup,
        kind=kind,
        started=started,
        sample_percent=sample_percent,
        seed=seed,
        findings=tuple(run.findings),
        checked=len(reader.checked_paths),
        observed=reader.observed,
        copy_path=reader.copy_path,
        copy_sha256=reader.copy_sha256,
        coverage=coverage,
        against=against,
        vouched_by=run.vouched_by,
        vouched_by_action=run.vouched_by_action,
        manifest_sha256=signed.manifest_sha256,
        # a deep run of every artifact with a table, each proven on its segment path
        tables_proven=run.deep and kind != "sample" and bool(tabled) and tabled <= reader.proven,
    )


def _vouch(run: Run, manifest_sha256: str | None) -> None:
    """Make ``run`` fast when the ledger vouches the tables of its signed manifest: the
    backup's writer proved them (unless ``verify_first_run = "deep"``), or a deep run did."""
    written = run.app.settings.verify_first_run == "fast"
    vouch = find_vouch(run.app, run.backup.id, manifest_sha256, written=written)
    if vouch is not None:
        run.vouched_by, run.vouched_by_action = vouch.seq, vouch.action


def _segment_use(art: Expected, shared: bool | None, tmp: Path) -> SegmentUse | None:
    """What the loop of :func:`_check` will ask of ``art``'s segments (its content check's
    :class:`SegmentUse`; the spool's path is the pipeline's own until it is claimed)."""
    if art.role == ArtifactRole.INDEX.value and art.dataset:
        return SegmentUse(spool=tmp / "stored")
    if art.role == ArtifactRole.DATA.value and shared is False:
        return SegmentUse(frame=True)
    if art.role == ArtifactRole.DATA.value and shared:
        return SegmentUse(spool=tmp / "data")
    return SegmentUse()
