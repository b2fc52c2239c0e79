"""Restore drills: restore a backup into a throwaway target, prove the restored data equals the
backup's manifest, run probe queries, time everything against the recovery-time objective, tear
the target down and record a signed result.

This module holds the drill: its phases, its clock, the checks of a named target and the signed
record. The probe language (file format, validation, evaluation) is
:mod:`affidavit.services.probes`. A drill asks the interfaces, never an engine's or a format's
name: the engine class (``record_encoding``, ``default_port``, ``snapshot_format``,
``restore``, ``query_probes``), the engine's scratch server class
(:func:`~affidavit.services.backends.scratch_class`: ``label``, ``preload_format``) and the
backup format's :class:`~affidavit.services.backends.RestoreLayout`.

Phases, each timed on its own (seconds, monotonic clock):

``fetch``
    check the vault's copy of the signed manifest as ``verify`` does
    (:func:`~affidavit.services.verify.check_manifest_copy`: a missing, replaced or differing
    copy is a finding, and the drill goes on), then read every needed artifact's ciphertext
    from the vault into a private temporary folder, checking its size and SHA-256 against the
    catalog;
``decrypt``
    unwrap the backup's age identity and decrypt the artifacts (a file the scratch server
    can start from, a Redis RDB, is decrypted straight into the server's folder);
``load``
    start the scratch server on that file, its start-up being the load (``redis-server``:
    until it answers PING, not ``-LOADING``); else start the scratch server empty
    (SecantusDB) or connect to the user-named empty target, and write every dataset through
    the engine's ``restore`` (MongoDB: documents with their collection options and indexes;
    Redis: typed commands);
``verify``
    re-fingerprint every dataset of the manifest from the restored server (the engine's
    ``iter_records`` and the ``exact`` codec) and require equality with the manifest;
``probes``
    run the probe queries of ``--probe FILE`` (see
    :func:`~affidavit.services.probes.load_probes`).

``restore_seconds`` is fetch + decrypt + load; the drill passes the RTO when the total (all five
phases) is within it. A failure in any phase is a finding (the drill is recorded as failed);
bad input (a malformed probe file, a refused target) raises :class:`InputError` before
anything is fetched or recorded. The scratch server is always stopped by PID, whatever
happens. The result is one unit of work: the signed drill attestation, the ``drill.completed``
event and the catalog row.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from affidavit import __version__
from affidavit.constants import EngineName
from affidavit.crypto.age_reader import AgeFile
from affidavit.crypto.digest import Sha256Stream, sha256_hex
from affidavit.engines.base import Engine
from affidavit.errors import Error, InputError, IntegrityError, OperationError
from affidavit.ledger.attestation import DRILL_PREDICATE_TYPE, Statement, Subject
from affidavit.ledger.manifest_check import ManifestDefect, check_backup_manifest
from affidavit.models.backup import ArtifactRole, Backup, BackupArtifact, BackupStatus
from affidavit.models.checks import CheckCode, Drill, Finding
from affidavit.models.inventory import Source
from affidavit.models.predicates import DrillPredicate
from affidavit.models.progress import Reporter, SilentReporter
from affidavit.models.uri import ConnectionUri
from affidavit.private_temp import open_private, private_folder, sweep
from affidavit.scratch.base import ScratchServer
from affidavit.services.artifacts import CHUNK
from affidavit.services.backends import (
    RestoreLayout,
    engine_class,
    engine_for_uri,
    format_engine,
    restorable_formats,
    restore_layout,
    scratch_class,
    vault_backend,
)
from affidavit.services.context import App
from affidavit.services.fingerprint import (
    diff,
    difference_key,
    fingerprint_datasets,
    fingerprint_records,
    finished,
    prefers_snapshot,
    spool_snapshot,
)
from affidavit.services.keys import keystore_for, unwrap_identity
from affidavit.services.ledger import attest_and_record
from affidavit.services.probes import (
    Probe,
    ReadBackProbes,
    failed_probe_findings,
    load_probes,
    run_query_probes,
)
from affidavit.services.verify import check_manifest_copy
from affidavit.services.verify.segments import default_workers
from affidavit.vaults.base import VaultBackend

SCRATCH = "scratch"
PHASES = ("fetch", "decrypt", "load", "verify", "probes")
_KEYS_NAMED = 20  # differing keys named in a fingerprint-mismatch finding
# what the drill.completed event repeats of the signed predicate (then datasets, findings)
_EVENT_FIELDS = (
    "drill_id", "ok", "target", "forced", "scratch", "rto_seconds", "restore_seconds",
    "total_seconds", "phases", "fingerprint_match",
)  # fmt: skip


def _now() -> datetime:
    return datetime.now(UTC)


def _before_verify(target_uri: str) -> None:
    """Runs between the load and the verify phase with the restored target's URI. A no-op;
    tests replace it to simulate a lossy restore (a record changed before re-fingerprinting)."""


def new_drill_id(moment: datetime) -> str:
    """``dr-20261128T074512Z-3f9a1c``: sortable by time, unique by the random suffix."""
    return f"dr-{moment.strftime('%Y%m%dT%H%M%SZ')}-{os.urandom(3).hex()}"


# -- targets ----------------------------------------------------------------------------------


def _restore_plan(backup: Backup) -> tuple[EngineName, RestoreLayout]:
    """The engine a backup restores into and how its format is restored; ``InputError`` for
    a format drills cannot restore."""
    layout = restore_layout(backup.format)
    if layout is None:
        *first, last = restorable_formats()
        raise InputError(
            f"backup {backup.id} is a {backup.format} backup, which drills cannot restore yet",
            hint=f"drills restore {', '.join(first)} and {last} backups",
        )
    return format_engine(backup.format), layout


def _endpoints(uri: ConnectionUri) -> set[str]:
    """``host:port`` of every host, normalised (lower case, default port, loopback names)."""
    out = set()
    for host in uri.hosts:
        name, port = host, str(engine_class(uri.engine).default_port)
        if host.startswith("["):
            name, _, rest = host[1:].partition("]")
            port = rest.lstrip(":") or port
        elif host.count(":") == 1:
            name, port = host.split(":")
        name = name.lower()
        if name in ("localhost", "::1", "127.0.0.1"):
            name = "loopback"
        out.add(f"{name}:{port}")
    return out


def _registered_source(
    engine: EngineName, target: ConnectionUri, sources: list[Source]
) -> Source | None:
    wanted = _endpoints(target)
    for source in sources:
        if source.engine is not engine:
            continue
        try:
            known = ConnectionUri.parse(engine, source.uri)
        except InputError:
            continue
        if wanted & _endpoints(known):
            return source
    return None


def _check_target(
    app: App, engine: EngineName, target: str, *, force: bool
) -> ConnectionUri | None:
    """None for a scratch target, else the checked URI of an empty, allowed target."""
    if target == SCRATCH:
        return None
    uri = ConnectionUri.parse(engine, target)
    with app.read() as uow:
        sources = uow.sources.list()
    source = _registered_source(engine, uri, sources)
    if source is not None and not force:
        raise InputError(
            f"the target {uri.redacted} is the registered source {source.name!r}",
            hint="a drill never restores into a registered source; pass --force only if it "
            "really is a disposable copy",
        )
    with engine_for_uri(engine, uri, password=None, timeout=app.settings.connect_timeout) as e:
        full = [(c.name, c.records) for c in e.count_all() if c.records]
    if full:
        listed = ", ".join(f"{n} ({r:,} records)" for n, r in full[:5])
        raise InputError(
            f"the target {uri.redacted} is not empty: {listed}",
            hint="a drill restores into an empty target only",
        )
    return uri


# -- the drill --------------------------------------------------------------------------------


@dataclass
class _Timer:
    phases: dict[str, float] = field(default_factory=lambda: dict.fromkeys(PHASES, 0.0))
    current: str = "fetch"

    def run(self, phase: str, fn: Callable[[], Any]) -> Any:
        self.current = phase
        start = time.monotonic()
        try:
            return fn()
        finally:
            self.phases[phase] += time.monotonic() - start

    @property
    def restore_seconds(self) -> float:
        return self.phases["fetch"] + self.phases["decrypt"] + self.phases["load"]

    @property
    def total_seconds(self) -> float:
        return sum(self.phases.values())


@dataclass
class _State:
    """What a drill learnt so far (filled in phase by phase)."""

    backup: Backup
    engine: EngineName
    layout: RestoreLayout
    workdir: Path
    rep: Reporter
    findings: list[Finding] = field(default_factory=list)
    datasets: list[dict[str, Any]] = field(default_factory=list)
    probes: list[dict[str, Any]] = field(default_factory=list)
    fetched: dict[str, Path] = field(default_factory=dict)
    plain: dict[str, Path] = field(default_factory=dict)
    scratch: ScratchServer | None = None
    scratch_info: dict[str, Any] | None = None
    uri: str | None = None
    watch: ReadBackProbes | None = None  # probes answered from the records read back


def _fetch(vault: VaultBackend, artifact: BackupArtifact, dest: Path) -> None:
    """Copy one artifact's ciphertext out of the vault, checking size and SHA-256."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    digest = Sha256Stream()
    with vault.open(artifact.path) as src, open_private(dest) as out:
        while chunk := src.read(CHUNK):
            digest.update(chunk)
            out.write(chunk)
    if digest.length != artifact.size or digest.hexdigest() != artifact.sha256:
        raise IntegrityError(
            f"{artifact.path} does not match the catalog: {digest.length:,} bytes, SHA-256 "
            f"{digest.hexdigest()[:16]}..., expected {artifact.size:,} bytes, "
            f"{artifact.sha256[:16]}..."
        )


