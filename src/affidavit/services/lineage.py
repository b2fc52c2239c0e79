"""Lineage as a pure function of the ledger: OpenLineage run events, the graph from source
datasets to export destinations, its verification and its delivery to an OpenLineage
endpoint (docs/lineage.md).

Every backup, verification, drill and export is already a signed ledger event carrying its
inputs, outputs and digests. This module reads those events (and a backup's manifest from the
catalog only when its SHA-256 is the one ``backup.completed`` signed) and derives the
OpenLineage events deterministically: the runId is a UUIDv5 of the operation, the eventTime
is the entry's, and each event carries the seq and Merkle leaf hash of the entry it comes
from. Nothing is written twice, no other service needs a hook, and ``lineage verify`` proves
each edge against the verified ledger and the stored bytes.
"""

from __future__ import annotations

import fcntl
import http.client
import json
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

from affidavit import __version__
from affidavit.crypto.digest import sha256_hex, sha256_readable
from affidavit.durable import write_atomic
from affidavit.errors import FormatError, InputError, NotFound, OperationError, VaultError
from affidavit.ledger import merkle
from affidavit.ledger.attestation import Statement
from affidavit.models.backup import Backup
from affidavit.models.inventory import Vault
from affidavit.models.ledger import Event, rfc3339_utc
from affidavit.models.lineage import (
    COLUMN_LINEAGE_SCHEMA,
    DESTINATION_NAMESPACE,
    ERROR_MESSAGE_SCHEMA,
    DatasetRef,
    EventType,
    JobKind,
    LineageEvent,
    LineageFinding,
    LineageGraph,
    LineageReport,
    facet,
    source_namespace,
)
from affidavit.models.manifest import BackupManifest
from affidavit.services.alerts import post_json, redact_webhook
from affidavit.services.backends import vault_backend
from affidavit.services.context import App
from affidavit.services.ledger import verify_catalog
from affidavit.services.policy_vouch import parse_entry
from affidavit.vaults.base import ArtifactNotFound, VaultBackend

__all__ = [
    "EmitResult",
    "EventsWritten",
    "Lineage",
    "derive",
    "emit",
    "event_lines",
    "show",
    "verify",
    "write_events",
]

PRODUCER = f"https://example.invalid/affidavit/releases/{__version__}"
"""The ``producer`` of every event (a URI naming affidavit and its version)."""

_ACTIONS = (
    "source.added",
    "vault.added",
    "backup.started",
    "backup.artifact_stored",
    "backup.completed",
    "backup.failed",
    "backup.abandoned",
    "backup.deleted",
    "verification.completed",
    "verification.could_not_run",
    "drill.completed",
    "export.requested",
    "export.completed",
    "export.failed",
    "export.blocked",
    "export.abandoned",
)
_KEEP = "keep"
_MANIFEST_COPY = "manifest.dsse.json"
_STATE_FILE = "lineage-emitted.json"
_EMIT_LOCK = "lineage-emit.lock"
_POST_TIMEOUT = 10.0
_CHUNK = 1 << 20


@dataclass(frozen=True, slots=True, kw_only=True)
class _Entry:
    seq: int
    leaf_hash: str
    event: Event


@dataclass(frozen=True, slots=True, kw_only=True)
class StoredArtifact:
    """An artifact as ``backup.artifact_stored`` recorded it."""

    backup_id: str
    vault: str
    path: str
    sha256: str
    size: int
    seq: int


@dataclass(slots=True, kw_only=True)
class _BackupState:
    backup_id: str
    source: str
    vault: str
    artifacts: list[StoredArtifact] = field(default_factory=list)
    manifest_sha256: str | None = None
    completed_seq: int | None = None
    manifest: BackupManifest | None = None
    manifest_problem: str | None = None
    deleted: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class Lineage:
    """Everything derived from the ledger: the events (in ledger order), the artifacts each
    backup stored, the delivered exports' outputs, and what the catalog got wrong."""

    origin: str
    events: tuple[LineageEvent, ...]
    artifacts: tuple[StoredArtifact, ...]
    deleted: frozenset[str]
    outputs: Mapping[str, tuple[str, int]]  # export output path -> (sha256, seq)
    problems: tuple[LineageFinding, ...]

    def openlineage(self, since: int = -1) -> list[dict[str, Any]]:
        """The OpenLineage RunEvents derived from entries after ``since``."""
        return [
            e.to_openlineage(origin=self.origin, producer=PRODUCER)
            for e in self.events
            if e.seq > since
        ]

    @property
    def graph(self) -> LineageGraph:
        """The whole graph."""
        return LineageGraph.from_events(self.events)


