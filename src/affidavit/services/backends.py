"""The registries: where concrete engines, formats, vaults and drills' scratch servers are
wired, by name or URL scheme, and how a backup of each format is restored.

Backends are imported lazily so that a missing optional driver only matters when it is used.
"""

from __future__ import annotations

import importlib
import itertools
import operator
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from affidavit.constants import EngineName
from affidavit.errors import InputError, IntegrityError, OperationError
from affidavit.models.inventory import Source, Vault, VaultKind
from affidavit.models.records import RedisRecord
from affidavit.models.uri import ConnectionUri
from affidavit.services.secrets import resolve_source_secret

if TYPE_CHECKING:  # (config and models.backup are heavy for `fingerprint FILE`'s start-up)
    from affidavit.config import Settings
    from affidavit.engines.base import Engine
    from affidavit.formats.base import RecordReader
    from affidavit.models.backup import Backup, BackupArtifact
    from affidavit.scratch.base import ScratchServer
    from affidavit.vaults.base import VaultBackend

_ENGINES: dict[EngineName, tuple[str, str, str]] = {
    EngineName.MONGODB: ("affidavit.engines.mongodb", "MongoEngine", "mongodb"),
    EngineName.REDIS: ("affidavit.engines.redis", "RedisEngine", "redis"),
}
# --format name -> reader; the order is the order of format detection
_READERS: dict[str, tuple[str, str, str]] = {
    "mongodump-archive": ("affidavit.formats.mongodump_archive", "ArchiveReader", "mongodb"),
    "mongodump": ("affidavit.formats.mongodump", "MongodumpDirReader", "mongodb"),
    "bson": ("affidavit.formats.mongodump", "BsonFileReader", "mongodb"),
    "extjson": ("affidavit.formats.extjson", "ExtJsonLinesReader", "mongodb"),
    "rdb": ("affidavit.formats.rdb", "RdbReader", ""),
}
# --format name -> the engine whose data it holds (an ingest files it under such a source)
_FORMAT_ENGINES: dict[str, EngineName] = {
    "mongodump-archive": EngineName.MONGODB,
    "mongodump": EngineName.MONGODB,
    "bson": EngineName.MONGODB,
    "extjson": EngineName.MONGODB,
    "rdb": EngineName.REDIS,
}
assert set(_FORMAT_ENGINES) == set(_READERS), "every format holds one engine's data"
_VAULTS: dict[VaultKind, tuple[str, str, str]] = {
    VaultKind.FILE: ("affidavit.vaults.file", "FileVault", ""),
    VaultKind.S3: ("affidavit.vaults.s3", "S3Vault", "s3"),
}
# engine -> the throwaway server a drill restores its backups into
_SCRATCH: dict[EngineName, tuple[str, str, str]] = {
    EngineName.MONGODB: ("affidavit.scratch.secantus_server", "SecantusScratch", ""),
    EngineName.REDIS: ("affidavit.scratch.redis_server", "RedisScratch", ""),
}


def _load(module: str, attr: str, extra: str) -> type:
    try:
        return getattr(importlib.import_module(module), attr)  # type: ignore[no-any-return]
    except ModuleNotFoundError as exc:
        raise InputError(
            f"this backend needs the Python package {exc.name!r}, which is not installed",
            hint=f"pip install 'affidavit[{extra}]'" if extra else "reinstall affidavit",
        ) from exc


def engine_class(engine: EngineName) -> type[Engine]:
    """The engine class registered for ``engine`` (its capabilities are class attributes)."""
    cls: type[Engine] = _load(*_ENGINES[engine])
    return cls


def engine_for_uri(
    engine: EngineName, uri: ConnectionUri, *, password: str | None, timeout: float
) -> Engine:
    """An unconnected engine for ``uri``."""
    return engine_class(engine)(uri, password=password, timeout=timeout)


def engine_for(source: Source, settings: Settings) -> Engine:
    """An unconnected engine for a registered source, its secret resolved now (never one of
    affidavit's own: :func:`~affidavit.services.secrets.resolve_source_secret`)."""
    uri = ConnectionUri.parse(source.engine, source.uri)
    password = resolve_source_secret(source.secret, home=settings.home)
    return engine_for_uri(source.engine, uri, password=password, timeout=settings.connect_timeout)