def _decrypt(src: Path, dest: Path, identity: str) -> None:
    """Decrypt the fetched age file ``src`` into ``dest`` with the parallel age reader
    (:class:`~affidavit.crypto.age_reader.AgeFile`: ranges of chunks opened on every core,
    written in order; about twice pyrage's speed on 2 cores, docs/performance.md). Raises
    :class:`IntegrityError` when it does not decrypt (``dest`` then holds no more than the
    authentic chunks before the failure, and the drill fails)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    with AgeFile.open(src, identity) as age, open_private(dest) as fout:
        for piece in age.plaintext(workers=default_workers()):
            fout.write(piece)


def run_drill(
    app: App,
    backup_id: str,
    *,
    target: str = SCRATCH,
    rto_seconds: float | None = None,
    probe_file: Path | None = None,
    force: bool = False,
    reporter: Reporter | None = None,
) -> Drill:
    """Restore ``backup_id`` into ``target`` (``"scratch"`` or an empty target's URI), prove
    it, time it against the RTO (``rto_seconds``, else the ``rto_seconds`` setting) and record
    the signed result. Returns the drill, passed or failed; raises :class:`InputError` for bad
    input (nothing recorded) and :class:`OperationError` when no scratch server can run."""
    rep = reporter or SilentReporter()
    with app.read() as uow:
        backup = uow.backups.get(backup_id)
        vault = uow.vaults.get(backup.vault)
    if backup.status is not BackupStatus.COMPLETE:
        raise InputError(f"backup {backup_id} is {backup.status}, not complete")
    engine, layout = _restore_plan(backup)
    rto = app.settings.rto_seconds if rto_seconds is None else rto_seconds
    if not rto > 0:
        raise InputError(f"the RTO must be more than 0 seconds, not {rto}")
    encoding = engine_class(engine).record_encoding
    probes = (
        load_probes(probe_file, encoding=encoding, datasets=[d.name for d in backup.datasets])
        if probe_file is not None
        else []
    )
    artifacts = layout.artifacts(backup)
    target_uri = _check_target(app, engine, target, force=force)
    if force and target_uri is not None:
        rep.stage(f"unsafe: --force restores into {target_uri.redacted}")
    backend = vault_backend(vault)
    started = _now()
    timer = _Timer()
    sweep()  # what killed drills left (their scratch servers first), before making more
    with private_folder("drill") as tmp:
        state = _State(backup=backup, engine=engine, layout=layout, workdir=tmp, rep=rep)
        state.findings.extend(_signed_manifest_findings(app, backup))
        if target_uri is None:  # fail before the clock starts when the server is missing
            state.scratch = _new_scratch(engine, state.workdir)
        try:
            timer.run("fetch", lambda: _fetch_all(state, backend, artifacts))
            timer.run("decrypt", lambda: _decrypt_all(app, state, artifacts))
            timer.run("load", lambda: _load(app, state, target_uri))
            assert state.uri is not None
            _before_verify(state.uri)
            timer.run("verify", lambda: _verify(app, state, backend, probes))
            if probes:
                timer.run("probes", lambda: _probes(app, state, probes))
        except Error as exc:
            state.findings.append(
                Finding(
                    code=CheckCode.phase_failed(timer.current).value,
                    message=f"the {timer.current} phase failed: {exc.message}",
                    subject=backup_id,
                    details={"error": exc.message, "hint": exc.hint},
                )
            )
        finally:
            if state.scratch is not None:
                state.scratch_info = {
                    "kind": state.scratch.kind,
                    "pid": state.scratch.pid,
                    "port": state.scratch.port,
                }
                state.scratch.stop()
    finished = _now()
    return _record(
        app,
        state,
        timer,
        started=started,
        finished=finished,
        rto=rto,
        target=_target_label(state, target_uri),
        forced=force and target_uri is not None,
    )


def _target_label(state: _State, uri: ConnectionUri | None) -> str:
    if uri is None:
        assert state.scratch is not None
        return state.scratch.label
    return uri.redacted


def _new_scratch(engine: EngineName, workdir: Path) -> ScratchServer:
    """The engine's scratch server, not started, in a folder of the drill's own."""
    cls = scratch_class(engine)
    folder = workdir / cls.kind
    folder.mkdir()
    return cls(workdir=folder)


def _preloading(state: _State) -> bool:
    """Whether the scratch server starts from the backup's one data file (its start-up is
    the load) rather than empty."""
    return (
        state.scratch is not None
        and not state.layout.per_dataset
        and state.scratch.preloads(state.backup.format)
    )


def _fetch_all(state: _State, vault: VaultBackend, artifacts: list[BackupArtifact]) -> None:
    state.rep.stage("checking the vault's copy of the signed manifest")
    state.findings.extend(check_manifest_copy(vault, state.backup).findings)
    state.rep.task("fetching artifacts", len(artifacts))
    for artifact in artifacts:
        dest = state.workdir / "cipher" / artifact.path
        _fetch(vault, artifact, dest)
        state.fetched[artifact.path] = dest
        state.rep.advance()
    state.rep.finish()


def _decrypt_all(app: App, state: _State, artifacts: list[BackupArtifact]) -> None:
    state.rep.stage("decrypting")
    identity = unwrap_identity(keystore_for(app.settings), state.backup)
    for artifact in artifacts:
        if _preloading(state):
            # straight into the scratch server's folder: its start-up is the load
            assert state.scratch is not None
            dest = state.scratch.preload_path
        else:
            dest = state.workdir / "plain" / artifact.path.removesuffix(".age")
        _decrypt(state.fetched[artifact.path], dest, identity)
        state.plain[artifact.path] = dest
        state.fetched[artifact.path].unlink()  # the ciphertext copy is no longer needed


def _load(app: App, state: _State, target: ConnectionUri | None) -> None:
    """Start the scratch server on the backup's data file (the load itself), or start it
    empty or take the named target and write every dataset through the engine's
    ``restore``, as the backup format's layout reads them (:meth:`RestoreLayout.items`)."""
    scratch = state.scratch
    if scratch is not None and _preloading(state):
        state.rep.stage(f"loading the {state.backup.format} backup into {scratch.label}")
        scratch.start_preloaded(next(iter(state.plain.values())))
        state.uri = scratch.uri
        return
    if scratch is not None:
        state.rep.stage(f"starting {scratch.label}")
        scratch.start()
        uri = ConnectionUri.parse(state.engine, scratch.uri)
    else:
        assert target is not None
        uri = target
    state.uri = uri.text
    counts = {d.name: d.records for d in state.backup.datasets}
    state.rep.stage(f"reading the {state.backup.format} backup")
    with engine_for_uri(
        state.engine, uri, password=None, timeout=max(app.settings.connect_timeout, 30)
    ) as engine:
        for name, records, metadata in state.layout.items(state.backup, state.plain):
            state.rep.task(f"loading {name}", counts.get(name))
            engine.restore(name, _counted(records, state.rep), metadata=metadata)
            state.rep.finish()