# -- derivation -------------------------------------------------------------------------------


def _read_entries(app: App) -> tuple[list[_Entry], dict[str, Backup | None]]:
    entries: list[_Entry] = []
    backups: dict[str, Backup | None] = {}
    with app.read() as uow:
        for action in _ACTIONS:
            for stored in uow.ledger.find(action=action):
                event = parse_entry(stored.entry)
                if event is None or event.action != action:
                    continue  # `ledger verify` reports it; lineage verify runs that too
                leaf = merkle.leaf_hash(stored.entry).hex()
                entries.append(_Entry(seq=stored.seq, leaf_hash=leaf, event=event))
        for entry in entries:
            if entry.event.action == "backup.started":
                backup_id = entry.event.subject.removeprefix("backup:")
                try:
                    backups[backup_id] = uow.backups.get(backup_id)
                except NotFound:
                    backups[backup_id] = None
    entries.sort(key=lambda e: e.seq)
    return entries, backups


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _manifest(
    backup: Backup | None, signed: str | None
) -> tuple[BackupManifest | None, str | None]:
    """The backup's manifest from the catalog when its SHA-256 is the signed one."""
    if backup is None or backup.manifest is None:
        return None, "the catalog holds no manifest for it"
    if signed is None or sha256_hex(backup.manifest) != signed:
        return None, "the catalog's manifest is not the one backup.completed signed"
    try:
        statement = Statement.from_json(backup.manifest)
        return BackupManifest.from_predicate(dict(statement.predicate)), None
    except FormatError as exc:
        return None, f"the signed manifest does not parse: {exc.message}"


