"""Restore drills: restore a backup into a throwaway target, prove the restored data equals the
backup's manifest, run probe queries, time everything against the recovery-time objective, tear
the target down and record a signed result.

Phases, each timed on its own (seconds, monotonic clock):

``fetch``
    check the vault's copy of the signed manifest as ``verify`` does
    (:func:`~affidavit.services.verify.check_manifest_copy`: a missing, replaced or differing
    copy is a finding, and the drill goes on), then read every needed artifact's ciphertext
    from the vault into a private temporary folder, checking its size and SHA-256 against the
    catalog;
``decrypt``
    unwrap the backup's age identity and decrypt the artifacts (a Redis RDB is decrypted
    straight into the scratch server's ``dbfilename``);
``load``
    Redis: start a scratch ``redis-server`` on that RDB, until it answers PING (not
    ``-LOADING``); MongoDB: start a scratch SecantusDB server (or connect to the user-named
    empty target) and insert the mongodump data with its collection options and indexes;
``verify``
    re-fingerprint every dataset of the manifest from the restored server (the engine's
    ``iter_records`` and the ``exact`` codec) and require equality with the manifest;
``probes``
    run the probe queries of ``--probe FILE`` (see :func:`load_probes`).

``restore_seconds`` is fetch + decrypt + load; the drill passes the RTO when the total (all five
phases) is within it. A failure in any phase is a finding (the drill is recorded as failed);
bad input (a malformed probe file, a refused target) raises :class:`InputError` before
anything is fetched or recorded. The scratch server is always stopped by PID, whatever
happens. The result is one unit of work: the signed drill attestation, the ``drill.completed``
event and the catalog row.
"""

from __future__ import annotations

import fnmatch
import itertools
import json
import operator
import os
import stat
import time
import tomllib
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol, TypeVar, runtime_checkable

from affidavit import __version__
from affidavit.constants import EngineName
from affidavit.crypto.age import decrypt_to
from affidavit.crypto.digest import Sha256Stream, sha256_hex
from affidavit.crypto.dsse import Envelope
from affidavit.engines.base import Engine
from affidavit.errors import (
    Error,
    FormatError,
    InputError,
    IntegrityError,
    OperationError,
)
from affidavit.formats.base import open_binary
from affidavit.formats.keys import describe_key
from affidavit.formats.mongodump import iter_bson_file
from affidavit.formats.mongodump_archive import ArchiveReader
from affidavit.ledger.attestation import (
    BACKUP_PREDICATE_TYPE,
    DRILL_PREDICATE_TYPE,
    Statement,
    Subject,
    verify_attestation,
)
from affidavit.models.backup import ArtifactRole, Backup, BackupArtifact, BackupStatus
from affidavit.models.checks import CheckCode, Drill, Finding
from affidavit.models.inventory import Source
from affidavit.models.progress import Reporter, SilentReporter
from affidavit.models.records import RecordEncoding, RedisRecord
from affidavit.models.uri import ConnectionUri
from affidavit.private_temp import open_private, private_folder, sweep
from affidavit.scratch.base import ScratchServer
from affidavit.services.artifacts import CHUNK
from affidavit.services.backends import engine_for_uri, vault_backend
from affidavit.services.context import App
from affidavit.services.fingerprint import (
    diff,
    fingerprint_rdb,
    fingerprint_records,
    prefers_snapshot,
    spool_redis_snapshot,
)
from affidavit.services.keys import keystore_for, unwrap_identity
from affidavit.services.ledger import attest_and_record
from affidavit.services.verify import check_manifest_copy
from affidavit.vaults.base import VaultBackend

SCRATCH = "scratch"
PROBE_KINDS = ("count", "find_one", "get")
PHASES = ("fetch", "decrypt", "load", "verify", "probes")
_DEFAULT_PORTS = {EngineName.MONGODB: 27017, EngineName.REDIS: 6379}
_KEYS_NAMED = 20  # differing keys named in a fingerprint-mismatch finding
_PROBE_FIELDS = {"name", "dataset", "kind", "query", "key", "expect"}
_PROBE_FILE_MAX = 4 << 20  # bytes: a probe file is a short list of queries