_T = TypeVar("_T")


def _counted(items: Iterable[_T], rep: Reporter) -> Iterator[_T]:
    """``items`` as they are, counted on the progress bar in steps of 1,000."""
    for n, item in enumerate(items, start=1):
        if n % 1000 == 0:
            rep.advance(1000)
        yield item


def _verify(app: App, state: _State, vault: VaultBackend, probes: list[Probe]) -> None:
    """Re-fingerprint what the target holds now and compare it with the manifest, dataset by
    dataset. A target whose engine streams whole-server snapshots (a scratch server; a named
    target of 100,000 keys or more that allows it, such as Redis' ``SYNC``) is read back as a
    whole, in one snapshot taken as ``backup run`` takes one (:func:`_verify_snapshot`);
    every other target is read record by record (MongoDB scans, Redis SCAN and typed reads).
    Probes that the engine cannot answer with queries are answered from the records read
    back here (:class:`~affidavit.services.probes.ReadBackProbes`)."""
    assert state.uri is not None
    uri = ConnectionUri.parse(state.engine, state.uri)
    with engine_for_uri(
        state.engine, uri, password=None, timeout=max(app.settings.connect_timeout, 30)
    ) as engine:
        if probes and engine.query_probes() is None:
            state.watch = ReadBackProbes(probes)
        watch = state.watch
        names = [d.name for d in state.backup.datasets]
        if engine.snapshot_format is not None and (
            state.scratch is not None or prefers_snapshot(engine, names)
        ):
            if _verify_snapshot(app, state, vault, watch, engine):
                return
            state.rep.stage("the target refuses a snapshot: reading it record by record")
        for dataset in state.backup.datasets:
            state.rep.task(f"re-fingerprinting {dataset.name}", dataset.records)
            index = _restored_index(state, dataset.name)
            records: Iterable[Any] = engine.iter_records(dataset.name)
            if watch is not None:
                records = watch.watch(dataset.name, records)
            result = fingerprint_records(
                records,
                encoding=engine.record_encoding,
                profile="exact",
                reporter=state.rep,
                index=index,
                dataset=dataset.name,
            )
            state.rep.finish()
            _compare(app, state, vault, dataset.name, restored=result.fingerprint.text, index=index)


