"""MongoDB engine (pymongo): the only module of the engines that imports the driver."""

from __future__ import annotations

import json
import random
import struct
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from functools import partial
from typing import Any, ClassVar, TypeVar

import bson
from bson import Binary, Decimal128, Int64, ObjectId, Regex, Timestamp, json_util
from bson.codec_options import CodecOptions
from bson.errors import InvalidBSON
from bson.raw_bson import RawBSONDocument
from pymongo import MongoClient
from pymongo.client_session import ClientSession
from pymongo.errors import (
    ConfigurationError,
    OperationFailure,
    PyMongoError,
)

from affidavit.constants import EngineName
from affidavit.engines.base import Engine, QueryProbes
from affidavit.errors import EngineError, InputError, NotFound
from affidavit.models.inventory import ServerDescription
from affidavit.models.records import RecordEncoding, RedisRecord

_SYSTEM_DBS = frozenset({"admin", "local", "config"})
_UNAUTHORIZED = 13
_AUTH_FAILED = 18
T = TypeVar("T")


class MongoEngine(Engine):
    """A MongoDB deployment reached through pymongo. Datasets are ``db.collection``."""

    name: ClassVar[EngineName] = EngineName.MONGODB
    record_encoding: ClassVar[RecordEncoding] = RecordEncoding.BSON
    backup_format: ClassVar[str] = "mongodump"
    default_port: ClassVar[int] = 27017
    _client: MongoClient[dict[str, Any]] | None = None

    @property
    def client(self) -> MongoClient[dict[str, Any]]:
        """The pymongo client, created on first use."""
        if self._client is None:
            ms = int(self.timeout * 1000)
            extra: dict[str, Any] = {}
            if self._password is not None:
                extra["password"] = self._password
            try:
                self._client = MongoClient(
                    self.uri.text,
                    serverSelectionTimeoutMS=ms,
                    connectTimeoutMS=ms,
                    # reads and counts of big collections take longer than a connect
                    socketTimeoutMS=max(ms * 12, 60_000),
                    appname="affidavit",
                    **extra,
                )
            except ConfigurationError as exc:
                raise InputError(
                    f"pymongo refuses the URI {self.uri.redacted}: {exc}",
                    hint="check the URI's options against the MongoDB connection-string docs",
                ) from exc
        return self._client

    def _call(self, doing: str, fn: Callable[[], T]) -> T:
        try:
            return fn()
        except OperationFailure as exc:
            if exc.code in (_UNAUTHORIZED, _AUTH_FAILED):
                raise EngineError(
                    f"MongoDB at {self.uri.redacted} refused to {doing}: {_first_line(exc)}",
                    hint="the user needs read access to every database (role readAnyDatabase)",
                ) from exc
            raise EngineError(
                f"MongoDB at {self.uri.redacted} failed to {doing}: {_first_line(exc)}"
            ) from exc
        except PyMongoError as exc:
            raise EngineError(
                f"cannot reach MongoDB at {self.uri.redacted} to {doing}: {_first_line(exc)}"
            ) from exc

    def describe(self) -> ServerDescription:
        admin = self.client.admin
        build = self._call("read buildInfo", lambda: admin.command("buildInfo"))
        hello = self._call("run hello", lambda: admin.command("hello"))
        settings: dict[str, Any] = {
            "replica_set": hello.get("setName"),
            "writable_primary": bool(hello.get("isWritablePrimary", hello.get("ismaster"))),
            "hosts": sorted(hello.get("hosts", [])),
        }
        auth_required: bool | None = None
        try:
            opts = admin.command("getCmdLineOpts").get("parsed", {})
            security = opts.get("security", {})
            auth_required = security.get("authorization") == "enabled" or None
            storage = opts.get("storage", {})
            settings["journal"] = storage.get("journal", {}).get("enabled")
        except OperationFailure:
            pass  # not allowed to read the options: leave the settings unknown
        except PyMongoError as exc:
            raise EngineError(f"MongoDB at {self.uri.redacted}: {_first_line(exc)}") from exc
        try:
            status = admin.command("serverStatus")
            settings["storage_engine"] = status.get("storageEngine", {}).get("name")
        except OperationFailure:
            pass
        except PyMongoError as exc:
            raise EngineError(f"MongoDB at {self.uri.redacted}: {_first_line(exc)}") from exc
        if auth_required is None:
            auth_required = self._probe_auth_required()
        return ServerDescription(
            engine=self.name,
            version=str(build.get("version", "unknown")),
            tls=self._tls_enabled(),
            auth_required=auth_required,
            settings=settings,
        )

    def _tls_enabled(self) -> bool:
        opts = self.client.options
        return bool(opts.pool_options._ssl_context is not None)  # pymongo has no public accessor

    def _probe_auth_required(self) -> bool | None:
        if self.uri.username is not None:
            return None  # we are logged in; cannot tell whether anonymous access works
        try:
            self.client.admin.command("listDatabases", nameOnly=True)
        except OperationFailure as exc:
            return True if exc.code == _UNAUTHORIZED else None
        except PyMongoError:
            return None
        return False

    def list_datasets(self) -> list[str]:
        names: list[str] = []
        for db in self._call("list databases", self.client.list_database_names):
            if db in _SYSTEM_DBS:
                continue
            colls = self._call(
                f"list collections of {db}",
                partial(self.client[db].list_collection_names, filter={"type": "collection"}),
            )
            names.extend(f"{db}.{c}" for c in colls if not c.startswith("system."))
        return sorted(names)

    def _collection(self, dataset: str) -> Any:
        """The collection of ``dataset``; ``NotFound`` when the server has no such collection
        (a listing, not a count: some servers count by scanning)."""
        db, coll = split_dataset(dataset)
        database = self.client[db]
        existing = self._call(
            f"list collections of {db}",
            lambda: database.list_collection_names(filter={"name": coll}),
        )
        if coll not in existing:
            raise NotFound(
                f"no collection {dataset!r} on {self.uri.redacted}",
                hint="`affidavit inventory` lists the datasets; MongoDB datasets are db.collection",
            )
        return database[coll]

    def count_records(self, dataset: str) -> int:
        collection = self._collection(dataset)
        return int(self._call(f"count {dataset}", lambda: collection.count_documents({})))

    def estimate_records(self, dataset: str) -> int:
        """The collection's count from its metadata (``estimatedDocumentCount``): no scan on
        mongod; may lag an unclean shutdown, which a progress bar tolerates."""
        collection = self._collection(dataset)
        return int(
            self._call(f"estimate the size of {dataset}", collection.estimated_document_count)
        )

    def iter_records(self, dataset: str) -> Iterator[bytes | RedisRecord]:
        self._collection(dataset)  # NotFound for an unknown collection
        db, coll = split_dataset(dataset)
        raw = self.client[db].get_collection(
            coll, codec_options=CodecOptions(document_class=RawBSONDocument)
        )
        try:
            # no sort: natural order streams fastest; the fingerprint is order-independent
            with raw.find({}, batch_size=2000, no_cursor_timeout=False) as cursor:
                for doc in cursor:
                    assert isinstance(doc, RawBSONDocument)
                    yield bytes(doc.raw)
        except OperationFailure as exc:
            raise EngineError(
                f"MongoDB at {self.uri.redacted} failed while reading {dataset}: {_first_line(exc)}"
            ) from exc
        except PyMongoError as exc:
            raise EngineError(
                f"lost MongoDB at {self.uri.redacted} while reading {dataset}: {_first_line(exc)}"
            ) from exc

    @contextmanager
    def dataset_snapshot(self) -> Iterator[MongoSnapshot]:
        """A point-in-time view for a backup: a snapshot session (MongoDB 5.0+ replica sets)
        whose reads all see one cluster time, recorded as the consistency point. Where the
        server refuses snapshot reads (standalone, older versions), reads fall back to plain
        per-collection reads and the consistency record says so, with the operation times
        before and after."""
        client = self.client
        session = None
        mode = "snapshot"
        try:
            session = client.start_session(snapshot=True)
            # probe: the first read fixes the snapshot time
            self._call(
                "open a snapshot", lambda: list(client.admin.list_collections(session=session))
            )
        except (EngineError, PyMongoError, ConfigurationError):
            if session is not None:
                session.end_session()
            session = client.start_session(causal_consistency=True)
            mode = "per-collection"
        started = self._call("read the cluster time", lambda: client.admin.command("hello"))
        snap = MongoSnapshot(self, session, mode, started.get("operationTime"))
        try:
            yield snap
        finally:
            session.end_session()

    def restore(
        self,
        dataset: str,
        records: Iterable[bytes | RedisRecord],
        *,
        metadata: bytes | None = None,
    ) -> int:
        """Restore one collection from mongodump data: create it with the options of its
        ``COLL.metadata.json`` (``metadata``, canonical Extended JSON; None for default
        options), insert the raw BSON documents unchanged in batches (ordered, so the first
        refused document stops the load), then create its indexes (all but ``_id_``).
        Returns the number of documents inserted. Refuses (``InputError``) a collection that
        already holds documents; raises ``EngineError`` when the server refuses a step."""
        db, coll = split_dataset(dataset)
        database = self.client[db]
        meta = _parse_metadata(dataset, metadata)
        existing = self._call(
            f"list collections of {db}",
            lambda: database.list_collection_names(filter={"name": coll}),
        )
        if coll in existing:
            if self._call(f"count {dataset}", lambda: database[coll].count_documents({}, limit=1)):
                raise InputError(
                    f"{dataset} on {self.uri.redacted} already holds documents",
                    hint="restore into an empty target",
                )
        else:
            options = dict(meta.get("options") or {})
            self._call(f"create {dataset}", lambda: database.create_collection(coll, **options))
        target = database.get_collection(
            coll, codec_options=CodecOptions(document_class=RawBSONDocument)
        )
        loaded = 0
        batch: list[RawBSONDocument] = []
        size = 0
        for number, raw in enumerate(records, start=1):
            if not isinstance(raw, bytes):
                raise InputError(f"record {number} for {dataset} is not a BSON document")
            try:
                batch.append(RawBSONDocument(raw))
            except InvalidBSON as exc:
                raise InputError(f"document {number} for {dataset} is not BSON: {exc}") from exc
            size += len(raw)
            if len(batch) >= _LOAD_BATCH_DOCS or size >= _LOAD_BATCH_BYTES:
                loaded += self._insert(dataset, target, batch)
                batch, size = [], 0
        if batch:
            loaded += self._insert(dataset, target, batch)
        indexes = [
            {k: v for k, v in dict(ix).items() if k not in ("v", "ns")}
            for ix in meta.get("indexes") or []
            if dict(ix).get("name") != "_id_"
        ]
        if indexes:
            self._call(
                f"create the indexes of {dataset}",
                lambda: database.command({"createIndexes": coll, "indexes": indexes}),
            )
        return loaded

    def _insert(self, dataset: str, target: Any, batch: list[RawBSONDocument]) -> int:
        # ordered: any refused document raises, so a return means the whole batch is in
        # (pymongo reports no inserted_ids for raw documents)
        self._call(f"insert into {dataset}", lambda: target.insert_many(batch, ordered=True))
        return len(batch)

    def change_log_gap(self) -> str:
        return (
            "the oplog is unavailable (standalone server, or rolled over past the backup): "
            "drift cannot be told apart from corruption"
        )

    def query_probes(self) -> QueryProbes:
        """This engine answers probes with queries."""
        return self

    def count_matching(self, dataset: str, query: Mapping[str, Any]) -> int:
        """The number of documents matching ``query`` (MongoDB Extended JSON, e.g.
        ``{"_id": {"$oid": "..."}}``). Raises ``NotFound``, ``InputError`` for a query the
        driver cannot encode, ``EngineError`` when the server refuses it."""
        self._collection(dataset)
        db, coll = split_dataset(dataset)
        flt = _extjson_query(query)
        collection = self.client[db][coll]
        return int(self._call(f"count {dataset}", lambda: collection.count_documents(flt)))

    def find_one_json(self, dataset: str, query: Mapping[str, Any]) -> dict[str, Any] | None:
        """The first document matching ``query`` (Extended JSON) as relaxed Extended JSON
        (JSON-ready), or None. Raises like :meth:`count_matching`."""
        self._collection(dataset)
        db, coll = split_dataset(dataset)
        flt = _extjson_query(query)
        collection = self.client[db][coll]
        doc = self._call(f"query {dataset}", lambda: collection.find_one(flt))
        if doc is None:
            return None
        out: dict[str, Any] = json.loads(
            json_util.dumps(doc, json_options=json_util.RELAXED_JSON_OPTIONS)
        )
        return out

    def seed_sample(self, *, seed: int, scale: int) -> Mapping[str, int]:
        rng = random.Random(seed)  # noqa: S311 - demo data, not secrets
        shop = self.client["shop"]
        for coll in ("customers", "orders"):
            if self._call("check the sample target", shop[coll].estimated_document_count):
                raise InputError(
                    f"shop.{coll} on {self.uri.redacted} already holds data",
                    hint="seed an empty server",
                )
        customers = [_customer(rng, i) for i in range(scale)]
        orders = [_order(rng, i, customers) for i in range(scale * 3)]
        self._call("write customers", lambda: shop.customers.insert_many(customers, ordered=True))
        self._call("write orders", lambda: shop.orders.insert_many(orders, ordered=True))
        return {"shop.customers": len(customers), "shop.orders": len(orders)}

    def keys_changed_since(
        self, dataset: str, keys: Sequence[bytes], point: Mapping[str, Any] | None
    ) -> set[bytes] | None:
        """Keys with an oplog entry (insert, update, replace, delete) in ``dataset`` after the
        backup's consistency point: its snapshot ``cluster_time``, or for per-collection reads
        ``operation_time_before`` (any op after the first read may explain a difference).
        None when there is no oplog (standalone server) or it no longer reaches back to the
        point; keys that are not decodable ``_id`` elements are never reported."""
        since = _consistency_timestamp(point)
        if since is None:
            return None
        oplog = self.client.local.get_collection("oplog.rs")
        names = self._call(
            "look for the oplog",
            lambda: self.client.local.list_collection_names(filter={"name": "oplog.rs"}),
        )
        if not names:
            return None
        first = self._call(
            "read the oplog", lambda: oplog.find_one({}, {"ts": 1}, sort=[("$natural", 1)])
        )
        if first is None or first["ts"] > since:
            return None  # empty, or rolled over past the backup: cannot tell
        by_id: dict[bytes, bytes] = {}
        for key in keys:
            value = _id_value(key)
            if value is not _UNDECODABLE:
                by_id[_id_element(value)] = key
        ids = [_id_value(k) for k in by_id.values()]
        changed: set[bytes] = set()
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            query = {
                "ns": dataset,
                "ts": {"$gt": since},
                "$or": [{"o._id": {"$in": chunk}}, {"o2._id": {"$in": chunk}}],
            }
            entries = self._call(
                f"read the oplog of {dataset}",
                lambda q=query: list(oplog.find(q, {"o._id": 1, "o2._id": 1})),  # type: ignore[misc]
            )
            for entry in entries:
                for part in ("o", "o2"):
                    sub = entry.get(part)
                    if isinstance(sub, Mapping) and "_id" in sub:
                        found = by_id.get(_id_element(sub["_id"]))
                        if found is not None:
                            changed.add(found)
        return changed

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None