class _Deriver:
    """One pass over the ledger's entries in seq order."""

    def __init__(self, origin: str, backups: Mapping[str, Backup | None]) -> None:
        self.origin = origin
        self.catalog = backups
        self.sources: dict[str, tuple[str | None, str | None]] = {}  # label -> (engine, uri)
        self.vaults: dict[str, str] = {}
        self.backups: dict[str, _BackupState] = {}
        self.events: list[LineageEvent] = []
        self.outputs: dict[str, tuple[str, int]] = {}
        self.requested: dict[str, Event] = {}
        self.problems: list[LineageFinding] = []

    # naming

    def _source_ns(self, state: _BackupState) -> str:
        if state.manifest is not None and state.manifest.source.uri is not None:
            return source_namespace(state.manifest.source.uri)
        return source_namespace(self.sources.get(state.source, (None, None))[1])

    def _engine(self, state: _BackupState) -> str | None:
        if state.manifest is not None and state.manifest.source.engine is not None:
            return state.manifest.source.engine.value
        return self.sources.get(state.source, (None, None))[0]

    def _artifact_ref(self, state: _BackupState, art: StoredArtifact) -> DatasetRef:
        namespace = self.vaults.get(state.vault, f"vault:{state.vault}")
        if state.manifest is not None:
            namespace = state.manifest.vault.url
        fields: dict[str, Any] = {"sha256": art.sha256, "size": art.size}
        signed = _manifest_artifact(state, art.path)
        if signed is not None:
            fields["role"] = signed[0]
            fields["dataset"] = signed[1]
        return DatasetRef(
            namespace=namespace,
            name=art.path,
            kind="artifact",
            digest=f"sha256:{art.sha256}",
            facets={"affidavit_artifact": facet("affidavit_artifact", **fields)},
        )

    def _source_refs(self, state: _BackupState, datasets: Mapping[str, Any]) -> list[DatasetRef]:
        refs = []
        signed = {d.name: d for d in state.manifest.datasets} if state.manifest else {}
        for name, fingerprint in sorted(datasets.items()):
            fp: dict[str, Any] = {"fingerprint": fingerprint}
            facets: dict[str, Any] = {}
            if name in signed:
                fp["records"] = signed[name].records
                facets["affidavit_classification"] = facet(
                    "affidavit_classification", classification=signed[name].classification
                )
            facets["affidavit_fingerprint"] = facet("affidavit_fingerprint", **fp)
            refs.append(
                DatasetRef(
                    namespace=self._source_ns(state),
                    name=name,
                    kind="source",
                    digest=_text(fingerprint),
                    facets=facets,
                )
            )
        return refs

    def _data_artifacts(self, state: _BackupState, dataset: str | None = None) -> list[DatasetRef]:
        """The artifacts holding records (all of them when the manifest cannot say), or those
        holding ``dataset`` (a file of several datasets holds it too)."""
        chosen = []
        for art in state.artifacts:
            signed = _manifest_artifact(state, art.path)
            if state.manifest is not None and signed is None:
                continue  # the clear-text copy of the manifest, stored after it was signed
            if signed is None and PurePosixPath(art.path).name == _MANIFEST_COPY:
                continue
            if signed is not None and signed[0] not in ("data", "metadata"):
                continue
            if dataset is not None and signed is not None and signed[1] not in (None, dataset):
                continue
            chosen.append(self._artifact_ref(state, art))
        return chosen

    def _add(
        self,
        entry: _Entry,
        event_type: EventType,
        kind: JobKind,
        job: str,
        operation: str,
        **kw: Any,
    ) -> None:
        self.events.append(
            LineageEvent(
                seq=entry.seq,
                leaf_hash=entry.leaf_hash,
                action=entry.event.action,
                event_type=event_type,
                event_time=kw.pop("time", entry.event.time),
                kind=kind,
                job=job,
                operation=operation,
                **kw,
            )
        )

    # one method per action

    def run(self, entries: Iterable[_Entry]) -> None:
        for entry in entries:
            handler = getattr(self, "_on_" + entry.event.action.replace(".", "_"))
            handler(entry)

    def _on_source_added(self, entry: _Entry) -> None:
        d = entry.event.details
        name = entry.event.subject.removeprefix("source:")
        self.sources[name] = (_text(d.get("engine")), _text(d.get("uri")))

    def _on_vault_added(self, entry: _Entry) -> None:
        url = _text(entry.event.details.get("url"))
        if url is not None:
            self.vaults[entry.event.subject.removeprefix("vault:")] = url

    def _backup(self, entry: _Entry) -> _BackupState | None:
        return self.backups.get(entry.event.subject.removeprefix("backup:"))

    def _on_backup_started(self, entry: _Entry) -> None:
        d = entry.event.details
        backup_id = entry.event.subject.removeprefix("backup:")
        state = _BackupState(
            backup_id=backup_id,
            source=_text(d.get("source")) or "ingested",
            vault=_text(d.get("vault")) or "?",
        )
        self.backups[backup_id] = state
        self._add(entry, "START", "backup", f"backup.{state.source}", f"backup:{backup_id}")

    def _on_backup_artifact_stored(self, entry: _Entry) -> None:
        state = self._backup(entry)
        d = entry.event.details
        path, sha, size = d.get("path"), d.get("sha256"), d.get("size")
        if state is None or not isinstance(path, str) or not isinstance(sha, str):
            return
        state.artifacts.append(
            StoredArtifact(
                backup_id=state.backup_id,
                vault=state.vault,
                path=path,
                sha256=sha,
                size=size if isinstance(size, int) else -1,
                seq=entry.seq,
            )
        )

    def _on_backup_completed(self, entry: _Entry) -> None:
        state = self._backup(entry)
        if state is None:
            return
        d = entry.event.details
        state.manifest_sha256 = _text(d.get("manifest_sha256"))
        state.completed_seq = entry.seq
        state.manifest, state.manifest_problem = _manifest(
            self.catalog.get(state.backup_id), state.manifest_sha256
        )
        if state.manifest_problem is not None:
            self.problems.append(
                LineageFinding(
                    code="manifest-mismatch",
                    subject=f"backup:{state.backup_id}",
                    message=state.manifest_problem,
                    seq=entry.seq,
                )
            )
        datasets = d.get("datasets")
        self._add(
            entry,
            "COMPLETE",
            "backup",
            f"backup.{state.source}",
            f"backup:{state.backup_id}",
            inputs=tuple(self._source_refs(state, datasets if isinstance(datasets, dict) else {})),
            outputs=tuple(self._artifact_ref(state, a) for a in state.artifacts),
            run_facets={
                "affidavit_manifest": facet(
                    "affidavit_manifest", sha256=state.manifest_sha256, kind="backup"
                )
            },
            digest=state.manifest_sha256,
        )

    def _fail(
        self, entry: _Entry, kind: JobKind, job: str, operation: str, message: str, **kw: Any
    ) -> None:
        facets = dict(kw.pop("run_facets", {}))
        facets["errorMessage"] = {
            "_schemaURL": ERROR_MESSAGE_SCHEMA,
            "message": message,
            "programmingLanguage": "python",
        }
        self._add(entry, "FAIL", kind, job, operation, run_facets=facets, **kw)

    def _on_backup_failed(self, entry: _Entry) -> None:
        state = self._backup(entry)
        if state is None:
            return
        message = (
            _text(entry.event.details.get("error"))
            or _text(entry.event.details.get("why"))
            or entry.event.action
        )
        self._fail(
            entry,
            "backup",
            f"backup.{state.source}",
            f"backup:{state.backup_id}",
            message,
            outputs=tuple(self._artifact_ref(state, a) for a in state.artifacts),
        )

    _on_backup_abandoned = _on_backup_failed

    def _on_backup_deleted(self, entry: _Entry) -> None:
        state = self._backup(entry)
        if state is not None:
            state.deleted = True

    def _on_verification_completed(self, entry: _Entry) -> None:
        state = self._backup(entry)
        if state is None:
            return
        d = entry.event.details
        operation = f"verification:{_text(d.get('verification_id')) or entry.seq}"
        job = f"verify.{state.source}"
        inputs = tuple(self._data_artifacts(state))
        check = facet(
            "affidavit_check",
            ok=d.get("ok") is True,
            kind=d.get("kind"),
            findings=d.get("findings") or [],
            backup=state.backup_id,
        )
        digest = _text(d.get("payload_sha256"))
        self._add(entry, "START", "verification", job, operation, inputs=inputs)
        if d.get("ok") is True:
            self._add(
                entry,
                "COMPLETE",
                "verification",
                job,
                operation,
                inputs=inputs,
                run_facets={"affidavit_check": check},
                digest=digest,
            )
        else:
            findings = ", ".join(str(f) for f in d.get("findings") or []) or "not ok"
            self._fail(
                entry,
                "verification",
                job,
                operation,
                f"findings: {findings}",
                inputs=inputs,
                run_facets={"affidavit_check": check},
                digest=digest,
            )

    def _on_verification_could_not_run(self, entry: _Entry) -> None:
        state = self._backup(entry)
        if state is None:
            return
        operation, job = f"verification:seq-{entry.seq}", f"verify.{state.source}"
        self._add(entry, "START", "verification", job, operation)
        message = _text(entry.event.details.get("error")) or "could not run"
        self._fail(entry, "verification", job, operation, message)

    def _on_drill_completed(self, entry: _Entry) -> None:
        state = self._backup(entry)
        if state is None:
            return
        d = entry.event.details
        operation = f"drill:{_text(d.get('drill_id')) or entry.seq}"
        job = f"drill.{state.source}"
        scratch = d.get("scratch")
        target = _text(d.get("target")) or "scratch"
        namespace = target
        if isinstance(scratch, dict) and isinstance(scratch.get("port"), int):
            namespace = (
                f"{self._engine(state) or scratch.get('kind')}://127.0.0.1:{scratch['port']}"
            )
        restored = d.get("datasets")
        outputs = tuple(
            DatasetRef(
                namespace=namespace,
                name=str(name),
                kind="target",
                digest=None,
                facets={
                    "affidavit_restore": facet("affidavit_restore", records=count, target=target)
                },
            )
            for name, count in sorted((restored if isinstance(restored, dict) else {}).items())
        )
        inputs = tuple(self._data_artifacts(state))
        total = d.get("total_seconds")
        started = entry.event.time
        if isinstance(total, int | float) and not isinstance(total, bool) and total >= 0:
            try:
                at = datetime.fromisoformat(entry.event.time.replace("Z", "+00:00"))
                started = rfc3339_utc(at - timedelta(seconds=float(total)))
            except (ValueError, OverflowError):
                pass  # a time this module cannot read: `ledger verify` judges the entry
        check = facet(
            "affidavit_check",
            ok=d.get("ok") is True,
            kind="drill",
            findings=d.get("findings") or [],
            backup=state.backup_id,
            fingerprintMatch=d.get("fingerprint_match"),
            rtoSeconds=d.get("rto_seconds"),
            restoreSeconds=d.get("restore_seconds"),
        )
        self._add(entry, "START", "drill", job, operation, inputs=inputs, time=started)
        if d.get("ok") is True:
            self._add(
                entry,
                "COMPLETE",
                "drill",
                job,
                operation,
                inputs=inputs,
                outputs=outputs,
                run_facets={"affidavit_check": check},
            )
        else:
            findings = ", ".join(str(f) for f in d.get("findings") or []) or "not ok"
            self._fail(
                entry,
                "drill",
                job,
                operation,
                f"findings: {findings}",
                inputs=inputs,
                outputs=outputs,
                run_facets={"affidavit_check": check},
            )

    def _export_parts(self, requested: Event) -> tuple[str, tuple[DatasetRef, ...], DatasetRef]:
        d = requested.details
        backup = self.backups.get(_text(d.get("backup_id")) or "")
        dataset = _text(d.get("dataset"))
        inputs = tuple(self._data_artifacts(backup, dataset)) if backup is not None else ()
        live = self._live_source(d)
        if live is not None:  # a live input: the source's dataset itself (naming, docs)
            inputs = (DatasetRef(namespace=live, name=dataset or "?", kind="source"),)
        partial, output = _text(d.get("partial")), _text(d.get("output")) or "?"
        where = str(PurePosixPath(partial).parent / output) if partial else output
        out = DatasetRef(namespace=DESTINATION_NAMESPACE, name=where, kind="destination")
        return f"export.{_text(d.get('spec')) or '?'}", inputs, out

    def _live_source(self, details: Mapping[str, Any]) -> str | None:
        """The namespace of a live export input's source (None: the input is a backup)."""
        given = details.get("input")
        if not isinstance(given, Mapping) or given.get("from") != "live":
            return None
        return source_namespace(self.sources.get(_text(given.get("source")) or "", (None, None))[1])

    def _on_export_requested(self, entry: _Entry) -> None:
        self.requested[entry.event.subject] = entry.event
        job, inputs, out = self._export_parts(entry.event)
        self._add(entry, "START", "export", job, entry.event.subject, inputs=inputs, outputs=(out,))

    def _on_export_completed(self, entry: _Entry) -> None:
        requested = self.requested.get(entry.event.subject)
        if requested is None:
            return
        d = entry.event.details
        job, inputs, out = self._export_parts(requested)
        backup = self.backups.get(_text(d.get("backup_id")) or "")
        dataset = _text(d.get("dataset")) or "?"
        source_ns = self._source_ns(backup) if backup is not None else "?"
        source_ns = self._live_source(requested.details) or source_ns
        sha = _text(d.get("output_sha256")) or ""
        records = d.get("records")
        facets: dict[str, Any] = {
            "affidavit_artifact": facet(
                "affidavit_artifact",
                sha256=sha,
                plaintextSha256=d.get("plaintext_sha256"),
                recipient=d.get("recipient"),
            ),
            "affidavit_fingerprint": facet(
                "affidavit_fingerprint",
                fingerprint=d.get("fingerprint"),
                records=records.get("out") if isinstance(records, dict) else None,
            ),
            "affidavit_classification": facet(
                "affidavit_classification", classification=d.get("classification")
            ),
            "columnLineage": _column_lineage(d.get("fields"), source_ns, dataset),
        }
        output = DatasetRef(
            namespace=out.namespace,
            name=out.name,
            kind="destination",
            digest=f"sha256:{sha}",
            facets=facets,
        )
        self.outputs[out.name] = (sha, entry.seq)
        manifest = _text(d.get("manifest_sha256"))
        self._add(
            entry,
            "COMPLETE",
            "export",
            job,
            entry.event.subject,
            inputs=inputs,
            outputs=(output,),
            digest=manifest,
            run_facets={
                "affidavit_manifest": facet(
                    "affidavit_manifest",
                    sha256=manifest,
                    kind="export",
                    classification=d.get("classification"),
                    purpose=d.get("purpose"),
                    legalBasis=d.get("legal_basis"),
                )
            },
        )

    def _on_export_failed(self, entry: _Entry) -> None:
        requested = self.requested.get(entry.event.subject)
        if requested is None:
            return
        job, inputs, _out = self._export_parts(requested)
        d = entry.event.details
        message = _text(d.get("error")) or _text(d.get("why")) or entry.event.action
        self._fail(entry, "export", job, entry.event.subject, message, inputs=inputs)

    _on_export_blocked = _on_export_failed
    _on_export_abandoned = _on_export_failed