def _restored_index(state: _State, dataset: str) -> Path:
    index = state.workdir / "restored" / f"{dataset}.afpidx"
    index.parent.mkdir(parents=True, exist_ok=True)
    return index


def _verify_snapshot(
    app: App, state: _State, vault: VaultBackend, watch: ReadBackProbes | None, engine: Engine
) -> bool:
    """The target's keyspace as the server itself serialises it (for Redis an RDB streamed
    over ``SYNC``, read as of the moment it was asked for, structure and CRC-64 checked),
    through the one fingerprint pass of ``backup run`` (:func:`fingerprint_datasets`): about
    a second per million keys where reading them back key by key takes a minute. Probes see
    every record of that pass. False (nothing compared) when the server refuses."""
    names = [d.name for d in state.backup.datasets]
    state.rep.stage("reading the restored keyspace back (one snapshot of it)")
    spool = state.workdir / "restored" / "restored.snapshot"
    spool.parent.mkdir(parents=True, exist_ok=True)
    reader = spool_snapshot(engine, spool)
    if reader is None:
        return False
    accumulators = fingerprint_datasets(
        reader, names, profile="exact", observe=watch.see if watch is not None else None
    )
    for result in finished(
        accumulators,
        index_for=lambda name: _restored_index(state, name),
        encoding=engine.record_encoding,
    ):
        assert result.index is not None
        _compare(
            app, state, vault, result.name, restored=result.fingerprint.text, index=result.index
        )
    return True


