"""One export run: a gated operation (``export.run``, docs/approvals.md).

:func:`run_export` plans first and refuses bad input before anything is recorded: the spec
version must be approved by a second person (as the ledger says), the recipient's key
possession proven (as the ledger says), the backup complete with a signed manifest that
verifies (or, for a spec reading its live source, the source reachable and holding the
dataset: :mod:`.sources`), restricted data needs the recipient's DPA reference, and neither
the output nor its manifest may exist at the destination (a folder, or an S3 bucket:
:mod:`.destinations`). For an authenticated requester a dry pass computes what the approver
sees (:mod:`.preview`: counts, and a sample sealed in the home); then the run passes the
gate (an authenticated requester gets a request that another person approves) and records
``export.requested``.

The work streams, in one pass and bounded memory (:class:`~.passes.RecordPass`): the
dataset's artifacts are fetched from the vault and decrypted into a private folder; each BSON
document is decoded once, minimised and transformed, checked against the contract (a failing
record is excluded and counted), encoded (JSON lines, CSV or Parquet), hashed, fingerprinted
(``logical`` profile) and encrypted to the recipient's age key into a hidden file. An
approved run must reach the counts its approver was shown.

Then, in one transaction: the output is delivered (linked to its name beside a folder, never
over an existing file; uploaded, then its manifest, to S3), the signed export manifest (an
in-toto statement with the export predicate, DSSE with the ledger key) written beside it, the
run row closed and ``attestation.created`` and ``export.completed`` recorded with the run's
figures against its spec's SLO, and ``request.executed`` for an approved request. A run whose
contract fails records ``export.blocked`` and delivers nothing (exit 1); a run that fails
records ``export.failed`` and delivers nothing.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, BinaryIO, Final

from affidavit.constants import Classification, EngineName
from affidavit.crypto.age import encrypt_chunks
from affidavit.crypto.digest import Sha256Stream, sha256_hex
from affidavit.crypto.dsse import Envelope
from affidavit.crypto.tokens import new_id
from affidavit.errors import (
    Error,
    InputError,
    IntegrityError,
    InternalError,
    OperationError,
)
from affidavit.fingerprint.accumulator import Accumulator
from affidavit.formats.bson_codec.extjson_fast import logical_record_of
from affidavit.ledger.attestation import EXPORT_PREDICATE_TYPE, Statement, Subject
from affidavit.ledger.manifest_check import check_backup_manifest
from affidavit.models.approval import GatedOperation
from affidavit.models.backup import Backup, BackupStatus
from affidavit.models.export import (
    ExportRun,
    ExportSpec,
    ExportStatus,
    OutputFormat,
    Recipient,
    SpecVersion,
    parse_spec,
)
from affidavit.models.manifest import ManifestDataset
from affidavit.private_temp import private_folder
from affidavit.services.backends import format_engine, restore_layout
from affidavit.services.context import App
from affidavit.services.exports.consent import load_consents_for
from affidavit.services.exports.destinations import (
    is_s3,
    refuse_existing_object,
    remove_objects,
    s3_backend,
    upload,
)
from affidavit.services.exports.encodings import SUFFIXES, Encoder
from affidavit.services.exports.files import refuse_existing, remove_quietly, write_new
from affidavit.services.exports.parallel import MAX_WORKERS, default_workers, parallel_pass
from affidavit.services.exports.passes import MANIFEST_SUFFIX, Plan, RecordPass, Tally, counts
from affidavit.services.exports.preview import Preview, make_preview, preview_counts
from affidavit.services.exports.recipients import vouched_key
from affidavit.services.exports.records import ContractCheck, encode_line
from affidavit.services.exports.sources import (
    LiveInput,
    LiveRead,
    check_input_engine,
    check_live,
)
from affidavit.services.exports.specs import vouched_approval
from affidavit.services.leases import (
    dead_because,
    lease_from_json,
    lease_json,
    new_lease,
    this_host,
)
from affidavit.services.ledger import attest_and_record
from affidavit.services.policy_vouch import read_events
from affidavit.services.requests import Authority, gate

PREDICATE_VERSION: Final = 1
LIVE: Final = "live"
"""The input of a run that reads the live source (its row's and its events' ``backup_id``)."""
SPOOL_DIR: Final = "export-spool"
"""Where, in the home, the encrypted output of a run to an S3 destination waits for its
upload (the hidden partial file, as beside a folder destination)."""
_CHUNK: Final = 256 * 1024
_FILE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,200}")


@dataclass(frozen=True, slots=True, kw_only=True)
class ExportResult:
    """What a run did: its row, the contract's result, and (when delivered) the statement
    and the paths of the output and its manifest."""

    run: ExportRun
    contract: dict[str, Any]
    delivered: bool
    output: Path | None = None
    manifest: Path | None = None
    predicate: dict[str, Any] | None = None
    location: str | None = None  # an S3 destination's output URL (``output`` is then None)
    manifest_location: str | None = None

    def to_json(self) -> dict[str, Any]:
        """JSON-ready."""
        return {
            "ok": self.delivered,
            "export": self.run.to_json(),
            "contract": self.contract,
            "output": str(self.output) if self.output else self.location,
            "manifest": str(self.manifest) if self.manifest else self.manifest_location,
            "predicate": self.predicate,
        }


def _now() -> datetime:
    return datetime.now(UTC)


def _choose_backup(app: App, spec: ExportSpec, backup_id: str | None) -> Backup:
    wanted = backup_id or (spec.input.backup if spec.input.backup != "latest" else None)
    with app.read() as uow:
        if wanted is not None:
            backup = uow.backups.get(wanted)
        else:
            found = [
                b
                for b in uow.backups.list(source=spec.input.source)
                if b.status is BackupStatus.COMPLETE
                and any(d.name == spec.input.dataset for d in b.datasets)
            ]
            if not found:
                raise InputError(
                    f"no completed backup of {spec.input.source} holds {spec.input.dataset}",
                    hint=f"run `affidavit backup run {spec.input.source}` first",
                )
            backup = found[0]
    if backup.status is not BackupStatus.COMPLETE:
        raise InputError(f"backup {backup.id} is {backup.status.value}, not complete")
    if backup.source != spec.input.source:
        raise InputError(
            f"backup {backup.id} is of {backup.source}, not of the spec's source "
            f"{spec.input.source}"
        )
    return backup


def _classification(app: App, source: str, dataset: ManifestDataset) -> Classification:
    """The higher of the dataset's classification in the signed manifest and in the
    inventory now (a dataset classified higher since the backup is exported as such)."""
    levels = list(Classification)
    found = [Classification(dataset.classification)] if dataset.classification in levels else []
    with app.read() as uow:
        current = uow.datasets.get(source, dataset.name)
    if current is not None:
        found.append(current.classification)
    return max(found, key=levels.index) if found else Classification.RESTRICTED


def plan_export(
    app: App,
    name: str,
    *,
    version: int | None = None,
    backup_id: str | None = None,
    output: str | None = None,
) -> Plan:
    """Check everything a run needs (see the module docstring); records nothing. Raises
    :class:`InputError` (exit 2) or :class:`IntegrityError` (the backup's signed manifest)."""
    with app.read() as uow:
        stored = uow.exports.spec(name, version)
        if not stored.approved:
            raise InputError(
                f"version {stored.version} of export spec {name} is not approved",
                hint=f"another person runs `affidavit export spec approve {name} {stored.version}`",
            )
        approval = vouched_approval(uow, stored)
        if approval is None:
            raise InputError(
                f"the ledger records no approval of version {stored.version} of export spec "
                f"{name} by a second person",
                hint="the catalog's approval does not count without its ledger event",
            )
        spec = parse_spec(stored.text, name=f"export spec {name} v{stored.version}")
        recipient = uow.exports.recipient(spec.recipient)
        if vouched_key(uow, recipient.name) != recipient.public_key:
            raise InputError(
                f"recipient {recipient.name} has not proven possession of its key",
                hint=f"`affidavit recipient verify {recipient.name} --response FILE` with "
                "the decrypted challenge",
            )
        identity = app.ledger_identity()
    if identity is None:
        raise InputError("this home has no ledger signing key", hint="run `affidavit init`")
    if spec.input.live:
        if backup_id not in (None, LIVE):  # an approved request's parameters say "live"
            raise InputError(
                f"export spec {name} reads its live source: --backup does not apply",
                hint='a spec with input.from = "backup" exports a backup',
            )
        live = check_live(app, spec.input.source, spec.input.dataset)
        check_input_engine(spec.input, live.source.engine, source=live.source.name)
        return _finish_plan(
            app,
            stored=stored,
            spec=spec,
            approval=approval,
            recipient=recipient,
            output=output,
            classification=_live_classification(app, live),
            live=live,
        )
    backup = _choose_backup(app, spec, backup_id)
    engine = format_engine(backup.format)
    if (
        engine not in (EngineName.MONGODB, EngineName.REDIS)
        or restore_layout(backup.format) is None
    ):
        raise InputError(
            f"backup {backup.id} is a {backup.format} backup: this version exports MongoDB "
            "documents and Redis keys (RDB) only",
            hint="see docs/exports.md, what is not done",
        )
    check_input_engine(spec.input, engine, source=spec.input.source)
    checked = check_backup_manifest(backup, {identity.keyid: identity.signer.key.public_key})
    if not checked.ok or checked.manifest is None or checked.payload_sha256 is None:
        reason = checked.issues[0].message if checked.issues else "no signed manifest"
        raise IntegrityError(
            f"backup {backup.id}'s signed manifest does not hold: {reason}",
            hint=f"run `affidavit verify run {backup.id}`; nothing was exported",
        )
    dataset = next((d for d in checked.manifest.datasets if d.name == spec.input.dataset), None)
    if dataset is None:
        raise InputError(f"backup {backup.id} does not hold dataset {spec.input.dataset}")
    return _finish_plan(
        app,
        stored=stored,
        spec=spec,
        approval=approval,
        recipient=recipient,
        output=output,
        classification=_classification(app, spec.input.source, dataset),
        backup=backup,
        dataset=dataset,
        backup_manifest_sha256=checked.payload_sha256,
    )


def _live_classification(app: App, live: LiveInput) -> Classification:
    """A live dataset's classification in the inventory now (the source's when the
    inventory has not met the dataset)."""
    with app.read() as uow:
        current = uow.datasets.get(live.source.name, live.dataset)
    return current.classification if current is not None else live.source.classification


def _finish_plan(
    app: App,
    *,
    stored: SpecVersion,
    spec: ExportSpec,
    approval: dict[str, Any],
    recipient: Recipient,
    output: str | None,
    classification: Classification,
    backup: Backup | None = None,
    dataset: ManifestDataset | None = None,
    backup_manifest_sha256: str | None = None,
    live: LiveInput | None = None,
) -> Plan:
    """The checks common to backup and live input: the DPA of restricted data, the
    destination, the output's name, the consents; the plan."""
    name = stored.name
    if classification is Classification.RESTRICTED and not recipient.dpa:
        raise InputError(
            f"{spec.input.dataset} is restricted and recipient {recipient.name} has no "
            "data-processing agreement reference",
            hint="add the recipient again with --dpa REF (a recipient is immutable)",
        )
    s3 = spec.destination if is_s3(spec.destination) else None
    if s3 is not None:
        backend = s3_backend(s3)
        folder = Path(app.settings.home) / SPOOL_DIR  # the encrypted output until it uploads
        folder.mkdir(mode=0o700, exist_ok=True)
    else:
        folder = Path(spec.destination)
        if not folder.is_absolute() or not folder.is_dir():
            raise InputError(
                f"the destination {spec.destination} is not an existing folder (absolute path) "
                "nor s3://BUCKET/PREFIX"
            )
    suffix = SUFFIXES[spec.format]
    ref = backup.id if backup is not None else LIVE
    file_name = output or f"{name}-v{stored.version}-{ref}{suffix}"
    if not _FILE_NAME.fullmatch(file_name) or file_name.endswith(MANIFEST_SUFFIX):
        raise InputError(
            f"output name {file_name[:80]!r} is not a plain file name",
            hint="letters, digits, '.', '_' and '-'; no folders",
        )
    consents = load_consents_for(app, spec.consent, spec.purpose)
    plan = Plan(
        classification=classification,
        consents=consents,
        version=stored,
        spec=spec,
        spec_approval=approval,
        recipient=recipient,
        backup=backup,
        dataset=dataset,
        backup_manifest_sha256=backup_manifest_sha256,
        live=live,
        output=folder / file_name,
        s3=s3,
    )
    if s3 is not None:
        refuse_existing_object(backend, s3, file_name, "the output file")
        refuse_existing_object(backend, s3, plan.manifest_path.name, "the manifest file")
    else:
        refuse_existing(plan.output, "the output file")
        refuse_existing(plan.manifest_path, "the manifest file")
    return plan


EXPORT_TIMEOUT: Final = timedelta(hours=24)
"""How long a run whose process cannot be looked up (another host, another PID namespace)
counts as alive: exports keep no heartbeat."""


def reclaim_abandoned_exports(app: App, *, now: datetime | None = None) -> list[str]:
    """Record every running export whose process is dead (SIGKILL, OOM, a lost host) as
    failed (``export.abandoned``, with why), and remove its hidden partial output (an
    encrypted file named ``.NAME.partial-ID`` beside where the output would have gone, as its
    signed ``export.requested`` event names it); the ids reclaimed. Run by ``export run`` and
    ``export list``; cheap when nothing runs (one query)."""
    at = now or _now()
    with app.read() as uow:
        running = [r for r in uow.exports.runs() if r.status is ExportStatus.RUNNING]
        if not running:
            return []
        requested = {
            e.subject.removeprefix("export:"): e
            for e in read_events(uow.ledger, "export.requested")
        }
    here = this_host()
    reclaimed = []
    for run in running:
        event = requested.get(run.id)
        details = event.details if event is not None else {}
        why = dead_because(
            lease_from_json(run.id, details.get("lease")),
            started_at=run.started_at,
            now=at,
            here=here,
            timeout=EXPORT_TIMEOUT,
        )
        if why is None:
            continue
        partial = details.get("partial")
        removed = False
        if isinstance(partial, str) and Path(partial).name.endswith(f".partial-{run.id}"):
            path = Path(partial)
            if path.name.startswith(".") and path.is_file():
                remove_quietly(path)
                removed = not path.exists()
        with app.change() as change:
            current = {r.id: r for r in change.uow.exports.runs(run.spec)}.get(run.id)
            if current is None or current.status is not ExportStatus.RUNNING:
                continue  # another command was first
            error = f"abandoned: {why}"
            change.uow.exports.finish_run(run.id, status=ExportStatus.FAILED, at=at, error=error)
            change.record(
                "export.abandoned",
                f"export:{run.id}",
                {"spec": run.spec, "version": run.version, "why": why, "partial_removed": removed},
            )
        reclaimed.append(run.id)
    return reclaimed


def run_export(
    app: App,
    name: str,
    *,
    version: int | None = None,
    backup_id: str | None = None,
    output: str | None = None,
    reason: str = "",
    authority: Authority | None = None,
    workers: int | None = None,
) -> ExportResult:
    """Run version ``version`` (default: the newest approved) of export spec ``name`` (see
    the module docstring) with the record path on ``workers`` processes (default: the cores
    this process may use; 1: in this process; :mod:`.parallel`)."""
    if workers is not None and not 1 <= workers <= MAX_WORKERS:
        raise InputError(
            f"--workers {workers}: give 1 to {MAX_WORKERS}",
            hint="1 runs the record path in this process",
        )
    refused = app.no_fork
    if workers is not None and workers > 1 and refused is not None:
        raise InputError(
            f"--workers {workers}: {refused}",
            hint="leave --workers out (one process), or run `affidavit export run` on a host "
            "without --server",
        )
    reclaim_abandoned_exports(app)
    plan = plan_export(app, name, version=version, backup_id=backup_id, output=output)
    params = plan.params()
    approved: Preview | None = None
    if authority is not None:  # the approved preview: the run must reach its counts
        approved = Preview.from_json(authority.params.get("preview"))
        if approved is not None:
            params["preview"] = approved.to_json()
    elif app.principal is not None and app.principal.authenticated:
        # the gate may file a request: its approver sees the counts and a sealed sample
        params["preview"] = make_preview(app, plan, at=_now()).to_json()
    allowed = gate(
        app,
        GatedOperation.EXPORT_RUN,
        params,
        target=f"export-spec:{name}",
        reason=reason,
        authority=authority,
    )
    export_id = f"ex-{new_id()}"
    started, clock = _now(), time.monotonic()
    partial = plan.output.with_name(f".{plan.output.name}.partial-{export_id}")
    lease = new_lease(export_id, started)  # who runs it: a later command judges it dead or not
    with app.change() as change:
        run = ExportRun(
            id=export_id,
            spec=name,
            version=plan.version.version,
            backup_id=plan.input_ref,
            recipient=plan.recipient.name,
            status=ExportStatus.RUNNING,
            started_at=started,
            started_by=change.actor,
        )
        change.uow.exports.add_run(run)
        change.record(
            "export.requested",
            f"export:{export_id}",
            {
                **plan.params(),
                "dataset": plan.dataset_name,
                "recipient": plan.recipient.name,
                "public_key": plan.recipient.public_key,
                "purpose": plan.spec.purpose,
                "legal_basis": plan.spec.legal_basis.value,
                "partial": str(partial),
                "lease": lease_json(lease),
                **allowed.event_details(),
            },
        )
    try:
        return _work(
            app,
            plan,
            run,
            allowed,
            partial,
            approved=approved,
            clock=clock,
            workers=workers if workers is not None else 1 if refused else default_workers(),
        )
    except Error as exc:
        remove_quietly(partial)
        _record_failure(app, run, exc)
        raise
    except Exception as exc:  # a bug: still no running row without its end
        remove_quietly(partial)
        _record_failure(app, run, InternalError(f"internal error: {type(exc).__name__}: {exc}"))
        raise
    except KeyboardInterrupt:  # Ctrl-C: a failure like any other (docs/exports.md)
        remove_quietly(partial)
        _record_interrupted(app, run)
        raise
    except BaseException:
        remove_quietly(partial)
        raise


def _record_interrupted(app: App, run: ExportRun) -> None:
    """Record ``export.failed`` for a run that Ctrl-C stopped, unless it ended already (the
    interrupt came after its delivery was committed). Best effort: a run left ``running``
    is reclaimed by a later command (``export.abandoned``)."""
    exc = OperationError("interrupted (Ctrl-C): nothing was delivered", hint="run it again")
    try:
        with app.read() as uow:
            mine = [r for r in uow.exports.runs(run.spec) if r.id == run.id]
        if mine and mine[0].status is ExportStatus.RUNNING:
            _record_failure(app, run, exc)
    except Error:  # pragma: no cover - the catalog is unreachable: left to the reclaim
        pass


def _record_failure(app: App, run: ExportRun, exc: Error) -> None:
    with app.change() as change:
        change.uow.exports.finish_run(
            run.id, status=ExportStatus.FAILED, at=_now(), error=exc.message
        )
        change.record(
            "export.failed",
            f"export:{run.id}",
            {"spec": run.spec, "version": run.version, "error": exc.message, "hint": exc.hint},
        )


def _work(
    app: App,
    plan: Plan,
    run: ExportRun,
    allowed: Authority,
    partial: Path,
    *,
    approved: Preview | None = None,
    clock: float,
    workers: int = 1,
) -> ExportResult:
    spec = plan.spec
    records = RecordPass(app, plan, at=run.started_at)
    accumulator = Accumulator("logical", keep_keys=False)
    plain_digest, cipher_digest = Sha256Stream(), Sha256Stream()
    encoder = Encoder(spec.format, [r.name for r in spec.fields])
    jsonl = spec.format is OutputFormat.EXTJSON
    plain_keys = not any(r.name.startswith("$") for r in spec.fields)  # output keys: these
    pending: list[tuple[bytes, bytes]] = []  # logical records, added in batches

    def lines(work: Path) -> Iterator[bytes]:
        buffer = bytearray(encoder.header())
        if workers > 1:  # the same bytes, the record path on other processes
            for data, pairs in parallel_pass(
                records, work, encoder=encoder, plain_keys=plain_keys, workers=workers
            ):
                accumulator.add_pairs(pairs, None)
                buffer += data
                if len(buffer) >= _CHUNK:
                    chunk = bytes(buffer)
                    plain_digest.update(chunk)
                    yield chunk
                    buffer.clear()
        for out in records.shipped(work) if workers == 1 else ():
            pending.append(logical_record_of(out, plain_keys=plain_keys))
            buffer += encode_line(out) if jsonl else encoder.encode(out)
            if len(buffer) >= _CHUNK:
                accumulator.add_records(pending)
                pending.clear()
                plain_digest.update(bytes(buffer))
                yield bytes(buffer)
                buffer.clear()
        accumulator.add_records(pending)
        pending.clear()
        buffer += encoder.finish()
        if buffer:
            plain_digest.update(bytes(buffer))
            yield bytes(buffer)

    with private_folder("export") as work:
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            _encrypt(lines(work), plan.recipient.public_key, fh, cipher_digest)
    fingerprint, _ = accumulator.finish()
    records.finish()
    contract, tally = records.contract, records.tally
    if approved is not None:
        approved.require_same(preview_counts(records))
    if not contract.passed:
        figures = performance(spec, tally, contract, clock)
        return _blocked(
            app, plan, run, contract=contract, tally=tally, partial=partial, figures=figures
        )
    return _deliver(
        app,
        plan,
        run,
        allowed,
        partial,
        contract=contract,
        tally=tally,
        digests=(plain_digest, cipher_digest),
        fingerprint=fingerprint.text,
        clock=clock,
        live=records.live,
    )


def performance(
    spec: ExportSpec, tally: Tally, contract: ContractCheck, clock: float
) -> dict[str, Any]:
    """A run's figures against its spec's SLO, for its ledger event: ``duration_s`` (its
    latency, from ``export.requested`` on; ``clock`` is ``time.monotonic()`` then),
    ``docs_per_s`` (records read per second), ``error_rate`` (records failing the contract
    per record read) and, when the spec declares an SLO, ``slo`` (the limits) and
    ``slo_missed`` (what the run missed; empty when it met them)."""
    duration = max(time.monotonic() - clock, 1e-6)
    n = tally.records_in
    figures: dict[str, Any] = {
        "duration_s": round(duration, 3),
        "docs_per_s": round(n / duration, 1),
        "error_rate": round(contract.failed_records / n, 6) if n else 0.0,
        "records_in": n,
    }
    if spec.slo is not None:
        figures["slo"] = spec.slo.to_json()
        figures["slo_missed"] = spec.slo.missed(
            docs_per_s=n / duration, duration_s=duration, error_rate=figures["error_rate"]
        )
    return figures


def _encrypt(chunks: Iterator[bytes], recipient: str, fh: BinaryIO, digest: Sha256Stream) -> None:
    for piece in encrypt_chunks(chunks, recipient):
        digest.update(piece)
        fh.write(piece)
    fh.flush()
    os.fsync(fh.fileno())


def _blocked(
    app: App,
    plan: Plan,
    run: ExportRun,
    *,
    contract: ContractCheck,
    tally: Tally,
    partial: Path,
    figures: dict[str, Any],
) -> ExportResult:
    remove_quietly(partial)
    at = _now()
    with app.change() as change:
        change.uow.exports.finish_run(
            run.id,
            status=ExportStatus.BLOCKED,
            at=at,
            records_out=0,
            error=f"{contract.violation_count} contract violation(s)",
        )
        change.record(
            "export.blocked",
            f"export:{run.id}",
            {
                "spec": run.spec,
                "version": run.version,
                "records": counts(tally),
                "contract": contract.to_json(),
                "performance": figures,
            },
        )
        done = next(r for r in change.uow.exports.runs(run.spec) if r.id == run.id)
    return ExportResult(run=done, contract=contract.to_json(), delivered=False)


def _input(plan: Plan, live: LiveRead | None) -> dict[str, Any]:
    """The manifest's ``input``: the backup (its signed manifest's digest, the dataset's
    fingerprint and count there), or the live read (the source's URI without credentials,
    when, at which consistency point, the logical fingerprint and count of what was read);
    and the filter, when the spec has one."""
    spec = plan.spec
    out: dict[str, Any]
    if live is not None:
        out = {**live.to_json(), "classification": plan.classification.value}
    else:
        assert plan.backup is not None
        assert plan.dataset is not None
        out = {
            "source": spec.input.source,
            "dataset": plan.dataset.name,
            "classification": plan.classification.value,
            "backup_id": plan.backup.id,
            "backup_manifest_sha256": plan.backup_manifest_sha256,
            "fingerprint": plan.dataset.fingerprint,
            "records": plan.dataset.records,
        }
    if spec.input.filter is not None:
        out["filter"] = spec.input.filter.to_json()
    return out


def _predicate(
    plan: Plan,
    run: ExportRun,
    allowed: Authority,
    *,
    live: LiveRead | None = None,
    contract: ContractCheck,
    tally: Tally,
    digests: tuple[Sha256Stream, Sha256Stream],
    fingerprint: str,
    at: datetime,
) -> dict[str, Any]:
    plain, cipher = digests
    spec, recipient = plan.spec, plan.recipient
    return {
        "predicate_version": PREDICATE_VERSION,
        "export_id": run.id,
        "created_at": at.isoformat(),
        "spec": {
            "name": plan.version.name,
            "version": plan.version.version,
            "sha256": plan.version.sha256,
            "proposed_by": plan.spec_approval["proposed_by"],
            "approved_by": plan.spec_approval["approved_by"],
            "approval_seq": plan.spec_approval["seq"],
        },
        "purpose": spec.purpose,
        "legal_basis": spec.legal_basis.value,
        "input": _input(plan, live),
        "fields": [r.to_json() for r in spec.fields],
        "consent": (
            {
                **plan.consents.to_json(),
                "subject_field": spec.consent.subject_field,
                "at": run.started_at.isoformat(),
            }
            if plan.consents is not None and spec.consent is not None
            else None
        ),
        "records": counts(tally),
        "contract": {"rules": spec.contract.to_json(), "result": contract.to_json()},
        "output": {
            "file": plan.output.name,
            "format": spec.format.value,
            "encryption": "age-x25519",
            "sha256": cipher.hexdigest(),
            "size": cipher.length,
            "plaintext_sha256": plain.hexdigest(),
            "plaintext_size": plain.length,
            "records": tally.records_out,
            "fingerprint": fingerprint,
        },
        "recipient": {
            "name": recipient.name,
            "organisation": recipient.organisation,
            "public_key": recipient.public_key,
            "dpa": recipient.dpa,
        },
        "approvals": {
            "spec": {
                "approved_by": plan.spec_approval["approved_by"],
                "seq": plan.spec_approval["seq"],
            },
            "run": allowed.event_details().get("approval", {"standing": "local-os-user"}),
        },
    }


def _deliver(
    app: App,
    plan: Plan,
    run: ExportRun,
    allowed: Authority,
    partial: Path,
    *,
    contract: ContractCheck,
    tally: Tally,
    digests: tuple[Sha256Stream, Sha256Stream],
    fingerprint: str,
    clock: float,
    live: LiveRead | None = None,
) -> ExportResult:
    at = _now()
    predicate = _predicate(
        plan,
        run,
        allowed,
        live=live,
        contract=contract,
        tally=tally,
        digests=digests,
        fingerprint=fingerprint,
        at=at,
    )
    cipher_sha256 = digests[1].hexdigest()
    statement = Statement(
        subjects=(Subject(plan.output.name, cipher_sha256),),
        predicate_type=EXPORT_PREDICATE_TYPE,
        predicate=predicate,
    )
    delivered: list[Path] = []
    uploaded: list[str] = []
    backend = s3_backend(plan.s3) if plan.s3 is not None else None
    try:
        with app.change() as change:
            envelope: Envelope = attest_and_record(change, statement)
            text = envelope.to_json()
            if backend is not None:  # the output first, then its manifest
                uploaded = upload(
                    backend,
                    partial=partial,
                    name=plan.output.name,
                    manifest_name=plan.manifest_path.name,
                    manifest=text.encode("utf-8"),
                )
            else:
                write_new(plan.manifest_path, text.encode("utf-8"), "the manifest file")
                delivered.append(plan.manifest_path)
                _link_new(partial, plan.output)
                delivered.append(plan.output)
            change.uow.exports.finish_run(
                run.id,
                status=ExportStatus.COMPLETED,
                at=at,
                output_path=plan.location,
                output_sha256=cipher_sha256,
                records_out=tally.records_out,
                envelope=text,
            )
            change.record(
                "export.completed",
                f"export:{run.id}",
                {
                    **plan.params(),
                    "dataset": plan.dataset_name,
                    "recipient": plan.recipient.name,
                    "public_key": plan.recipient.public_key,
                    "output_sha256": cipher_sha256,
                    "plaintext_sha256": digests[0].hexdigest(),
                    "fingerprint": fingerprint,
                    "records": counts(tally),
                    "contract_passed": contract.passed,
                    "manifest_sha256": statement_sha256(statement),
                    "purpose": plan.spec.purpose,
                    "legal_basis": plan.spec.legal_basis.value,
                    "fields": [r.to_json() for r in plan.spec.fields],
                    "classification": plan.classification.value,
                    "dpa": plan.recipient.dpa,
                    "spec_approval": predicate["spec"],
                    "performance": performance(plan.spec, tally, contract, clock),
                    **(
                        {"input": predicate["input"]}
                        if live is not None or plan.spec.input.filter is not None
                        else {}
                    ),
                    **allowed.event_details(),
                },
            )
            allowed.seal(change)
            done = next(r for r in change.uow.exports.runs(run.spec) if r.id == run.id)
    except BaseException:
        remove_quietly(*delivered)
        if backend is not None:
            remove_objects(backend, uploaded)
        raise
    finally:
        remove_quietly(partial)
    if plan.s3 is not None:
        return ExportResult(
            run=done,
            contract=contract.to_json(),
            delivered=True,
            predicate=predicate,
            location=plan.location,
            manifest_location=f"{plan.s3.rstrip('/')}/{plan.manifest_path.name}",
        )
    return ExportResult(
        run=done,
        contract=contract.to_json(),
        delivered=True,
        output=plan.output,
        manifest=plan.manifest_path,
        predicate=predicate,
    )


def statement_sha256(statement: Statement) -> str:
    """SHA-256 of the statement's canonical bytes (the DSSE payload)."""
    return sha256_hex(statement.to_json())


def _link_new(partial: Path, final: Path) -> None:
    """Give the finished file its name; never over an existing file."""
    try:
        os.link(partial, final)
    except FileExistsError:
        raise InputError(
            f"the output file {final} already exists: nothing was delivered",
            hint="move it away, or choose another name with --output",
        ) from None


def list_exports(app: App, spec: str | None = None) -> list[ExportRun]:
    """Every run (of ``spec``), oldest first (dead runs recorded abandoned first)."""
    reclaim_abandoned_exports(app)
    with app.read() as uow:
        return uow.exports.runs(spec)