def _manifest_artifact(state: _BackupState, path: str) -> tuple[str, str | None] | None:
    """(role, dataset) of ``path`` in the backup's signed manifest."""
    if state.manifest is None:
        return None
    for art in state.manifest.artifacts:
        if art.path == path:
            return art.role.value, art.dataset
    return None


def _column_lineage(fields: Any, namespace: str, dataset: str) -> dict[str, Any]:
    """The ``columnLineage`` facet of an export: each allowed field from the same field of
    the source dataset, ``IDENTITY`` when kept as it is, ``MASKED`` otherwise."""
    out: dict[str, Any] = {}
    for rule in fields if isinstance(fields, list) else []:
        if not isinstance(rule, dict) or not isinstance(rule.get("name"), str):
            continue
        transform = str(rule.get("transform", _KEEP))
        identity = transform == _KEEP
        out[rule["name"]] = {
            "inputFields": [
                {
                    "namespace": namespace,
                    "name": dataset,
                    "field": rule["name"],
                    "transformations": [
                        {
                            "type": "DIRECT",
                            "subtype": "IDENTITY" if identity else "TRANSFORMATION",
                            "description": transform,
                            "masking": not identity,
                        }
                    ],
                }
            ],
            "transformationType": "IDENTITY" if identity else "MASKED",
            "transformationDescription": transform,
        }
    return {"_schemaURL": COLUMN_LINEAGE_SCHEMA, "fields": out}