def _compare(
    app: App, state: _State, vault: VaultBackend, name: str, *, restored: str, index: Path
) -> None:
    """Record one dataset's restored fingerprint against the manifest's."""
    expected = next(d.fingerprint for d in state.backup.datasets if d.name == name)
    match = restored == expected
    state.datasets.append(
        {"name": name, "expected": expected, "restored": restored, "match": match}
    )
    if not match:
        state.findings.append(
            _mismatch(
                app,
                state,
                vault=vault,
                dataset=name,
                expected=expected,
                restored=restored,
                restored_index=index,
            )
        )


def _mismatch(
    app: App,
    state: _State,
    *,
    vault: VaultBackend,
    dataset: str,
    expected: str,
    restored: str,
    restored_index: Path,
) -> Finding:
    """A ``fingerprint-mismatch`` finding naming the differing keys (from the backup's
    fingerprint index), or saying why the keys cannot be named."""
    details: dict[str, Any] = {"expected": expected, "restored": restored}
    keys: list[dict[str, Any]] = []
    index = next(
        (
            a
            for a in state.backup.artifacts
            if a.role is ArtifactRole.INDEX and a.dataset == dataset and not a.deleted
        ),
        None,
    )
    if index is None:
        details["keys_unavailable"] = "the backup has no fingerprint index for this dataset"
    else:
        try:
            cipher = state.workdir / "cipher" / index.path
            _fetch(vault, index, cipher)
            plain = state.workdir / "plain" / index.path.removesuffix(".age")
            identity = unwrap_identity(keystore_for(app.settings), state.backup)
            _decrypt(cipher, plain, identity)
            result, reader = diff(plain, restored_index, limit=_KEYS_NAMED)
            header = reader.header
            details["counts"] = {c.value: n for c, n in result.counts.items() if n}
            keys = [
                {
                    "change": d.change.value,
                    "key": difference_key(header, d),
                }
                for d in result.differences
            ]
        except Error as exc:
            details["keys_unavailable"] = exc.message
    details["keys"] = keys
    named = ", ".join(f"{k['key']} ({k['change']})" for k in keys[:5])
    return Finding(
        code=CheckCode.FINGERPRINT_MISMATCH.value,
        message=f"{dataset}: the restored data differs from the backup"
        + (f": {named}" if named else ""),
        subject=dataset,
        details=details,
    )