def _now() -> datetime:
    return datetime.now(UTC)


def _before_verify(target_uri: str) -> None:
    """Runs between the load and the verify phase with the restored target's URI. A no-op;
    tests replace it to simulate a lossy restore (a record changed before re-fingerprinting)."""


def new_drill_id(moment: datetime) -> str:
    """``dr-20261128T074512Z-3f9a1c``: sortable by time, unique by the random suffix."""
    return f"dr-{moment.strftime('%Y%m%dT%H%M%SZ')}-{os.urandom(3).hex()}"


@runtime_checkable
class DatasetLoader(Protocol):
    """An engine that can restore a dataset from its backup form (MongoDB)."""

    def load_dataset(
        self, dataset: str, raw_docs: Iterable[bytes], metadata_json: bytes | None
    ) -> int:
        """Create the dataset and insert the documents; refuse a non-empty target."""


@runtime_checkable
class RecordLoader(Protocol):
    """An engine that can write typed records into a dataset (Redis, into a named target)."""

    def load_records(self, dataset: str, records: Iterable[RedisRecord]) -> int:
        """Write ``records`` into ``dataset``; refuse a non-empty target."""


@runtime_checkable
class QueryProbes(Protocol):
    """An engine that answers query probes (MongoDB)."""

    def count_matching(self, dataset: str, query: Mapping[str, Any]) -> int:
        """Documents matching ``query``."""

    def find_one_json(self, dataset: str, query: Mapping[str, Any]) -> dict[str, Any] | None:
        """The first document matching ``query`` as relaxed Extended JSON."""


# -- probes -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Probe:
    """One probe query with its expected result (see ``docs/drills.md``)."""

    name: str
    dataset: str
    kind: str  # count | find_one | get
    query: Any = None  # count: MongoDB filter (object) or Redis key pattern (string); find_one
    key: Any = None  # get: MongoDB _id value or Redis key (string)
    expect: Any = None

    def to_json(self) -> dict[str, Any]:
        """JSON-ready."""
        out: dict[str, Any] = {"name": self.name, "dataset": self.dataset, "kind": self.kind}
        if self.query is not None:
            out["query"] = self.query
        if self.key is not None:
            out["key"] = self.key
        out["expect"] = self.expect
        return out


def load_probes(path: Path, *, engine: EngineName, datasets: Iterable[str]) -> list[Probe]:
    """Read and check a probe file (TOML ``[[probe]]`` tables, or JSON: a list or
    ``{"probes": [...]}``) for a backup of ``engine`` holding ``datasets``.

    Raises :class:`InputError` naming the file, the probe and the field for anything wrong."""
    try:
        text = _read_probe_file(path).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(f"cannot read probe file {path}: {exc}") from exc
    data: Any
    try:
        data = json.loads(text) if path.suffix.lower() == ".json" else tomllib.loads(text)
    except (ValueError, tomllib.TOMLDecodeError) as exc:
        kind = "JSON" if path.suffix.lower() == ".json" else "TOML"
        raise InputError(f"probe file {path} is not valid {kind}: {exc}") from exc
    if isinstance(data, dict):
        extra = set(data) - {"probe", "probes"}
        if extra:
            raise InputError(
                f"probe file {path}: unknown top-level key(s) {', '.join(sorted(extra))}",
                hint="the file holds [[probe]] tables (TOML) or a 'probes' list (JSON)",
            )
        data = data.get("probe", data.get("probes"))
    if not isinstance(data, list) or not data:
        raise InputError(
            f"probe file {path} holds no probes",
            hint="define at least one [[probe]] table (TOML) or a 'probes' list (JSON)",
        )
    known = set(datasets)
    probes: list[Probe] = []
    names: set[str] = set()
    for number, item in enumerate(data, start=1):
        probe = _check_probe(path, number, item, engine=engine, datasets=known)
        if probe.name in names:
            raise InputError(
                f"probe file {path}: probe {number}: the name {probe.name!r} is used twice"
            )
        names.add(probe.name)
        probes.append(probe)
    return probes