_UNDECODABLE = object()


def _id_value(key: bytes) -> Any:
    """The ``_id`` value of an exact-profile key (the raw ``_id`` element)."""
    try:
        return bson.decode(struct.pack("<i", len(key) + 5) + key + b"\x00").get("_id")
    except Exception:  # a key that is not a BSON element is not looked up
        return _UNDECODABLE


def _id_element(value: Any) -> bytes:
    """The raw ``_id`` element of ``value`` as the driver encodes it (a lookup key)."""
    return bytes(bson.encode({"_id": value})[4:-1])


def _consistency_timestamp(point: Mapping[str, Any] | None) -> Timestamp | None:
    if not point:
        return None
    for name in ("cluster_time", "operation_time_before", "operation_time_after"):
        value = point.get(name)
        if isinstance(value, Mapping) and "t" in value and "i" in value:
            return Timestamp(int(value["t"]), int(value["i"]))
    return None


class MongoSnapshot:
    """Reads of one backup: raw documents and mongodump metadata, at one consistency point."""

    def __init__(
        self, engine: MongoEngine, session: ClientSession, mode: str, start_time: Any
    ) -> None:
        self._engine = engine
        self._session = session
        self.mode = mode
        self._start_time = start_time

    @property
    def consistency(self) -> dict[str, Any]:
        """What the backup can claim about its point in time (JSON-ready)."""
        snap_time = getattr(self._session, "_snapshot_time", None) or self._session.operation_time
        out: dict[str, Any] = {"mode": self.mode}
        if self.mode == "snapshot" and snap_time is not None:
            out["cluster_time"] = {"t": snap_time.time, "i": snap_time.inc}
        else:
            if self._start_time is not None:
                out["operation_time_before"] = {
                    "t": self._start_time.time,
                    "i": self._start_time.inc,
                }
            end = self._session.operation_time
            if end is not None:
                out["operation_time_after"] = {"t": end.time, "i": end.inc}
            out["note"] = "no snapshot reads: collections were read one after another"
        return out

    def iter_raw(self, dataset: str, query: Mapping[str, Any] | None = None) -> Iterator[bytes]:
        """The collection's documents as raw BSON, at the snapshot (matching ``query``)."""
        db, coll = split_dataset(dataset)
        raw = self._engine.client[db].get_collection(
            coll, codec_options=CodecOptions(document_class=RawBSONDocument)
        )
        try:
            with raw.find(dict(query or {}), batch_size=2000, session=self._session) as cursor:
                for doc in cursor:
                    assert isinstance(doc, RawBSONDocument)
                    yield bytes(doc.raw)
        except PyMongoError as exc:
            raise EngineError(
                f"lost MongoDB at {self._engine.uri.redacted} while reading {dataset}: "
                f"{_first_line(exc)}",
                hint="a snapshot older than the server's snapshot window fails "
                "(minSnapshotHistoryWindowInSeconds); retry, or back up fewer collections at once",
            ) from exc

    def metadata_json(self, dataset: str) -> bytes:
        """``COLL.metadata.json`` as mongodump writes it: options, indexes, uuid, name, in
        canonical Extended JSON, so that stock mongorestore recreates the collection."""
        db, coll = split_dataset(dataset)
        database = self._engine.client[db]
        infos = self._engine._call(
            f"read the options of {dataset}",
            lambda: list(database.list_collections(filter={"name": coll})),
        )
        if not infos:
            raise NotFound(f"no collection {dataset!r}")
        info = infos[0]
        indexes = self._engine._call(
            f"read the indexes of {dataset}", lambda: list(database[coll].list_indexes())
        )
        uuid_value = info.get("info", {}).get("uuid")
        doc = {
            "indexes": [dict(ix) for ix in indexes],
            "uuid": uuid_value.hex() if isinstance(uuid_value, bytes) else "",
            "collectionName": coll,
            "type": info.get("type", "collection"),
            "options": dict(info.get("options", {})),
        }
        return json_util.dumps(doc, json_options=json_util.CANONICAL_JSON_OPTIONS).encode()