def _probes(app: App, state: _State, probes: list[Probe]) -> None:
    """Each probe's result: from the records the verify phase read back, or queried."""
    state.rep.stage("running probes")
    if state.watch is not None:
        state.probes = state.watch.results()
    else:
        assert state.uri is not None
        uri = ConnectionUri.parse(state.engine, state.uri)
        with engine_for_uri(
            state.engine, uri, password=None, timeout=app.settings.connect_timeout
        ) as engine:
            queries = engine.query_probes()
            if queries is None:
                raise OperationError(f"the {engine.name} engine cannot run query probes")
            state.probes = run_query_probes(queries, probes)
    state.findings.extend(failed_probe_findings(state.probes))


def _record(
    app: App,
    state: _State,
    timer: _Timer,
    *,
    started: datetime,
    finished: datetime,
    rto: float,
    target: str,
    forced: bool,
) -> Drill:
    backup = state.backup
    restore_seconds = round(timer.restore_seconds, 6)  # as signed: catalog = attestation
    total = timer.total_seconds
    completed = not any(
        f.code.endswith("-failed") and f.code != CheckCode.PROBE_FAILED for f in state.findings
    )
    if completed and total > rto:
        state.findings.append(
            Finding(
                code=CheckCode.RTO_EXCEEDED.value,
                message=f"the drill took {total:.3f}s (restore {restore_seconds:.3f}s), "
                f"more than the RTO of {rto:g}s",
                subject=backup.id,
                details={
                    "total_seconds": total,
                    "restore_seconds": restore_seconds,
                    "rto_seconds": rto,
                },
            )
        )
    fingerprint_match = bool(state.datasets) and all(d["match"] for d in state.datasets)
    if not backup.datasets and completed:
        fingerprint_match = True  # an empty backup restores to nothing, as recorded
    ok = completed and fingerprint_match and not state.findings
    drill_id = new_drill_id(started)
    phases = {k: round(v, 6) for k, v in timer.phases.items()}
    predicate = {
        "drill_id": drill_id,
        "backup_id": backup.id,
        "manifest_sha256": backup.manifest_sha256,
        "engine": state.engine.value,
        "target": target,
        "forced": forced,
        "scratch": state.scratch_info,
        "started_at": started.isoformat(),
        "finished_at": finished.isoformat(),
        "ok": ok,
        "rto_seconds": rto,
        "restore_seconds": round(restore_seconds, 6),
        "total_seconds": round(total, 6),
        "phases": phases,
        "fingerprint_match": fingerprint_match,
        "datasets": state.datasets,
        "probes": state.probes,
        "findings": [f.to_json() for f in state.findings],
        "tool": {"name": "affidavit", "version": __version__},
    }
    # what is signed is a valid drill result (models/predicates.py), byte for byte as built
    predicate = DrillPredicate.from_predicate(predicate).to_predicate()
    subjects = tuple(
        Subject(name=a.path, sha256=a.sha256)
        for a in backup.artifacts
        if a.role in (ArtifactRole.DATA, ArtifactRole.METADATA) and not a.deleted
    ) or (
        Subject(
            name=f"backup:{backup.id}", sha256=sha256_hex((backup.manifest_sha256 or "").encode())
        ),
    )
    statement = Statement(
        subjects=subjects, predicate_type=DRILL_PREDICATE_TYPE, predicate=predicate
    )
    with app.change() as change:
        envelope = attest_and_record(change, statement).to_json()
        drill = Drill(
            id=drill_id,
            backup_id=backup.id,
            target=target,
            started_at=started,
            finished_at=finished,
            ok=ok,
            rto_seconds=rto,
            restore_seconds=restore_seconds,
            fingerprint_match=fingerprint_match,
            phases=phases,
            probes=tuple(state.probes),
            findings=tuple(state.findings),
            envelope=envelope,
        )
        change.uow.checks.add_drill(drill)
        change.record(
            "drill.completed",
            f"backup:{backup.id}",
            {k: predicate[k] for k in _EVENT_FIELDS}
            | {
                "datasets": {d["name"]: d["restored"] for d in state.datasets},
                "findings": sorted({f.code for f in state.findings}),
            },
        )
    return drill