def _read_probe_file(path: Path) -> bytes:
    """The bytes of a probe file, which must be a regular file (a symbolic link to one is
    fine). It is opened non-blocking and checked through the open descriptor, so a named
    pipe, a socket or a device (also one put there after a check) is refused at once and
    never read: nothing blocks."""
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError as exc:
        raise InputError(f"probe file {path} does not exist") from exc
    except OSError as exc:  # a socket cannot be opened at all (ENXIO)
        if os.path.exists(path) and not os.path.isfile(path):
            raise InputError(f"probe file {path} is not a regular file") from exc
        raise InputError(f"cannot read probe file {path}: {exc.strerror or exc}") from exc
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            what = "a folder" if stat.S_ISDIR(mode) else "a named pipe, socket or device"
            raise InputError(
                f"probe file {path} is not a regular file (it is {what})",
                hint="give the path of a TOML or JSON file",
            )
        os.set_blocking(fd, True)
        with os.fdopen(fd, "rb", closefd=False) as fh:
            data = fh.read(_PROBE_FILE_MAX + 1)
    except OSError as exc:
        raise InputError(f"cannot read probe file {path}: {exc.strerror or exc}") from exc
    finally:
        os.close(fd)
    if len(data) > _PROBE_FILE_MAX:
        raise InputError(f"probe file {path} is larger than {_PROBE_FILE_MAX >> 20} MiB")
    return data


def _check_probe(
    path: Path, number: int, item: Any, *, engine: EngineName, datasets: set[str]
) -> Probe:
    where = f"probe file {path}: probe {number}"
    if not isinstance(item, dict):
        raise InputError(f"{where} is not a table/object")
    name = item.get("name")
    if isinstance(name, str) and name.strip():
        where += f" ({name!r})"

    def bad(message: str, hint: str | None = None) -> InputError:
        return InputError(f"{where}: {message}", hint=hint)

    unknown = set(item) - _PROBE_FIELDS
    if unknown:
        raise bad(
            f"unknown field(s) {', '.join(sorted(unknown))}",
            f"fields: {', '.join(sorted(_PROBE_FIELDS))}",
        )
    if not isinstance(name, str) or not name.strip():
        raise bad("'name' must be a non-empty string")
    dataset = item.get("dataset")
    if not isinstance(dataset, str) or not dataset:
        raise bad("'dataset' must be a string")
    if dataset not in datasets:
        raise bad(
            f"the backup holds no dataset {dataset!r}",
            f"it holds: {', '.join(sorted(datasets)) or 'nothing'}",
        )
    kind = item.get("kind")
    if kind not in PROBE_KINDS:
        raise bad(f"'kind' must be one of {'|'.join(PROBE_KINDS)}, not {kind!r}")
    if "expect" not in item:
        raise bad("'expect' is missing")
    query, key, expect = item.get("query"), item.get("key"), item["expect"]
    if kind == "count":
        if key is not None:
            raise bad("a count probe takes 'query', not 'key'")
        if not isinstance(expect, int) or isinstance(expect, bool) or expect < 0:
            raise bad("a count probe expects a whole number >= 0")
        if engine is EngineName.MONGODB and query is not None and not isinstance(query, dict):
            raise bad("a MongoDB count 'query' is a filter object, e.g. {status = \"paid\"}")
        if engine is EngineName.REDIS and query is not None and not isinstance(query, str):
            raise bad("a Redis count 'query' is a key pattern string, e.g. \"app0:user:*\"")
    elif kind == "find_one":
        if engine is not EngineName.MONGODB:
            raise bad("find_one probes are for MongoDB backups", 'use kind = "get" for Redis keys')
        if not isinstance(query, dict):
            raise bad("a find_one probe needs a 'query' filter object")
        if key is not None:
            raise bad("a find_one probe takes 'query', not 'key'")
        if not isinstance(expect, dict):
            raise bad("a find_one probe expects an object (fields the document must have)")
    else:  # get
        if query is not None:
            raise bad("a get probe takes 'key', not 'query'")
        if key is None:
            raise bad("a get probe needs a 'key'")
        if engine is EngineName.REDIS and not isinstance(key, str):
            raise bad("a Redis 'key' is a string")
        if engine is EngineName.MONGODB and not isinstance(expect, dict):
            raise bad("a MongoDB get probe expects an object (fields the document must have)")
    return Probe(name=name.strip(), dataset=dataset, kind=kind, query=query, key=key, expect=expect)