_LOAD_BATCH_DOCS = 1000
_LOAD_BATCH_BYTES = 8 << 20


def _parse_metadata(dataset: str, metadata_json: bytes | None) -> dict[str, Any]:
    """A mongodump ``COLL.metadata.json`` as BSON-typed values; ``{}`` for None."""
    if metadata_json is None:
        return {}
    try:
        meta = json_util.loads(metadata_json.decode("utf-8"))
    except (ValueError, TypeError, UnicodeDecodeError) as exc:
        raise InputError(f"the metadata of {dataset} is not mongodump metadata: {exc}") from exc
    if not isinstance(meta, dict):
        raise InputError(f"the metadata of {dataset} is not a JSON object")
    return dict(meta)


def _extjson_query(query: Mapping[str, Any]) -> dict[str, Any]:
    """A JSON query with Extended JSON values (``$oid``, ``$date``, ...) as BSON types."""
    try:
        flt = json_util.loads(json.dumps(dict(query)))
    except (ValueError, TypeError) as exc:
        raise InputError(f"not a MongoDB Extended JSON query: {exc}") from exc
    if not isinstance(flt, dict):
        raise InputError("a MongoDB query is a JSON object")
    return dict(flt)


def split_dataset(dataset: str) -> tuple[str, str]:
    """Split ``db.collection`` (the collection part may itself contain dots)."""
    db, sep, coll = dataset.partition(".")
    if not sep or not db or not coll:
        raise InputError(
            f"a MongoDB dataset is named db.collection, not {dataset!r}",
            hint="for example shop.orders",
        )
    return db, coll


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__