def derive(app: App) -> Lineage:
    """The lineage the ledger records (see the module docstring)."""
    identity = app.ledger_identity()
    if identity is None:
        raise InputError(
            "this home has no ledger signing key yet", hint="run `affidavit init` to create it"
        )
    entries, backups = _read_entries(app)
    deriver = _Deriver(identity.origin, backups)
    deriver.run(entries)
    return Lineage(
        origin=identity.origin,
        events=tuple(deriver.events),
        artifacts=tuple(a for s in deriver.backups.values() for a in s.artifacts),
        deleted=frozenset(s.backup_id for s in deriver.backups.values() if s.deleted),
        outputs=dict(deriver.outputs),
        problems=tuple(deriver.problems),
    )


# -- show -------------------------------------------------------------------------------------


def show(app: App, subject: str) -> LineageGraph:
    """The graph around ``subject``: a backup id, an export id, a dataset (``db.collection``,
    ``db0``, ``SOURCE/NAME``, ``NAMESPACE|NAME``), an artifact path or an export output path.
    Raises :class:`NotFound` (exit 2) when the lineage names nothing like it."""
    subject = subject.strip()
    graph = derive(app).graph
    starts = [k for k in graph.runs if k in (subject, f"backup:{subject}", f"export:{subject}")]
    if not starts:
        source, _, rest = subject.partition("/")
        for key, ref in graph.datasets.items():
            if subject in (key, ref.name) or (
                rest and ref.kind == "source" and ref.name == rest and _labelled(graph, key, source)
            ):
                starts.append(key)
    if not starts:
        raise NotFound(
            f"no lineage for {subject[:200]!r}",
            hint="give a backup id (bk-...), an export id (ex-...) or a dataset (db.collection, "
            "SOURCE/db.collection); `affidavit backup list` and `affidavit export list` name them",
        )
    return graph.around(starts)