def _probe_result(probe: Probe, actual: Any, ok: bool, error: str | None = None) -> dict[str, Any]:
    out = {**probe.to_json(), "ok": ok, "actual": actual}
    if error is not None:
        out["error"] = error
    return out


def _subset(expected: Mapping[str, Any], actual: Mapping[str, Any] | None) -> bool:
    """Every expected field has the expected value in ``actual``."""
    return actual is not None and all(k in actual and actual[k] == v for k, v in expected.items())


def _redis_json(record: RedisRecord) -> Any:
    """A Redis value as JSON-ready data, to compare with a probe's ``expect``."""

    def s(b: bytes) -> str:
        return b.decode("utf-8", errors="backslashreplace")

    value: Any = record.value
    if record.type == "string":
        return s(value)
    if record.type == "list":
        return [s(v) for v in value]
    if record.type == "set":
        return sorted(s(v) for v in value)
    if record.type == "zset":
        return {s(m): score for m, score in value}
    if record.type == "hash":
        return {s(f): s(v) for f, v in value}
    return [[s(i), {s(f): s(v) for f, v in fields}] for i, fields in value]  # stream


def _redis_expect_equal(expect: Any, actual: Any) -> bool:
    """Strings and lists compare whole (a set's members in any order); an object (hash
    fields, sorted-set scores) names the fields the value must have."""
    if isinstance(expect, dict):
        return isinstance(actual, dict) and _subset(expect, actual)
    if (
        isinstance(expect, list)
        and isinstance(actual, list)
        and all(isinstance(x, str) for x in expect)
    ):
        return expect == actual or sorted(expect) == actual  # sets come sorted
    return bool(expect == actual)


class _RedisProbeWatch:
    """Answers Redis probes from the records the verify phase streams anyway (one pass)."""

    def __init__(self, probes: list[Probe]) -> None:
        self.probes = probes
        self.counts = {p.name: 0 for p in probes if p.kind == "count"}
        self.values: dict[str, Any] = {}
        self._keys = {
            str(p.key).encode("utf-8", errors="surrogateescape"): p
            for p in probes
            if p.kind == "get"
        }

    def watch(self, dataset: str, records: Iterable[Any]) -> Iterator[Any]:
        mine = [p for p in self.probes if p.dataset == dataset and p.kind == "count"]
        keys = {k: p for k, p in self._keys.items() if p.dataset == dataset}
        for record in records:
            assert isinstance(record, RedisRecord)
            for probe in mine:
                if probe.query is None or fnmatch.fnmatchcase(
                    record.key.decode("utf-8", errors="surrogateescape"), probe.query
                ):
                    self.counts[probe.name] += 1
            wanted = keys.get(record.key)
            if wanted is not None:
                self.values[wanted.name] = _redis_json(record)
            yield record

    def results(self) -> list[dict[str, Any]]:
        out = []
        for probe in self.probes:
            if probe.kind == "count":
                got: Any = self.counts[probe.name]
                out.append(_probe_result(probe, got, got == probe.expect))
            else:
                got = self.values.get(probe.name)
                out.append(_probe_result(probe, got, _redis_expect_equal(probe.expect, got)))
        return out


def _mongo_probes(engine: Engine, probes: list[Probe]) -> list[dict[str, Any]]:
    if not isinstance(engine, QueryProbes):
        raise OperationError(f"the {engine.name} engine cannot run query probes")
    out = []
    for probe in probes:
        try:
            if probe.kind == "count":
                got: Any = engine.count_matching(probe.dataset, probe.query or {})
                out.append(_probe_result(probe, got, got == probe.expect))
            else:
                query = probe.query if probe.kind == "find_one" else {"_id": probe.key}
                doc = engine.find_one_json(probe.dataset, query)
                out.append(_probe_result(probe, doc, _subset(probe.expect, doc)))
        except Error as exc:
            out.append(_probe_result(probe, None, False, exc.message))
    return out


