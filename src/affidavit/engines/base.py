"""The engine interface: one small class per database engine.

An engine talks to one live server. Implementations wrap every driver exception in
:class:`~affidavit.errors.EngineError` (server unreachable, authentication failed, command
refused) or :class:`~affidavit.errors.NotFound` (unknown dataset), with ``raise ... from exc``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from types import TracebackType
from typing import Any, ClassVar, Self

from affidavit.constants import EngineName
from affidavit.models.inventory import DatasetCount, ServerDescription
from affidavit.models.records import RecordEncoding, RedisRecord
from affidavit.models.uri import ConnectionUri


class Engine(ABC):
    """A connection to one database server.

    Constructing an engine does no I/O; the first call connects. Use it as a context manager
    so that :meth:`close` always runs.
    """

    name: ClassVar[EngineName]
    #: how :meth:`iter_records` encodes records (selects the fingerprint codec)
    record_encoding: ClassVar[RecordEncoding]

    def __init__(self, uri: ConnectionUri, *, password: str | None, timeout: float) -> None:
        """``uri`` carries no secret; ``password`` (resolved from a secret reference by the
        caller) is handed to the driver only; ``timeout`` bounds connecting and each call,
        in seconds."""
        self.uri = uri
        self._password = password
        self.timeout = timeout

    @abstractmethod
    def describe(self) -> ServerDescription:
        """Version, TLS, whether auth is required, and the persistence / replication settings
        that drift checks compare. Raises ``EngineError`` when the server cannot be reached."""

    @abstractmethod
    def list_datasets(self) -> list[str]:
        """The dataset names on the server (MongoDB ``db.collection``, Redis ``db0``..),
        sorted; system datasets excluded. Raises ``EngineError``."""

    @abstractmethod
    def count_records(self, dataset: str) -> int:
        """The exact number of records in ``dataset``. Raises ``NotFound`` when the dataset
        does not exist, ``EngineError`` when the server fails."""

    def estimate_records(self, dataset: str) -> int:
        """About the number of records in ``dataset``, for progress bars only: from the
        server's metadata where it keeps one, so that sizing a bar does not cost a scan.
        Raises like :meth:`count_records`; this default is the exact count."""
        return self.count_records(dataset)

    def count_all(self) -> list[DatasetCount]:
        """Every dataset with its record count."""
        return [DatasetCount(name=d, records=self.count_records(d)) for d in self.list_datasets()]

    @abstractmethod
    def iter_records(self, dataset: str) -> Iterator[bytes | RedisRecord]:
        """Stream every record of ``dataset`` in no particular order, with bounded memory:
        raw BSON documents (``bytes``) for MongoDB, :class:`RedisRecord` for Redis. Raises
        ``NotFound`` for an unknown dataset and ``EngineError`` when the server fails midway
        (never a silently short stream)."""

    @abstractmethod
    def seed_sample(self, *, seed: int, scale: int) -> Mapping[str, int]:
        """Write affidavit's deterministic demonstration sample (``scale`` sets its size) and
        return the record count per dataset written. Used by ``affidavit demo`` and by tests;
        refuses (``InputError``) when the target datasets already hold data."""

    def keys_changed_since(
        self, dataset: str, keys: Sequence[bytes], point: Mapping[str, Any] | None
    ) -> set[bytes] | None:
        """Which of ``keys`` (exact-profile record keys of ``dataset``) the server changed,
        inserted or deleted after the consistency point ``point`` (the record a backup of
        this engine made). None when the engine cannot tell (no change log, or the log no
        longer reaches back to ``point``): the default. Raises ``EngineError``."""
        return None

    @abstractmethod
    def close(self) -> None:
        """Release the connection; safe to call twice."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