def vault_backend(vault: Vault) -> VaultBackend:
    """The storage backend of a registered vault."""
    cls = _load(*_VAULTS[vault.kind])
    instance: VaultBackend = cls(vault)
    return instance


def reader_class(fmt: str) -> type[RecordReader]:
    """The reader registered for ``--format fmt``."""
    if fmt not in _READERS:
        raise InputError(f"unknown format {fmt!r}", hint=f"use one of {', '.join(_READERS)}")
    cls: type[RecordReader] = _load(*_READERS[fmt])
    return cls


def format_engine(fmt: str) -> EngineName:
    """The engine whose data a file of ``--format fmt`` holds."""
    if fmt not in _FORMAT_ENGINES:
        raise InputError(f"unknown format {fmt!r}", hint=f"use one of {', '.join(_READERS)}")
    return _FORMAT_ENGINES[fmt]


def reader_classes() -> list[type[RecordReader]]:
    """Every reader, in detection order."""
    return [reader_class(name) for name in _READERS]


def scratch_class(engine: EngineName) -> type[ScratchServer]:
    """The scratch server a drill restores ``engine``'s backups into (what drills need of it
    is declared on the class). Raises ``OperationError`` when there is none."""
    if engine not in _SCRATCH:
        raise OperationError(f"drills have no scratch server for {engine} backups")
    cls: type[ScratchServer] = _load(*_SCRATCH[engine])
    return cls


# -- how a backup of each format is restored (drills) -----------------------------------------

#: one dataset as a restore writes it (:meth:`~affidavit.engines.base.Engine.restore`): its
#: name, its records (as the engine's ``iter_records`` yields them) and its metadata (None:
#: none kept)
RestoreItem = tuple[str, Iterable[bytes | RedisRecord], bytes | None]


class RestoreRead(Protocol):
    """Reads decrypted backup data for a restore."""

    def __call__(
        self, data: Path, datasets: Sequence[str], *, metadata: Path | None
    ) -> Iterator[RestoreItem]:
        """A :data:`RestoreItem` for each of ``datasets`` that ``data`` holds, in restore
        order, each item's records to be consumed before the next item is asked for.
        Raises ``FormatError`` for malformed data."""
        ...


@dataclass(frozen=True, slots=True, kw_only=True)
class RestoreLayout:
    """How a backup of one format lies in its artifacts and is read back for a restore, so
    that a drill asks this and never the format's name.

    Either one data artifact holds every dataset (no :attr:`data_suffixes`: an RDB, an
    archive) and :attr:`read` is called once, with it and every dataset to restore; or each
    dataset has a data artifact of its own (per dataset: its vault path ends in one of
    :attr:`data_suffixes`), with an optional metadata artifact of the same stem (one of
    :attr:`metadata_suffixes`), and :attr:`read` is called once per dataset with both."""

    read: RestoreRead
    data_suffixes: tuple[str, ...] = ()
    metadata_suffixes: tuple[str, ...] = ()

    @property
    def per_dataset(self) -> bool:
        """Each dataset has its own data artifact."""
        return bool(self.data_suffixes)

    def artifacts(self, backup: Backup) -> list[BackupArtifact]:
        """The artifacts a restore of ``backup`` reads: its one data artifact, or every
        dataset's data artifact and the metadata artifacts of the same stems. Raises
        ``InputError`` for a backup without its one data artifact."""
        from affidavit.models.backup import ArtifactRole

        live = [a for a in backup.artifacts if not a.deleted]
        if not self.per_dataset:
            data = [a for a in live if a.role is ArtifactRole.DATA]
            if len(data) != 1:
                raise InputError(f"backup {backup.id} has {len(data)} data artifacts, not one")
            return data
        wanted = {d.name for d in backup.datasets}
        out = [a for a in live if a.role is ArtifactRole.DATA and a.dataset in wanted]
        stems = {_stem(a.path, self.data_suffixes) for a in out}
        out += [
            a
            for a in live
            if a.role is ArtifactRole.METADATA
            and a.path.endswith(self.metadata_suffixes)
            and _stem(a.path, self.metadata_suffixes) in stems
        ]
        return out

    def items(self, backup: Backup, plain: Mapping[str, Path]) -> Iterator[RestoreItem]:
        """Every dataset of ``backup``'s manifest as its decrypted artifacts (``plain``: vault
        path -> decrypted file) hold it: the one data file read at once, or each dataset's
        data file with its metadata file. Raises ``IntegrityError`` for a missing one."""
        from affidavit.models.backup import ArtifactRole

        names = [d.name for d in backup.datasets]
        decrypted = [a for a in backup.artifacts if a.path in plain]
        data = [a for a in decrypted if a.role is ArtifactRole.DATA]
        if not self.per_dataset:
            if len(data) != 1:
                raise IntegrityError(
                    f"backup {backup.id} should hold one data file, not {len(data)}"
                )
            yield from self.read(plain[data[0].path], names, metadata=None)
            return
        by_dataset = {a.dataset: a for a in data}
        metas = {
            _stem(a.path, self.metadata_suffixes): plain[a.path]
            for a in decrypted
            if a.role is ArtifactRole.METADATA
        }
        for name in names:
            artifact = by_dataset.get(name)
            if artifact is None:
                raise IntegrityError(f"backup {backup.id} has no data artifact for {name}")
            meta = metas.get(_stem(artifact.path, self.data_suffixes))
            yield from self.read(plain[artifact.path], [name], metadata=meta)


