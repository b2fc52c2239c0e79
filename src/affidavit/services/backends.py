"""The registries: where concrete engines and vaults are wired, by name or URL scheme.

Backends are imported lazily so that a missing optional driver only matters when it is used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from affidavit.constants import EngineName
from affidavit.errors import InputError
from affidavit.models.inventory import Source, Vault, VaultKind
from affidavit.models.uri import ConnectionUri
from affidavit.services.secrets import resolve_secret

if TYPE_CHECKING:
    from affidavit.engines.base import Engine
    from affidavit.formats.base import RecordReader
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


def _load(module: str, attr: str, extra: str) -> type:
    try:
        return getattr(importlib.import_module(module), attr)  # type: ignore[no-any-return]
    except ModuleNotFoundError as exc:
        raise InputError(
            f"this backend needs the Python package {exc.name!r}, which is not installed",
            hint=f"pip install 'affidavit[{extra}]'" if extra else "reinstall affidavit",
        ) from exc


def engine_for_uri(
    engine: EngineName, uri: ConnectionUri, *, password: str | None, timeout: float
) -> Engine:
    """An unconnected engine for ``uri``."""
    cls = _load(*_ENGINES[engine])
    instance: Engine = cls(uri, password=password, timeout=timeout)
    return instance


def engine_for(source: Source, *, timeout: float) -> Engine:
    """An unconnected engine for a registered source, its secret resolved now."""
    uri = ConnectionUri.parse(source.engine, source.uri)
    return engine_for_uri(
        source.engine, uri, password=resolve_secret(source.secret), timeout=timeout
    )


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