# -- targets ----------------------------------------------------------------------------------


def engine_of_backup(backup: Backup) -> EngineName:
    """The engine a backup restores into, from its format."""
    if backup.format == "rdb":
        return EngineName.REDIS
    if backup.format in ("mongodump", "mongodump-archive"):
        return EngineName.MONGODB
    raise InputError(
        f"backup {backup.id} is a {backup.format} backup, which drills cannot restore yet",
        hint="drills restore mongodump, mongodump-archive and rdb backups",
    )


def _endpoints(uri: ConnectionUri) -> set[str]:
    """``host:port`` of every host, normalised (lower case, default port, loopback names)."""
    out = set()
    for host in uri.hosts:
        name, port = host, str(_DEFAULT_PORTS[uri.engine])
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


def _data_artifacts(backup: Backup, engine: EngineName) -> list[BackupArtifact]:
    """The artifacts a restore reads: the RDB or the archive, or every dataset's BSON and
    metadata."""
    live = [a for a in backup.artifacts if not a.deleted]
    if engine is EngineName.REDIS or backup.format == "mongodump-archive":
        data = [a for a in live if a.role is ArtifactRole.DATA]
        if len(data) != 1:
            raise InputError(f"backup {backup.id} has {len(data)} data artifacts, not one")
        return data
    wanted = {d.name for d in backup.datasets}
    out = [a for a in live if a.role is ArtifactRole.DATA and a.dataset in wanted]
    stems = {_stem(a.path) for a in out}
    out += [
        a
        for a in live
        if a.role is ArtifactRole.METADATA
        and a.path.endswith(_META_SUFFIXES)
        and _meta_stem(a.path) in stems
    ]
    return out


_DATA_SUFFIXES = (".bson.gz.age", ".bson.age")
_META_SUFFIXES = (".metadata.json.gz.age", ".metadata.json.age")


def _stem(path: str) -> str:
    for suffix in _DATA_SUFFIXES:
        if path.endswith(suffix):
            return path[: -len(suffix)]
    return path


def _meta_stem(path: str) -> str:
    for suffix in _META_SUFFIXES:
        if path.endswith(suffix):
            return path[: -len(suffix)]
    return path


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
    dest.parent.mkdir(parents=True, exist_ok=True)
    with src.open("rb") as fin, open_private(dest) as fout:
        decrypt_to(fin, fout, identity)


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
    engine = engine_of_backup(backup)
    rto = app.settings.rto_seconds if rto_seconds is None else rto_seconds
    if not rto > 0:
        raise InputError(f"the RTO must be more than 0 seconds, not {rto}")
    probes = (
        load_probes(probe_file, engine=engine, datasets=[d.name for d in backup.datasets])
        if probe_file is not None
        else []
    )
    artifacts = _data_artifacts(backup, engine)
    target_uri = _check_target(app, engine, target, force=force)
    if force and target_uri is not None:
        rep.stage(f"unsafe: --force restores into {target_uri.redacted}")
    backend = vault_backend(vault)
    started = _now()
    timer = _Timer()
    sweep()  # what killed drills left (their scratch servers first), before making more
    with private_folder("drill") as tmp:
        state = _State(backup=backup, engine=engine, workdir=tmp, rep=rep)
        state.findings.extend(_signed_manifest_findings(app, backup))
        if target_uri is None:  # fail before the clock starts when the server is missing
            state.scratch = _new_scratch(engine, state.workdir)
        try:
            timer.run("fetch", lambda: _fetch_all(state, backend, artifacts))
            timer.run("decrypt", lambda: _decrypt_all(app, state, artifacts))
            timer.run("load", lambda: _load(app, state, target_uri))
            assert state.uri is not None
            _before_verify(state.uri)
            watch = _RedisProbeWatch(probes) if engine is EngineName.REDIS and probes else None
            timer.run("verify", lambda: _verify(app, state, backend, watch))
            if probes:
                timer.run("probes", lambda: _probes(app, state, probes, watch))
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
        target=_target_label(engine, target_uri),
        forced=force and target_uri is not None,
    )