def _stem(path: str, suffixes: tuple[str, ...]) -> str:
    for suffix in suffixes:
        if path.endswith(suffix):
            return path[: -len(suffix)]
    return path


def _read_mongodump_file(
    data: Path, datasets: Sequence[str], *, metadata: Path | None
) -> Iterator[RestoreItem]:
    """One dataset's mongodump ``.bson`` file (framing checked: the server checks the rest)
    with its ``.metadata.json`` (either one maybe gzipped)."""
    from affidavit.formats.base import open_binary
    from affidavit.formats.mongodump import iter_bson_file

    (name,) = datasets
    meta: bytes | None = None
    if metadata is not None:
        with open_binary(metadata) as stream:  # .gz metadata of ingested dumps is inflated
            meta = stream.read()
    yield name, iter_bson_file(data, validate="framing"), meta


def _read_mongodump_archive(
    data: Path, datasets: Sequence[str], *, metadata: Path | None
) -> Iterator[RestoreItem]:
    """A ``mongodump --archive``: every namespace's documents (a pass each: an archive
    interleaves them) with its metadata (options, indexes) from the archive's prelude."""
    from affidavit.formats.mongodump_archive import ArchiveReader

    reader = ArchiveReader(data)
    prelude = reader.prelude().metadata
    for name in datasets:
        meta = prelude.get(name)
        yield name, reader.records(name), meta.encode("utf-8") if meta else None


def _read_rdb(
    data: Path, datasets: Sequence[str], *, metadata: Path | None
) -> Iterator[RestoreItem]:
    """An RDB, checked to the end first (structure and CRC-64: a corrupt file fails before
    anything is written), then every wanted database in one more pass: an RDB holds each
    database's keys together, after its SELECTDB. Load semantics as of now: keys already
    expired are not restored. A database met twice is yielded twice (and then refused by
    the restore: it is no longer empty)."""
    from affidavit.formats.rdb import RdbReader

    reader = RdbReader(data)
    reader.datasets()  # the full check pass
    wanted = set(datasets)
    for name, run in itertools.groupby(reader.iter_all(), key=operator.itemgetter(0)):
        if name in wanted:  # a database the backup does not list is not restored
            yield name, (record for _, record in run), None


# --format name -> how drills restore it (formats not listed cannot be restored yet)
_RESTORE_LAYOUTS: dict[str, RestoreLayout] = {
    "mongodump": RestoreLayout(
        read=_read_mongodump_file,
        data_suffixes=(".bson.gz.age", ".bson.age"),
        metadata_suffixes=(".metadata.json.gz.age", ".metadata.json.age"),
    ),
    "mongodump-archive": RestoreLayout(read=_read_mongodump_archive),
    "rdb": RestoreLayout(read=_read_rdb),
}
assert set(_RESTORE_LAYOUTS) <= set(_READERS), "a restorable format is a registered format"


def restore_layout(fmt: str) -> RestoreLayout | None:
    """How a backup of ``--format fmt`` is restored; None when drills cannot restore it."""
    return _RESTORE_LAYOUTS.get(fmt)


def restorable_formats() -> list[str]:
    """The formats drills can restore."""
    return list(_RESTORE_LAYOUTS)