def _labelled(graph: LineageGraph, key: str, source: str) -> bool:
    """Whether the source dataset ``key`` was read by a backup of the source ``source``."""
    return any(
        e.source == key and graph.runs[e.target].job == f"backup.{source}"
        for e in graph.edges
        if e.target in graph.runs
    )


# -- export -----------------------------------------------------------------------------------


def event_lines(app: App, *, since: int = -1) -> Iterator[str]:
    """The OpenLineage events as JSON lines (sorted keys, one event a line)."""
    for event in derive(app).openlineage(since):
        yield json.dumps(event, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


@dataclass(frozen=True, slots=True, kw_only=True)
class EventsWritten:
    """What ``lineage export --out`` wrote: how many events, and the file's SHA-256 (which a
    client that downloads the server's file checks)."""

    events: int
    sha256: str

    def to_json(self) -> dict[str, Any]:
        """JSON-ready."""
        return {"events": self.events, "sha256": self.sha256}


def write_events(app: App, out: Path, *, since: int = -1) -> EventsWritten:
    """Write the event lines to the new file ``out`` (never replaced: exit 2 when it
    exists); how many, and the bytes' SHA-256."""
    lines = list(event_lines(app, since=since))
    data = "".join(f"{line}\n" for line in lines).encode()
    try:
        write_atomic(out, data, mode=0o644, exclusive=True)
    except FileExistsError as exc:
        raise InputError(f"{out} exists", hint="name a new file; nothing was written") from exc
    except OSError as exc:
        raise InputError(f"cannot write {out}: {exc.strerror or exc}") from exc
    return EventsWritten(events=len(lines), sha256=sha256_hex(data))


# -- verify -----------------------------------------------------------------------------------


def verify(app: App, *, events_file: Path | None = None) -> LineageReport:
    """Check every edge (see docs/lineage.md, verify): the ledger verifies; each backup's
    manifest in the catalog is the signed one; each artifact in the vault still has the size
    and SHA-256 its ``backup.artifact_stored`` event recorded; each delivered export output
    that is on this host still has its SHA-256; and each event of ``events_file`` (JSON
    lines, as ``lineage export`` wrote them) is one the ledger derives, at the seq and leaf
    hash it names. Collects every finding; never raises for one."""
    findings: list[LineageFinding] = []
    ledger = verify_catalog(app)
    for found in ledger.findings:
        findings.append(
            LineageFinding(
                code="ledger-does-not-verify",
                subject="ledger",
                message=f"{found.code.value}: {found.message}",
            )
        )
    lineage = derive(app)
    findings.extend(lineage.problems)
    skipped: list[str] = []
    checked = _check_artifacts(app, lineage, findings, skipped)
    outputs = 0
    for path, (sha, seq) in sorted(lineage.outputs.items()):
        file = Path(path)
        if not file.is_file():
            skipped.append(f"export output {path}: not on this host")
            continue
        outputs += 1
        actual = _hash_file(file)
        if actual != sha:
            findings.append(
                LineageFinding(
                    code="output-changed",
                    subject=path,
                    seq=seq,
                    message=f"SHA-256 is {actual}, the ledger recorded {sha}",
                )
            )
    events_checked = 0
    if events_file is not None:
        events_checked = _check_event_file(lineage, events_file, findings)
    graph = lineage.graph
    return LineageReport(
        edges=len(graph.edges),
        artifacts_checked=checked,
        outputs_checked=outputs,
        events_checked=events_checked,
        skipped=tuple(skipped),
        findings=tuple(findings),
    )


def _check_artifacts(
    app: App, lineage: Lineage, findings: list[LineageFinding], skipped: list[str]
) -> int:
    checked = 0
    with app.read() as uow:
        vaults: dict[str, Vault] = {v.name: v for v in uow.vaults.list()}
    backends: dict[str, VaultBackend] = {}
    for art in lineage.artifacts:
        if art.backup_id in lineage.deleted:
            skipped.append(f"{art.path}: backup {art.backup_id} was deleted")
            continue
        vault = vaults.get(art.vault)
        if vault is None:
            findings.append(
                LineageFinding(
                    code="vault-unknown",
                    subject=art.path,
                    seq=art.seq,
                    message=f"the vault {art.vault!r} is not registered",
                )
            )
            continue
        backend = backends.setdefault(art.vault, vault_backend(vault))
        checked += 1
        try:
            sha, size = _hash_stream(backend, art.path)
        except ArtifactNotFound:
            findings.append(
                LineageFinding(
                    code="artifact-missing",
                    subject=art.path,
                    seq=art.seq,
                    message=f"not in vault {art.vault}",
                )
            )
            continue
        except VaultError as exc:
            findings.append(
                LineageFinding(
                    code="vault-unreadable", subject=art.path, seq=art.seq, message=exc.message
                )
            )
            continue
        if sha != art.sha256 or size != art.size:
            findings.append(
                LineageFinding(
                    code="artifact-changed",
                    subject=art.path,
                    seq=art.seq,
                    message=f"{size} bytes with SHA-256 {sha}; the ledger recorded "
                    f"{art.size} bytes with {art.sha256}",
                )
            )
    return checked


def _hash_stream(backend: VaultBackend, path: str) -> tuple[str, int]:
    try:
        with backend.open(path) as fh:
            digest = sha256_readable(fh, chunk=_CHUNK)
    except OSError as exc:
        raise VaultError(f"cannot read {path}: {exc.strerror or exc}") from exc
    return digest.hexdigest(), digest.length


def _hash_file(path: Path) -> str:
    with path.open("rb") as fh:
        return sha256_readable(fh, chunk=_CHUNK).hexdigest()


def _check_event_file(lineage: Lineage, path: Path, findings: list[LineageFinding]) -> int:
    """Each line of ``path`` must be an event the ledger derives, byte for byte as JSON."""
    derived: dict[tuple[int, str, str], dict[str, Any]] = {}
    for event in lineage.openlineage():
        key = (
            event["run"]["facets"]["affidavit_ledger"]["seq"],
            event["run"]["runId"],
            event["eventType"],
        )
        derived[key] = event
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(
            f"cannot read {path}: {exc}", hint="give the file `lineage export` wrote"
        ) from exc
    checked = 0
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        checked += 1
        where = f"{path.name}:{number}"
        try:
            event = json.loads(line)
            ledger = event["run"]["facets"]["affidavit_ledger"]
            key = (ledger["seq"], event["run"]["runId"], event["eventType"])
            if not (
                isinstance(key[0], int) and isinstance(key[1], str) and isinstance(key[2], str)
            ):
                raise TypeError("not an event's key")
        except (ValueError, KeyError, TypeError, RecursionError):
            findings.append(
                LineageFinding(
                    code="event-malformed",
                    subject=where,
                    message="not an affidavit OpenLineage event",
                )
            )
            continue
        expected = derived.get(key)
        if expected is None:
            findings.append(
                LineageFinding(
                    code="event-not-in-ledger",
                    subject=where,
                    seq=key[0],
                    message="the ledger derives no such event",
                )
            )
        elif expected != event:
            findings.append(
                LineageFinding(
                    code="event-differs",
                    subject=where,
                    seq=key[0],
                    message="differs from the event the ledger derives",
                )
            )
    return checked


# -- emit -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class EmitResult:
    """What ``lineage emit`` sent: how many events, to which endpoint (redacted), and the
    ledger seq now marked sent."""

    sent: int
    endpoint: str
    through_seq: int

    def to_json(self) -> dict[str, Any]:
        """JSON-ready."""
        return {"sent": self.sent, "endpoint": self.endpoint, "through_seq": self.through_seq}


def _state_path(app: App) -> Path:
    return app.settings.home / _STATE_FILE


def _sent_through(app: App, url: str) -> int:
    path = _state_path(app)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        value = data.get(url, -1) if isinstance(data, dict) else -1
    except FileNotFoundError:
        return -1
    except (OSError, ValueError) as exc:
        raise InputError(
            f"{path} is damaged: {exc}", hint="remove it to send every event again"
        ) from exc
    return value if isinstance(value, int) and not isinstance(value, bool) else -1


def _mark_sent(app: App, url: str, seq: int) -> None:
    path = _state_path(app)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        data = {}
    if not isinstance(data, dict):
        data = {}
    data[url] = seq
    write_atomic(path, (json.dumps(data, sort_keys=True, indent=2) + "\n").encode())


def emit(app: App, *, url: str | None = None, since: int | None = None) -> EmitResult:
    """POST each event derived from the entries after ``since`` (default: after the last seq
    sent to this endpoint, remembered in ``HOME/lineage-emitted.json``) to the OpenLineage
    endpoint ``url`` (default: the ``openlineage_url`` setting), one event a request, in
    ledger order. A seq is marked sent once all of its events were accepted (HTTP 2xx); an
    endpoint that refuses or cannot be reached raises :class:`OperationError` (exit 3) with
    what was sent before it still marked; so does an emit while another one is under way
    for the home (:func:`_single_emit`)."""
    endpoint = url if url is not None else app.settings.openlineage_url
    if not endpoint:
        raise InputError(
            "no OpenLineage endpoint is set",
            hint="set openlineage_url in affidavit.toml (or AFFIDAVIT_OPENLINEAGE_URL), or "
            "pass --url http(s)://HOST:PORT/api/v1/lineage",
        )
    parts = urlsplit(endpoint)
    if (
        parts.scheme not in ("http", "https")
        or not parts.hostname
        or any(ord(ch) <= 0x20 for ch in endpoint)
    ):
        raise InputError(
            f"the OpenLineage endpoint must be an http(s) URL, not {endpoint[:100]!r}",
            hint="for example http://127.0.0.1:5000/api/v1/lineage",
        )
    shown = redact_webhook(endpoint)
    with _single_emit(app):
        return _emit(app, endpoint, shown, since)


@contextmanager
def _single_emit(app: App) -> Iterator[None]:
    """One ``lineage emit`` per home at a time (CLI or server, any worker): two would send
    the same events twice, and the server's emits, each waiting on the endpoint, would take
    its worker threads from every other request (one that stalls holds one)."""
    with (app.settings.home / _EMIT_LOCK).open("a") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise OperationError(
                "another `affidavit lineage emit` is sending this home's events",
                hint="it sends what is new; run it again once it has finished",
            ) from None
        yield  # closing the file releases the lock


def _emit(app: App, endpoint: str, shown: str, since: int | None) -> EmitResult:
    start = since if since is not None else _sent_through(app, endpoint)
    events = derive(app).openlineage(start)
    sent, through = 0, start
    for position, event in enumerate(events):
        seq = event["run"]["facets"]["affidavit_ledger"]["seq"]
        body = json.dumps(event, sort_keys=True, ensure_ascii=False).encode("utf-8")
        try:
            status = post_json(endpoint, body, _POST_TIMEOUT)
        except (OSError, http.client.HTTPException) as exc:  # refused, timed out, non-2xx
            raise _emit_failed(shown, seq, sent, str(exc)) from exc
        if not 200 <= status < 300:
            raise _emit_failed(shown, seq, sent, f"HTTP {status}")
        sent += 1
        following = events[position + 1] if position + 1 < len(events) else None
        if following is None or following["run"]["facets"]["affidavit_ledger"]["seq"] != seq:
            through = seq
            _mark_sent(app, endpoint, through)
    return EmitResult(sent=sent, endpoint=shown, through_seq=through)


def _emit_failed(endpoint: str, seq: int, sent: int, why: str) -> OperationError:
    return OperationError(
        f"the OpenLineage endpoint {endpoint} did not take the event of seq {seq}: {why} "
        f"({sent} event(s) sent before it)",
        hint="check that the endpoint is up and accepts POSTs; `affidavit lineage emit` "
        "sends from where it stopped",
    )