def _target_label(engine: EngineName, uri: ConnectionUri | None) -> str:
    if uri is None:
        return f"scratch:{'redis-server' if engine is EngineName.REDIS else 'secantus'}"
    return uri.redacted


def _new_scratch(engine: EngineName, workdir: Path) -> ScratchServer:
    if engine is EngineName.REDIS:
        from affidavit.scratch.redis_server import RedisScratch

        folder = workdir / "redis"
        folder.mkdir()
        return RedisScratch(workdir=folder)
    from affidavit.scratch.secantus_server import SecantusScratch

    folder = workdir / "secantus"
    folder.mkdir()
    return SecantusScratch(workdir=folder)


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
        if state.engine is EngineName.REDIS and state.scratch is not None:
            # straight into the scratch server's dbfilename: its start-up is the load
            dest = state.scratch.workdir / "dump.rdb"
        else:
            dest = state.workdir / "plain" / artifact.path.removesuffix(".age")
        _decrypt(state.fetched[artifact.path], dest, identity)
        state.plain[artifact.path] = dest
        state.fetched[artifact.path].unlink()  # the ciphertext copy is no longer needed


def _load(app: App, state: _State, target: ConnectionUri | None) -> None:
    if state.engine is EngineName.REDIS and target is not None:
        _load_redis_target(app, state, target)
        return
    if state.engine is EngineName.REDIS:
        from affidavit.scratch.redis_server import RedisScratch

        assert state.scratch is not None
        rdb = next(iter(state.plain.values()))
        state.rep.stage("loading the RDB into a scratch redis-server")
        # streams its RDB to the verify phase at once (no wait for more replicas)
        scratch = RedisScratch(workdir=state.scratch.workdir, rdb=rdb, replica_sync_delay=0)
        state.scratch = scratch
        scratch.start()
        state.uri = scratch.uri
        return
    if target is None:
        assert state.scratch is not None
        state.rep.stage("starting a scratch SecantusDB server")
        state.scratch.start()
        uri = ConnectionUri.parse(EngineName.MONGODB, state.scratch.uri)
    else:
        uri = target
    state.uri = uri.text
    with engine_for_uri(
        EngineName.MONGODB, uri, password=None, timeout=max(app.settings.connect_timeout, 30)
    ) as engine:
        if not isinstance(engine, DatasetLoader):
            raise OperationError(f"the {engine.name} engine cannot load datasets")
        if state.backup.format == "mongodump-archive":
            _load_archive(state, engine)
            return
        by_dataset = {
            a.dataset: a
            for a in state.backup.artifacts
            if a.path in state.plain and a.role is ArtifactRole.DATA
        }
        metas = {
            _meta_stem(a.path): state.plain[a.path]
            for a in state.backup.artifacts
            if a.path in state.plain and a.role is ArtifactRole.METADATA
        }
        for dataset in state.backup.datasets:
            artifact = by_dataset.get(dataset.name)
            if artifact is None:
                raise IntegrityError(
                    f"backup {state.backup.id} has no data artifact for {dataset.name}"
                )
            meta = metas.get(_stem(artifact.path))
            metadata = _read_small(meta) if meta is not None else None
            state.rep.task(f"loading {dataset.name}", dataset.records)
            docs = _counted(
                iter_bson_file(state.plain[artifact.path], validate="framing"), state.rep
            )
            engine.load_dataset(dataset.name, docs, metadata)
            state.rep.finish()


def _load_redis_target(app: App, state: _State, target: ConnectionUri) -> None:
    """Parse the decrypted RDB (structure and CRC-64 checked to the end first) and write every
    dataset of the manifest into the named, empty Redis target with typed commands, in one
    more pass: an RDB holds each database's keys together, after its SELECTDB."""
    from affidavit.formats.rdb import RdbReader

    rdb = next(iter(state.plain.values()))
    reader = RdbReader(rdb)  # load semantics as of now: keys already expired are not written
    state.rep.stage("checking the RDB")
    reader.datasets()  # one full pass: a corrupt file fails before anything is written
    wanted = {dataset.name: dataset.records for dataset in state.backup.datasets}
    state.uri = target.text
    with engine_for_uri(
        EngineName.REDIS, target, password=None, timeout=max(app.settings.connect_timeout, 30)
    ) as engine:
        if not isinstance(engine, RecordLoader):
            raise OperationError(f"the {engine.name} engine cannot write records")
        for name, run in itertools.groupby(reader.iter_all(), key=operator.itemgetter(0)):
            if name not in wanted:
                continue  # a database the manifest does not list is not restored
            state.rep.task(f"loading {name}", wanted[name])
            records = (record for _, record in run)
            # a database met twice (a second SELECTDB) is refused: it is no longer empty
            engine.load_records(name, _counted(records, state.rep))
            state.rep.finish()


