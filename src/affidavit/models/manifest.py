"""The signed backup manifest as typed values (normative: docs/formats/manifest.md).

A backup's manifest is the predicate of an in-toto Statement signed with the ledger key.
:class:`BackupManifest` is that predicate: :meth:`BackupManifest.from_predicate` reads one
(and refuses anything that is not a manifest of this version with :class:`PredicateError`,
naming the member), :meth:`BackupManifest.to_predicate` writes it, and for every manifest
affidavit signed the two are inverse down to the byte under RFC 8785. Every constructor
checks its values, so an invalid manifest cannot exist. Members a manifest does not know are
refused, not dropped: a manifest of this version never has any.

Checking a signed manifest (signature, subjects, what the catalog and the ledger recorded)
is :func:`affidavit.ledger.manifest_check.check_signed_manifest`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, TypeVar, cast

from affidavit.constants import Classification, EngineName
from affidavit.crypto.digest import sha256_hex
from affidavit.models.backup import ArtifactRole
from affidavit.models.json_fields import (
    Fields,
    PredicateError,
    check_choice,
    check_integer,
    check_optional_text,
    check_sha256,
    check_text,
    check_time,
    describe,
)
from affidavit.models.segments import SegmentTable

__all__ = [
    "BACKUP_KINDS",
    "CLASSIFICATIONS",
    "CONSISTENCY_MODES",
    "MANIFEST_TYPE",
    "SIGNED_ROLES",
    "BackupKind",
    "BackupManifest",
    "Consistency",
    "ConsistencyMode",
    "ManifestArtifact",
    "ManifestDataset",
    "ManifestEncryption",
    "ManifestSource",
    "ManifestVault",
    "OpTime",
    "PredicateError",
    "ToolInfo",
]

MANIFEST_TYPE = "https://affidavit.dev/backup-manifest/v1"
"""The predicate's ``type`` member."""

BackupKind = Literal["run", "ingest"]
BACKUP_KINDS: tuple[BackupKind, ...] = ("run", "ingest")

ConsistencyMode = Literal["rdb-snapshot", "snapshot", "per-collection", "as-ingested"]
CONSISTENCY_MODES: tuple[ConsistencyMode, ...] = (
    "rdb-snapshot",
    "snapshot",
    "per-collection",
    "as-ingested",
)

CLASSIFICATIONS = frozenset({*(c.value for c in Classification), "unclassified"})
"""A dataset's classification as signed: a level, or ``unclassified`` (ingested without a
source)."""

SIGNED_ROLES = frozenset({ArtifactRole.DATA, ArtifactRole.METADATA, ArtifactRole.INDEX})
"""The roles of the artifacts a manifest lists (the manifest's own copy is not one)."""

_FINGERPRINT = re.compile(r"afp1:(exact|logical):b\d{1,2}:n\d+:[0-9a-f]{64}")  # fingerprint.md
_FORMAT = re.compile(r"[a-z0-9][a-z0-9.-]{0,63}")
_EMPTY_SHA256 = sha256_hex(b"")

_T = TypeVar("_T")


def _build(cls: type[_T], where: str, **values: Any) -> _T:
    """``cls(**values)``, its refusal prefixed with the object's path."""
    try:
        return cls(**values)
    except PredicateError as exc:
        raise PredicateError(f"{where}.{exc.message}") from None
    except TypeError as exc:  # a wrong value handed to a constructor by code, not by JSON
        raise PredicateError(f"{where}: {exc}") from None


def _set(obj: object, name: str, value: object) -> None:
    object.__setattr__(obj, name, value)


def _instance(value: object, kind: type, where: str) -> None:
    if not isinstance(value, kind):
        raise PredicateError(f"{where} must be a {kind.__name__}, not {describe(value)}")


def _items(value: object, kind: type[_T], where: str) -> tuple[_T, ...]:
    if not isinstance(value, tuple | list):
        raise PredicateError(f"{where} must be a sequence, not {describe(value)}")
    for n, item in enumerate(value):
        _instance(item, kind, f"{where}[{n}]")
    return tuple(cast("Iterable[_T]", value))


