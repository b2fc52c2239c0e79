"""An export's live input: a dataset read from its registered source (``from = "live"``,
docs/exports.md "A live source").

The source's connection is made by :func:`~affidavit.services.backends.engine_for`, whose
secret comes from :func:`~affidavit.services.secrets.resolve_source_secret` (never one of
affidavit's own); what is recorded names the source by its URI without credentials. The read
is one pass at one consistency point where the engine gives one (a MongoDB snapshot session;
otherwise the operation times before and after, as a backup records them), with the spec's
filter applied by the server. While the records stream, their ``logical`` fingerprint (the
records as read, before minimisation) is computed, so the manifest says exactly what was read.

MongoDB sources are read here; a Redis source (one record per key, a key pattern) by
:mod:`.redis_input`, whose read is this one's subclass."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from affidavit.constants import EngineName
from affidavit.errors import EngineError, InputError, NotFound
from affidavit.fingerprint.accumulator import Accumulator
from affidavit.formats.codecs import codec_for
from affidavit.models.export import SpecInput
from affidavit.models.export_filter import QueryFilter
from affidavit.models.inventory import Source
from affidavit.models.records import RecordEncoding
from affidavit.models.uri import ConnectionUri
from affidavit.services.backends import engine_for
from affidavit.services.context import App

_BATCH = 2000


@dataclass(frozen=True, slots=True, kw_only=True)
class LiveInput:
    """A live dataset an export reads: the registered source, the dataset, the URI to
    record (no credentials)."""

    source: Source
    dataset: str

    @property
    def uri(self) -> str:
        """The source's URI as recorded: no password, no user name."""
        return ConnectionUri.parse(self.source.engine, self.source.uri).redacted


def check_input_engine(spec_input: SpecInput, engine: EngineName, *, source: str) -> None:
    """A spec's input selector fits its source's engine: a query ``filter`` reads MongoDB
    documents, a ``key_pattern`` Redis keys. Raises :class:`InputError` (exit 2)."""
    if spec_input.key_pattern is not None and engine is not EngineName.REDIS:
        raise InputError(
            f"input.key_pattern selects Redis keys, but source {source} is a {engine.value} source",
            hint="a MongoDB input is narrowed by input.filter (docs/exports.md)",
        )
    if spec_input.filter is not None and engine is not EngineName.MONGODB:
        raise InputError(
            f"input.filter is a MongoDB query, but source {source} is a {engine.value} source",
            hint='a Redis input is narrowed by input.key_pattern = "customer:*" (docs/exports.md)',
        )


def check_live(app: App, source_name: str, dataset: str) -> LiveInput:
    """The live input of a spec, checked before anything is recorded: the source is
    registered, of an engine this version reads live (MongoDB, Redis), reachable, and holds
    the dataset. Raises :class:`InputError` (exit 2) or :class:`EngineError` (exit 3)."""
    with app.read() as uow:
        source = uow.sources.get(source_name)  # NotFound: not registered
    if source.engine not in (EngineName.MONGODB, EngineName.REDIS):
        raise InputError(
            f"source {source.name} is a {source.engine.value} source: this version reads "
            "MongoDB and Redis sources live only",
            hint='export a backup of it instead (input.from = "backup"); see docs/exports.md',
        )
    live = LiveInput(source=source, dataset=dataset)
    with engine_for(source, app.settings) as engine:
        try:
            engine.count_records(dataset)
        except NotFound:
            names = (
                "Redis datasets are db0, db1, ..."
                if source.engine is EngineName.REDIS
                else "MongoDB datasets are db.collection"
            )
            raise InputError(
                f"source {source.name} ({live.uri}) has no dataset {dataset}",
                hint=f"`affidavit inventory` lists the datasets; {names}",
            ) from None
    return live


@dataclass(slots=True)
class LiveRead:
    """One read of a live dataset (:meth:`records`); after it, what the manifest records of
    it (:meth:`to_json`)."""

    app: App
    live: LiveInput
    query: QueryFilter | None
    read_at: datetime | None = None
    total: int | None = None  # the dataset's records when the read began (with a filter)
    records: int = 0
    consistency: dict[str, Any] = field(default_factory=dict)
    fingerprint: str | None = None

    def raw_records(self) -> Iterator[bytes]:
        """The raw BSON documents the server returns (matching the filter), at one
        consistency point; the fingerprint and the figures are set when the stream ends.
        Raises :class:`EngineError` when the server fails midway."""
        codec = codec_for(RecordEncoding.BSON, "logical")
        accumulator = Accumulator("logical", keep_keys=False)
        pending: list[tuple[bytes, bytes]] = []
        with engine_for(self.live.source, self.app.settings) as engine:
            self.read_at = datetime.now(UTC)
            if self.query is not None:
                self.total = engine.count_records(self.live.dataset)
            query = self.query.to_mongo() if self.query is not None else None
            with engine.dataset_snapshot() as snapshot:
                for raw in snapshot.iter_raw(self.live.dataset, query):
                    pending.append(codec(raw))
                    if len(pending) >= _BATCH:
                        accumulator.add_records(pending)
                        pending.clear()
                    self.records += 1
                    yield raw
                self.consistency = dict(snapshot.consistency)
        accumulator.add_records(pending)
        fingerprint, _ = accumulator.finish()
        self.fingerprint = fingerprint.text

    @property
    def filtered_out(self) -> int:
        """Records the filter left out: the dataset's count when the read began minus the
        records read (a write during the read can make it inexact; never below 0)."""
        if self.total is None:
            return 0
        return max(self.total - self.records, 0)

    def to_json(self) -> dict[str, Any]:
        """The manifest's ``input`` members of a live read."""
        if self.fingerprint is None or self.read_at is None:
            raise EngineError("the live read did not finish")
        out: dict[str, Any] = {
            "from": "live",
            "source": self.live.source.name,
            "engine": self.live.source.engine.value,
            "uri": self.live.uri,
            "dataset": self.live.dataset,
            "read_at": self.read_at.isoformat(),
            "consistency": self.consistency,
            "fingerprint": self.fingerprint,
            "records": self.records,
        }
        if self.total is not None:
            out["records_in_dataset"] = self.total
        return out