def _load_archive(state: _State, engine: DatasetLoader) -> None:
    """Restore every dataset of a ``mongodump --archive`` backup: its one data artifact holds
    all namespaces, each with its metadata (options, indexes) in the archive's prelude."""
    data = [
        a for a in state.backup.artifacts if a.path in state.plain and a.role is ArtifactRole.DATA
    ]
    if len(data) != 1:
        raise IntegrityError(
            f"backup {state.backup.id} should hold one archive, not {len(data)} data artifacts"
        )
    reader = ArchiveReader(state.plain[data[0].path])
    metadata = reader.prelude().metadata
    for dataset in state.backup.datasets:
        state.rep.task(f"loading {dataset.name}", dataset.records)
        meta = metadata.get(dataset.name)
        docs = _counted(reader.records(dataset.name), state.rep)
        engine.load_dataset(dataset.name, docs, meta.encode("utf-8") if meta else None)
        state.rep.finish()


_T = TypeVar("_T")


def _counted(items: Iterable[_T], rep: Reporter) -> Iterator[_T]:
    """``items`` as they are, counted on the progress bar in steps of 1,000."""
    for n, item in enumerate(items, start=1):
        if n % 1000 == 0:
            rep.advance(1000)
        yield item


def _read_small(path: Path) -> bytes:
    with open_binary(path) as stream:  # .gz metadata of ingested dumps is inflated here
        data: bytes = stream.read()
    return data


def _verify(app: App, state: _State, vault: VaultBackend, watch: _RedisProbeWatch | None) -> None:
    """Re-fingerprint what the target holds now and compare it with the manifest, dataset by
    dataset. A scratch ``redis-server``, and a named Redis target of 100,000 keys or more
    that allows ``SYNC``, is read back as a whole: its own RDB of the keyspace, taken over
    the replication protocol as ``backup run`` takes one (:func:`_verify_redis_rdb`); every
    other target is read record by record (MongoDB scans, Redis SCAN and typed reads)."""
    assert state.uri is not None
    uri = ConnectionUri.parse(state.engine, state.uri)
    with engine_for_uri(
        state.engine, uri, password=None, timeout=max(app.settings.connect_timeout, 30)
    ) as engine:
        names = [d.name for d in state.backup.datasets]
        if state.engine is EngineName.REDIS and (
            state.scratch is not None or prefers_snapshot(engine, names)
        ):
            if _verify_redis_rdb(app, state, vault, watch, engine):
                return
            state.rep.stage("the target refuses SYNC: reading it key by key")
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


def _verify_redis_rdb(
    app: App, state: _State, vault: VaultBackend, watch: _RedisProbeWatch | None, engine: Any
) -> bool:
    """The scratch server's keyspace as the server itself serialises it (an RDB streamed over
    ``SYNC``, read as of the moment it was asked for, structure and CRC-64 checked), through
    the RDB fingerprint pass of ``backup run``: about a second per million keys where reading
    them back key by key takes a minute. Probes see every record of that pass. False (nothing
    compared) when the server refuses ``SYNC``."""
    names = [d.name for d in state.backup.datasets]
    state.rep.stage("reading the restored keyspace back (its RDB, over SYNC)")
    spool = state.workdir / "restored" / "restored.rdb"
    spool.parent.mkdir(parents=True, exist_ok=True)
    reader = spool_redis_snapshot(engine, spool)
    if reader is None:
        return False
    if watch is None:  # the compiled pass: pairs only
        accumulators = fingerprint_rdb(reader, names)
        for name in names:
            index = _restored_index(state, name)
            fingerprint, _ = accumulators[name].finish(index, dataset=name, encoding="redis")
            _compare(app, state, vault, name, restored=fingerprint.text, index=index)
        return True
    for dataset in state.backup.datasets:  # the probes need the records themselves
        index = _restored_index(state, dataset.name)
        result = fingerprint_records(
            watch.watch(dataset.name, reader.records(dataset.name)),
            encoding=RecordEncoding.REDIS,
            profile="exact",
            reporter=state.rep,
            index=index,
            dataset=dataset.name,
        )
        _compare(app, state, vault, dataset.name, restored=result.fingerprint.text, index=index)
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
                    "key": describe_key(
                        header.encoding,
                        header.fingerprint.profile,
                        d.key,
                        truncated=d.key_truncated,
                    ),
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