_FIRST = (
    "Ada",
    "Grace",
    "Alan",
    "Edsger",
    "Barbara",
    "Donald",
    "Frances",
    "Ken",
    "Radia",
    "Leslie",
)
_LAST = (
    "Lovelace",
    "Hopper",
    "Turing",
    "Dijkstra",
    "Liskov",
    "Knuth",
    "Allen",
    "Thompson",
    "Perlman",
    "Lamport",
)
_CITIES = ("Lisbon", "Oslo", "Nairobi", "Osaka", "Lima", "Tallinn", "Austin", "Porto")
_SKUS = ("disk-4tb", "tape-lto9", "nvme-2tb", "ssd-1tb", "hba-32g", "nic-100g")


def _customer(rng: random.Random, i: int) -> dict[str, Any]:
    first, last = rng.choice(_FIRST), rng.choice(_LAST)
    base = datetime(2025, 1, 1, tzinfo=UTC)
    return {
        "_id": ObjectId(f"{0x65000000 + i:08x}{_hex(rng, 16)}"),
        "name": {"first": first, "last": last},
        "email": f"{first}.{last}.{i}@example.com".lower(),
        "city": rng.choice(_CITIES),
        "since": base + timedelta(days=rng.randrange(0, 600), seconds=rng.randrange(86400)),
        "vip": rng.random() < 0.2,
        "credit_limit": Decimal128(Decimal(rng.randrange(1000, 500000)) / 100),
        "lifetime_orders": Int64(rng.randrange(0, 10_000)),
        "score": rng.random() * 100,
        "tags": rng.sample(["b2b", "retail", "eu", "us", "apac", "beta"], k=rng.randrange(0, 4)),
        "external_id": Binary.from_uuid(uuid.UUID(int=rng.getrandbits(128), version=4)),
        "avatar": Binary(rng.randbytes(16)),
        "phone": None if rng.random() < 0.3 else f"+1-555-{rng.randrange(10**4):04d}",
        "pattern": Regex(r"^acct-\d+$", "i"),
        "updated": Timestamp(1_750_000_000 + i, 1),
    }


def _order(rng: random.Random, i: int, customers: list[dict[str, Any]]) -> dict[str, Any]:
    prices = [(rng.randrange(500, 90000), rng.randrange(1, 20)) for _ in range(rng.randrange(1, 5))]
    lines = [
        {
            "sku": rng.choice(_SKUS),
            "qty": qty,
            "unit_price": Decimal128(Decimal(cents) / 100),
        }
        for cents, qty in prices
    ]
    return {
        "_id": i + 1,
        "customer_id": rng.choice(customers)["_id"],
        "placed_at": datetime(2026, 1, 1, tzinfo=UTC) + timedelta(minutes=rng.randrange(500_000)),
        "status": rng.choice(["placed", "paid", "shipped", "delivered", "returned"]),
        "lines": lines,
        "shipping": {"city": rng.choice(_CITIES), "express": rng.random() < 0.1},
        "total_cents": Int64(sum(cents * qty for cents, qty in prices)),
    }


def _hex(rng: random.Random, hex_digits: int) -> str:
    """``hex_digits`` pseudo-random hex digits from ``rng``."""
    return f"{rng.getrandbits(hex_digits * 4):0{hex_digits}x}"
