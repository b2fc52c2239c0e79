"""The engine interface: one small class per database engine.

An engine talks to one live server. Implementations wrap every driver exception in
:class:`~affidavit.errors.EngineError` (server unreachable, authentication failed, command
refused) or :class:`~affidavit.errors.NotFound` (unknown dataset), with ``raise ... from exc``.

Capabilities. Every engine reads (:meth:`Engine.iter_records`), counts and describes. What
differs between engines is declared here, typed, so that services ask the interface and never
the engine's name:

- **point-in-time capture**, in one of two shapes: a whole-server snapshot streamed in the
  server's own file format (:attr:`Engine.snapshot_format`, :meth:`Engine.request_snapshot`,
  a :class:`SnapshotTransfer`; Redis: an RDB over ``SYNC``), or a consistent view read dataset
  by dataset (:meth:`Engine.dataset_snapshot`, a :class:`DatasetSnapshot`; MongoDB: a
  snapshot session). :attr:`Engine.backup_format` names the format ``backup run`` writes;
- **restore into an empty target**: :meth:`Engine.restore`;
- **query probes** for drills: :meth:`Engine.query_probes` (a :class:`QueryProbes`, or None);
- **changes since a consistency point**: :meth:`Engine.keys_changed_since` (None: cannot tell);
- **record estimates** for progress bars: :meth:`Engine.estimate_records`.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any, ClassVar, Protocol

from affidavit.closing import Closing
from affidavit.constants import EngineName
from affidavit.errors import OperationError
from affidavit.models.inventory import DatasetCount, ServerDescription
from affidavit.models.records import RecordEncoding, RedisRecord
from affidavit.models.uri import ConnectionUri


class SnapshotTransfer(Protocol):
    """A whole-server snapshot being streamed, in the engine's :attr:`Engine.snapshot_format`."""

    def payload(self) -> Iterator[bytes]:
        """The snapshot's bytes in chunks, exactly once. Raises ``EngineError`` when the
        transfer fails midway (never a silently short stream)."""
        ...

    def close(self) -> None:
        """End the transfer (safe to call twice, and before :meth:`payload` is used)."""
        ...


class DatasetSnapshot(Protocol):
    """Reads of one backup, dataset by dataset, at one consistency point."""

    @property
    def consistency(self) -> dict[str, Any]:
        """What the backup can claim about its point in time (JSON-ready)."""
        ...

    def iter_raw(self, dataset: str, query: Mapping[str, Any] | None = None) -> Iterator[bytes]:
        """The dataset's records, raw, at the snapshot (only those matching ``query``, a
        filter the server applies, when given)."""
        ...

    def metadata_json(self, dataset: str) -> bytes:
        """The dataset's metadata as the engine's native dump tool writes it."""
        ...


class QueryProbes(Protocol):
    """Queries a drill's probes run against a restored server (Extended JSON queries)."""

    def count_matching(self, dataset: str, query: Mapping[str, Any]) -> int:
        """The number of records matching ``query``."""
        ...

    def find_one_json(self, dataset: str, query: Mapping[str, Any]) -> dict[str, Any] | None:
        """The first record matching ``query``, JSON-ready, or None."""
        ...


class Engine(Closing):
    """A connection to one database server.

    Constructing an engine does no I/O; the first call connects. Use it as a context manager
    so that :meth:`close` always runs.
    """

    name: ClassVar[EngineName]
    #: how :meth:`iter_records` encodes records (selects the fingerprint codec)
    record_encoding: ClassVar[RecordEncoding]
    #: the format ``backup run`` writes for this engine (a registered format name)
    backup_format: ClassVar[str]
    #: the format of the whole-server snapshot :meth:`request_snapshot` streams; None when the
    #: engine captures a point in time dataset by dataset (:meth:`dataset_snapshot`)
    snapshot_format: ClassVar[str | None] = None
    #: the TCP port a connection URI means when it names none (to tell two URIs of one
    #: server apart from two servers)
    default_port: ClassVar[int]

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

    def change_log_gap(self) -> str:
        """Why :meth:`keys_changed_since` could not tell (it returned None), for a finding:
        by default, that the engine keeps no change log affidavit can read."""
        return (
            f"{self.name.value} keeps no change log affidavit can read: drift since the backup "
            "cannot be told apart from corruption"
        )

    def request_snapshot(self) -> SnapshotTransfer:
        """Start streaming a point-in-time snapshot of the whole server, in
        :attr:`snapshot_format` (connect, authenticate, ask) and return the transfer; the
        caller iterates its ``payload`` later and closes it in any case. Raises
        ``SyncRefused`` when the server refuses to give one, ``EngineError`` when it cannot be
        reached. The default (an engine with no :attr:`snapshot_format`) refuses."""
        raise OperationError(f"the {self.name} engine streams no whole-server snapshot")

    def dataset_snapshot(self) -> AbstractContextManager[DatasetSnapshot]:
        """A consistent view for a backup read dataset by dataset (an engine without a
        :attr:`snapshot_format`). The default refuses."""
        raise OperationError(f"the {self.name} engine has no dataset snapshot")

    def restore(
        self,
        dataset: str,
        records: Iterable[bytes | RedisRecord],
        *,
        metadata: bytes | None = None,
    ) -> int:
        """Write ``records`` (as :meth:`iter_records` yields them) into ``dataset``, which must
        be empty (``InputError`` otherwise), recreating it from ``metadata`` (the dataset's
        metadata from the backup, where the engine keeps any); return how many records were
        written. Raises ``EngineError`` when the server refuses a step. The default refuses."""
        raise OperationError(f"the {self.name} engine cannot restore datasets")

    def query_probes(self) -> QueryProbes | None:
        """The query interface a drill's probes use, or None when probes are answered from the
        records read back (the default)."""
        return None

    @abstractmethod
    def close(self) -> None:
        """Release the connection; safe to call twice."""