def _signed_manifest_findings(app: App, backup: Backup) -> list[Finding]:
    """The drill's expectations (artifact digests, dataset fingerprints) come from catalog
    rows; this checks them against the signed manifest
    (:func:`~affidavit.ledger.manifest_check.check_backup_manifest`, as ``verify`` does), so
    that a catalog edited behind affidavit's back cannot make a drill pass. A drill reports
    what the check finds as ``manifest-signature-invalid`` (nothing signed can be read) or
    ``manifest-mismatch`` (the catalog or the statement disagrees with the signed manifest)."""
    identity = app.ledger_identity()
    if identity is None or backup.envelope is None:
        return [
            Finding(
                code=CheckCode.MANIFEST_SIGNATURE_INVALID.value,
                message="the backup has no signed manifest to check the drill against",
                subject=backup.id,
            )
        ]
    checked = check_backup_manifest(backup, {identity.keyid: identity.signer.key.public_key})
    findings: list[Finding] = []
    rows_differ = False
    for issue in checked.issues:
        if issue.defect in (ManifestDefect.ARTIFACTS, ManifestDefect.DATASETS):
            rows_differ = True
            continue
        code = CheckCode.MANIFEST_MISMATCH  # the catalog or the statement disagrees
        if issue.code is CheckCode.MANIFEST_SIGNATURE_INVALID:  # nothing signed to go by
            code = CheckCode.MANIFEST_SIGNATURE_INVALID
        message = issue.message
        if issue.defect is ManifestDefect.SIGNATURE:
            message = f"the manifest's signature does not verify: {issue.reason}"
        findings.append(Finding(code=code.value, message=message, subject=backup.id))
    if rows_differ:
        findings.append(
            Finding(
                code=CheckCode.MANIFEST_MISMATCH.value,
                message="the catalog's artifacts or fingerprints differ from the signed manifest",
                subject=backup.id,
            )
        )
    return findings


def list_drills(app: App, backup_id: str | None = None) -> list[Drill]:
    """Recorded drills (of one backup), newest first. What killed drills left behind (their
    private folders, a scratch server still running) is swept first."""
    sweep()
    with app.read() as uow:
        if backup_id is not None:
            uow.backups.get(backup_id)  # NotFound for an unknown backup
        return uow.checks.drills(backup_id)


def drill_seconds(drill: Drill) -> float:
    """The drill's total duration (all phases)."""
    return float(sum(drill.phases.values()))