@dataclass(frozen=True, slots=True, kw_only=True)
class ToolInfo:
    """The tool that signed: ``{"name": "affidavit", "version": ...}``."""

    name: str
    version: str

    def __post_init__(self) -> None:
        check_text(self.name, "name")
        check_text(self.version, "version")

    @classmethod
    def from_predicate(cls, obj: object, where: str = "tool") -> ToolInfo:
        """Read a ``tool`` object; raises :class:`PredicateError`."""
        f = Fields(obj, where)
        tool = _build(cls, where, name=f.raw("name"), version=f.raw("version"))
        f.done()
        return tool

    def to_predicate(self) -> dict[str, Any]:
        """The JSON object."""
        return {"name": self.name, "version": self.version}


@dataclass(frozen=True, slots=True, kw_only=True)
class ManifestSource:
    """Where the backup came from: the source's name (``ingested`` without one), engine,
    URI without secrets (the user name as ``***``) and server version (null for an ingest).
    Engine and URI are null for a backup ingested without a source."""

    name: str
    engine: EngineName | None
    uri: str | None
    server_version: str | None

    def __post_init__(self) -> None:
        check_text(self.name, "name")
        if self.engine is not None:
            engine = check_choice(self.engine, "engine", {e.value for e in EngineName})
            _set(self, "engine", EngineName(engine))
        check_optional_text(self.uri, "uri")
        check_optional_text(self.server_version, "server_version", empty=True)

    @classmethod
    def from_predicate(cls, obj: object, where: str = "source") -> ManifestSource:
        """Read a ``source`` object; raises :class:`PredicateError`."""
        f = Fields(obj, where)
        names = ("name", "engine", "uri", "server_version")
        source = _build(cls, where, **{name: f.raw(name) for name in names})
        f.done()
        return source

    def to_predicate(self) -> dict[str, Any]:
        """The JSON object."""
        return {
            "name": self.name,
            "engine": None if self.engine is None else self.engine.value,
            "uri": self.uri,
            "server_version": self.server_version,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class OpTime:
    """A MongoDB cluster or operation time: seconds ``t`` and increment ``i``."""

    t: int
    i: int

    def __post_init__(self) -> None:
        check_integer(self.t, "t")
        check_integer(self.i, "i")

    @classmethod
    def from_predicate(cls, obj: object, where: str) -> OpTime:
        """Read a ``{"t", "i"}`` object; raises :class:`PredicateError`."""
        f = Fields(obj, where)
        time = _build(cls, where, t=f.raw("t"), i=f.raw("i"))
        f.done()
        return time

    def to_predicate(self) -> dict[str, Any]:
        """The JSON object."""
        return {"t": self.t, "i": self.i}


_MODE_MEMBERS: dict[str, tuple[frozenset[str], frozenset[str]]] = {
    # mode -> (required members, allowed members) besides "mode"
    "rdb-snapshot": (frozenset({"captured_at_ms"}), frozenset({"captured_at_ms"})),
    "snapshot": (
        frozenset(),
        frozenset({"cluster_time", "operation_time_before", "operation_time_after", "note"}),
    ),
    "per-collection": (
        frozenset({"note"}),
        frozenset({"operation_time_before", "operation_time_after", "note"}),
    ),
    "as-ingested": (frozenset({"source_path"}), frozenset({"source_path"})),
}
_OPTIONAL_MEMBERS = (
    "captured_at_ms",
    "cluster_time",
    "operation_time_before",
    "operation_time_after",
    "note",
    "source_path",
)


@dataclass(frozen=True, slots=True, kw_only=True)
class Consistency:
    """The backup's point in time. By ``mode``:

    - ``rdb-snapshot`` (Redis): ``captured_at_ms``, when the RDB transfer was requested;
    - ``snapshot`` (MongoDB snapshot session): ``cluster_time`` (or, when the server named
      none, the operation times and ``note`` of per-collection reads);
    - ``per-collection`` (MongoDB without snapshot reads): ``note`` and the operation times
      before and after, where the server gave them;
    - ``as-ingested``: ``source_path``, the file or folder ingested.

    The members a mode does not use are None and are not written.
    """

    mode: ConsistencyMode
    captured_at_ms: int | None = None
    cluster_time: OpTime | None = None
    operation_time_before: OpTime | None = None
    operation_time_after: OpTime | None = None
    note: str | None = None
    source_path: str | None = None

    def __post_init__(self) -> None:
        mode = check_choice(self.mode, "mode", CONSISTENCY_MODES)
        required, allowed = _MODE_MEMBERS[mode]
        present = {name for name in _OPTIONAL_MEMBERS if getattr(self, name) is not None}
        if missing := sorted(required - present):
            raise PredicateError(f"{missing[0]} is missing (mode {mode!r} needs it)")
        if extra := sorted(present - allowed):
            raise PredicateError(f"{extra[0]} is not a member of mode {mode!r}")
        if self.captured_at_ms is not None:
            check_integer(self.captured_at_ms, "captured_at_ms")
        for name in ("cluster_time", "operation_time_before", "operation_time_after"):
            value = getattr(self, name)
            if value is not None:
                _instance(value, OpTime, name)
        check_optional_text(self.note, "note", empty=True)
        check_optional_text(self.source_path, "source_path")

    @classmethod
    def from_predicate(cls, obj: object, where: str = "consistency") -> Consistency:
        """Read a ``consistency`` object; raises :class:`PredicateError`."""
        f = Fields(obj, where)
        values: dict[str, Any] = {"mode": f.raw("mode")}
        for name in _OPTIONAL_MEMBERS:
            if not f.has(name):
                continue
            raw = f.raw(name)
            if raw is None:  # a member is written only when it has a value
                raise PredicateError(f"{f.path(name)} must not be null")
            if name in ("cluster_time", "operation_time_before", "operation_time_after"):
                raw = OpTime.from_predicate(raw, f.path(name))
            values[name] = raw
        consistency = _build(cls, where, **values)
        f.done()
        return consistency

    def to_predicate(self) -> dict[str, Any]:
        """The JSON object: ``mode`` and the members that have a value."""
        out: dict[str, Any] = {"mode": self.mode}
        for name in _OPTIONAL_MEMBERS:
            value = getattr(self, name)
            if value is not None:
                out[name] = value.to_predicate() if isinstance(value, OpTime) else value
        return out


@dataclass(frozen=True, slots=True, kw_only=True)
class ManifestVault:
    """The vault the artifacts were written to: name, URL and region (null if unknown)."""

    name: str
    url: str
    region: str | None

    def __post_init__(self) -> None:
        check_text(self.name, "name")
        check_text(self.url, "url")
        check_optional_text(self.region, "region", empty=True)

    @classmethod
    def from_predicate(cls, obj: object, where: str = "vault") -> ManifestVault:
        """Read a ``vault`` object; raises :class:`PredicateError`."""
        f = Fields(obj, where)
        vault = _build(cls, where, name=f.raw("name"), url=f.raw("url"), region=f.raw("region"))
        f.done()
        return vault

    def to_predicate(self) -> dict[str, Any]:
        """The JSON object."""
        return {"name": self.name, "url": self.url, "region": self.region}


@dataclass(frozen=True, slots=True, kw_only=True)
class ManifestEncryption:
    """How the artifacts are encrypted: age, to the backup's own ``recipient``, whose
    identity is wrapped by KEK ``kek_id`` version ``kek_version``."""

    recipient: str
    kek_id: str
    kek_version: int
    format: Literal["age"] = "age"

    def __post_init__(self) -> None:
        check_choice(self.format, "format", ("age",))
        check_text(self.recipient, "recipient")
        check_text(self.kek_id, "kek_id")
        check_integer(self.kek_version, "kek_version")

    @classmethod
    def from_predicate(cls, obj: object, where: str = "encryption") -> ManifestEncryption:
        """Read an ``encryption`` object; raises :class:`PredicateError`."""
        f = Fields(obj, where)
        names = ("format", "recipient", "kek_id", "kek_version")
        encryption = _build(cls, where, **{name: f.raw(name) for name in names})
        f.done()
        return encryption

    def to_predicate(self) -> dict[str, Any]:
        """The JSON object."""
        return {
            "format": self.format,
            "recipient": self.recipient,
            "kek_id": self.kek_id,
            "kek_version": self.kek_version,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class ManifestArtifact:
    """One stored artifact: its path in the vault, role, dataset (null for a file holding
    several), the size and SHA-256 of the stored ciphertext and of the plaintext, and (in
    backups since the segment tables, issue 18) its :class:`SegmentTable`; the member is
    absent, not null, in a manifest without one, so older manifests read and write back
    unchanged."""

    path: str
    role: ArtifactRole
    dataset: str | None
    size: int
    sha256: str
    plain_size: int | None
    plain_sha256: str | None
    segments: SegmentTable | None = None

    def __post_init__(self) -> None:
        check_text(self.path, "path")
        role = ArtifactRole(check_choice(self.role, "role", {r.value for r in SIGNED_ROLES}))
        _set(self, "role", role)
        check_optional_text(self.dataset, "dataset")
        check_integer(self.size, "size")
        check_sha256(self.sha256, "sha256")
        if self.plain_size is not None:
            check_integer(self.plain_size, "plain_size")
        if self.plain_sha256 is not None:
            check_sha256(self.plain_sha256, "plain_sha256")
        if self.segments is not None:
            _instance(self.segments, SegmentTable, "segments")
            if self.plain_size is None or self.plain_sha256 is None:
                raise PredicateError("segments need plain_size and plain_sha256")

    @classmethod
    def from_predicate(cls, obj: object, where: str = "artifact") -> ManifestArtifact:
        """Read one object of ``artifacts``; raises :class:`PredicateError`."""
        f = Fields(obj, where)
        names = ("path", "role", "dataset", "size", "sha256", "plain_size", "plain_sha256")
        values: dict[str, Any] = {name: f.raw(name) for name in names}
        if f.has("segments"):
            values["segments"] = SegmentTable.from_predicate(f.raw("segments"), f.path("segments"))
        artifact = _build(cls, where, **values)
        f.done()
        return artifact

    def to_predicate(self) -> dict[str, Any]:
        """The JSON object (``segments`` only when the artifact has a table)."""
        out: dict[str, Any] = {
            "path": self.path,
            "role": self.role.value,
            "dataset": self.dataset,
            "size": self.size,
            "sha256": self.sha256,
            "plain_size": self.plain_size,
            "plain_sha256": self.plain_sha256,
        }
        if self.segments is not None:
            out["segments"] = self.segments.to_predicate()
        return out


@dataclass(frozen=True, slots=True, kw_only=True)
class ManifestDataset:
    """One dataset: name, record count, exact fingerprint text (``afp1:...``) and its
    classification when it was backed up."""

    name: str
    records: int
    fingerprint: str
    classification: str

    def __post_init__(self) -> None:
        check_text(self.name, "name")
        check_integer(self.records, "records")
        if not isinstance(self.fingerprint, str) or not _FINGERPRINT.fullmatch(self.fingerprint):
            raise PredicateError(
                f"fingerprint must be afp1:PROFILE:bBITS:nCOUNT:ROOT, not "
                f"{describe(self.fingerprint)}"
            )
        check_choice(self.classification, "classification", CLASSIFICATIONS)

    @classmethod
    def from_predicate(cls, obj: object, where: str = "dataset") -> ManifestDataset:
        """Read one object of ``datasets``; raises :class:`PredicateError`."""
        f = Fields(obj, where)
        names = ("name", "records", "fingerprint", "classification")
        dataset = _build(cls, where, **{name: f.raw(name) for name in names})
        f.done()
        return dataset

    def to_predicate(self) -> dict[str, Any]:
        """The JSON object."""
        return {
            "name": self.name,
            "records": self.records,
            "fingerprint": self.fingerprint,
            "classification": self.classification,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class BackupManifest:
    """A backup's signed manifest (the predicate of its backup attestation).

    ``artifacts`` are kept in the order given (affidavit writes them sorted by path), and so
    are ``datasets``; paths and dataset names are unique. Times are aware datetimes, written
    back with :meth:`datetime.isoformat`.
    """

    backup_id: str
    kind: BackupKind
    format: str
    source: ManifestSource
    tool: ToolInfo
    started_at: datetime
    consistency: Consistency
    vault: ManifestVault
    retain_until: datetime
    encryption: ManifestEncryption
    artifacts: tuple[ManifestArtifact, ...]
    datasets: tuple[ManifestDataset, ...]

    def __post_init__(self) -> None:
        check_text(self.backup_id, "backup_id")
        check_choice(self.kind, "kind", BACKUP_KINDS)
        if not isinstance(self.format, str) or not _FORMAT.fullmatch(self.format):
            raise PredicateError(f"format must be a format name, not {describe(self.format)}")
        _instance(self.source, ManifestSource, "source")
        _instance(self.tool, ToolInfo, "tool")
        check_time(self.started_at, "started_at")
        _instance(self.consistency, Consistency, "consistency")
        _instance(self.vault, ManifestVault, "vault")
        check_time(self.retain_until, "retain_until")
        _instance(self.encryption, ManifestEncryption, "encryption")
        artifacts = _items(self.artifacts, ManifestArtifact, "artifacts")
        datasets = _items(self.datasets, ManifestDataset, "datasets")
        _unique((a.path for a in artifacts), "artifacts", "path")
        _unique((d.name for d in datasets), "datasets", "name")
        _set(self, "artifacts", artifacts)
        _set(self, "datasets", datasets)

    @classmethod
    def from_predicate(cls, obj: object, where: str = "manifest") -> BackupManifest:
        """Read a backup attestation's predicate; raises :class:`PredicateError` for anything
        that is not a manifest of this version (the message names the member)."""
        f = Fields(obj, where)
        f.choice("type", (MANIFEST_TYPE,))
        manifest = _build(
            cls,
            where,
            backup_id=f.raw("backup_id"),
            kind=f.raw("kind"),
            format=f.raw("format"),
            source=ManifestSource.from_predicate(f.raw("source"), f.path("source")),
            tool=ToolInfo.from_predicate(f.raw("tool"), f.path("tool")),
            started_at=f.time("started_at"),
            consistency=Consistency.from_predicate(f.raw("consistency"), f.path("consistency")),
            vault=ManifestVault.from_predicate(f.raw("vault"), f.path("vault")),
            retain_until=f.time("retain_until"),
            encryption=ManifestEncryption.from_predicate(f.raw("encryption"), f.path("encryption")),
            artifacts=tuple(
                ManifestArtifact.from_predicate(item, path) for item, path in f.items("artifacts")
            ),
            datasets=tuple(
                ManifestDataset.from_predicate(item, path) for item, path in f.items("datasets")
            ),
        )
        f.done()
        return manifest

    def to_predicate(self) -> dict[str, Any]:
        """The predicate's JSON object (sign it as the statement's ``predicate``)."""
        return {
            "type": MANIFEST_TYPE,
            "backup_id": self.backup_id,
            "kind": self.kind,
            "format": self.format,
            "source": self.source.to_predicate(),
            "tool": self.tool.to_predicate(),
            "started_at": self.started_at.isoformat(),
            "consistency": self.consistency.to_predicate(),
            "vault": self.vault.to_predicate(),
            "retain_until": self.retain_until.isoformat(),
            "encryption": self.encryption.to_predicate(),
            "artifacts": [a.to_predicate() for a in self.artifacts],
            "datasets": [d.to_predicate() for d in self.datasets],
        }

    @property
    def fingerprints(self) -> dict[str, str]:
        """Dataset name -> signed fingerprint text."""
        return {d.name: d.fingerprint for d in self.datasets}

    def artifact(self, path: str) -> ManifestArtifact | None:
        """The artifact stored at ``path``, if the manifest lists one."""
        return next((a for a in self.artifacts if a.path == path), None)

    def index_of(self, dataset: str) -> ManifestArtifact | None:
        """The fingerprint index artifact of ``dataset``, if there is one."""
        return next(
            (a for a in self.artifacts if a.role is ArtifactRole.INDEX and a.dataset == dataset),
            None,
        )

    def subjects(self) -> tuple[tuple[str, str], ...]:
        """The ``(name, sha256)`` subjects its statement must have: one per artifact (its
        path and ciphertext digest), or for a backup without artifacts the one subject
        ``SOURCE/BACKUP_ID/empty`` with the SHA-256 of no bytes."""
        if self.artifacts:
            return tuple((a.path, a.sha256) for a in self.artifacts)
        return ((f"{self.source.name}/{self.backup_id}/empty", _EMPTY_SHA256),)


def _unique(values: Iterable[str], where: str, member: str) -> None:
    seen: set[str] = set()
    for value in values:
        if value in seen:
            raise PredicateError(f"{where} lists {member} {value!r} twice")
        seen.add(value)