def _probes(app: App, state: _State, probes: list[Probe], watch: _RedisProbeWatch | None) -> None:
    state.rep.stage("running probes")
    if watch is not None:
        state.probes = watch.results()
    else:
        assert state.uri is not None
        uri = ConnectionUri.parse(state.engine, state.uri)
        with engine_for_uri(
            state.engine, uri, password=None, timeout=app.settings.connect_timeout
        ) as engine:
            state.probes = _mongo_probes(engine, probes)
    for result in state.probes:
        if not result["ok"]:
            state.findings.append(
                Finding(
                    code=CheckCode.PROBE_FAILED.value,
                    message=f"probe {result['name']!r} expected "
                    f"{json.dumps(result['expect'], default=str)}, "
                    f"got {json.dumps(result['actual'], default=str)[:200]}",
                    subject=result["name"],
                    details={k: result[k] for k in ("dataset", "kind", "expect", "actual")}
                    | ({"error": result["error"]} if "error" in result else {}),
                )
            )


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
            {
                "drill_id": drill_id,
                "ok": ok,
                "target": target,
                "forced": forced,
                "scratch": state.scratch_info,
                "rto_seconds": rto,
                "restore_seconds": round(restore_seconds, 6),
                "total_seconds": round(total, 6),
                "phases": phases,
                "fingerprint_match": fingerprint_match,
                "datasets": {d["name"]: d["restored"] for d in state.datasets},
                "findings": sorted({f.code for f in state.findings}),
            },
        )
    return drill


def _signed_manifest_findings(app: App, backup: Backup) -> list[Finding]:
    """The drill's expectations (artifact digests, dataset fingerprints) come from catalog
    rows; this checks them against the signed manifest, so that a catalog edited behind
    affidavit's back cannot make a drill pass."""
    identity = app.ledger_identity()
    if identity is None or backup.envelope is None:
        return [
            Finding(
                code=CheckCode.MANIFEST_SIGNATURE_INVALID.value,
                message="the backup has no signed manifest to check the drill against",
                subject=backup.id,
            )
        ]
    try:
        statement = verify_attestation(
            Envelope.from_json(backup.envelope),
            {identity.keyid: identity.signer.key.public_key},
            predicate_type=BACKUP_PREDICATE_TYPE,
        )
    except (IntegrityError, FormatError) as exc:
        return [
            Finding(
                code=CheckCode.MANIFEST_SIGNATURE_INVALID.value,
                message=f"the manifest's signature does not verify: {exc.message}",
                subject=backup.id,
            )
        ]
    predicate = statement.predicate
    signed_datasets = {str(d["name"]): str(d["fingerprint"]) for d in predicate.get("datasets", [])}
    signed_artifacts = {(str(a["path"]), str(a["sha256"])) for a in predicate.get("artifacts", [])}
    recorded = {(a.path, a.sha256) for a in backup.artifacts if a.role is not ArtifactRole.MANIFEST}
    if signed_datasets != {d.name: d.fingerprint for d in backup.datasets} or (
        signed_artifacts != recorded
    ):
        return [
            Finding(
                code=CheckCode.MANIFEST_MISMATCH.value,
                message="the catalog's artifacts or fingerprints differ from the signed manifest",
                subject=backup.id,
            )
        ]
    return []


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
