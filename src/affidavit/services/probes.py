"""The drill probe language: the probe file format, its validation and the evaluation of probes
against a restored server (see ``docs/drills.md``).

A probe file is TOML (``[[probe]]`` tables) or JSON (a list, or ``{"probes": [...]}``); each
probe names a dataset of the backup, a kind (``count``, ``find_one``, ``get``) and the result
it expects. What a query and a key look like depends on how the engine encodes its records:
the :class:`ProbeDialect` of that :class:`~affidavit.models.records.RecordEncoding`
(:data:`DIALECTS`): MongoDB filters and ``_id`` values, or Redis key patterns and keys.

A restored server answers probes in one of two ways, as its engine declares
(:meth:`~affidavit.engines.base.Engine.query_probes`): with queries
(:func:`run_query_probes`), or from the records the drill reads back anyway
(:class:`ReadBackProbes`, one pass shared with the re-fingerprinting).
"""

from __future__ import annotations

import fnmatch
import json
import os
import stat
import tomllib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from affidavit.engines.base import QueryProbes
from affidavit.errors import Error, InputError
from affidavit.models.checks import CheckCode, Finding
from affidavit.models.records import RecordEncoding, RedisRecord

PROBE_KINDS = ("count", "find_one", "get")
_PROBE_FIELDS = {"name", "dataset", "kind", "query", "key", "expect"}
_PROBE_FILE_MAX = 4 << 20  # bytes: a probe file is a short list of queries


@dataclass(frozen=True, slots=True, kw_only=True)
class ProbeDialect:
    """What probes look like for the records of one encoding: the shape of a count's
    ``query``, whether ``find_one`` applies, the shape of a get's ``key`` and ``expect``."""

    #: the engine's name in messages, e.g. ``MongoDB``
    label: str
    #: the JSON type of a count's ``query``, and how a message describes it
    count_query: type
    count_query_shape: str
    #: ``find_one`` probes (a query returning one record) apply
    find_one: bool
    #: the JSON type a get's ``key`` must have; None: any value (a MongoDB ``_id``)
    key_type: type | None
    #: a get probe expects an object: the fields the record must have
    get_expects_object: bool


DIALECTS: dict[RecordEncoding, ProbeDialect] = {
    RecordEncoding.BSON: ProbeDialect(
        label="MongoDB",
        count_query=dict,
        count_query_shape='a filter object, e.g. {status = "paid"}',
        find_one=True,
        key_type=None,
        get_expects_object=True,
    ),
    RecordEncoding.REDIS: ProbeDialect(
        label="Redis",
        count_query=str,
        count_query_shape='a key pattern string, e.g. "app0:user:*"',
        find_one=False,
        key_type=str,
        get_expects_object=False,
    ),
}


def dialect_of(encoding: RecordEncoding) -> ProbeDialect:
    """The probe dialect for records of ``encoding``; ``InputError`` when there is none."""
    if encoding not in DIALECTS:
        raise InputError(f"drills cannot run probes over {encoding} records")
    return DIALECTS[encoding]


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


def load_probes(path: Path, *, encoding: RecordEncoding, datasets: Iterable[str]) -> list[Probe]:
    """Read and check a probe file (TOML ``[[probe]]`` tables, or JSON: a list or
    ``{"probes": [...]}``) for a backup whose records are of ``encoding`` (which selects the
    :class:`ProbeDialect`) and which holds ``datasets``.

    Raises :class:`InputError` naming the file, the probe and the field for anything wrong."""
    dialect = dialect_of(encoding)
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
        probe = _check_probe(path, number, item, dialect=dialect, datasets=known)
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
    path: Path, number: int, item: Any, *, dialect: ProbeDialect, datasets: set[str]
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
        if query is not None and not isinstance(query, dialect.count_query):
            raise bad(f"a {dialect.label} count 'query' is {dialect.count_query_shape}")
    elif kind == "find_one":
        if not dialect.find_one:
            able = " and ".join(d.label for d in DIALECTS.values() if d.find_one)
            raise bad(
                f"find_one probes are for {able} backups",
                f'use kind = "get" for {dialect.label} keys',
            )
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
        if dialect.key_type is str and not isinstance(key, str):
            raise bad(f"a {dialect.label} 'key' is a string")
        if dialect.get_expects_object and not isinstance(expect, dict):
            raise bad(
                f"a {dialect.label} get probe expects an object (fields the document must have)"
            )
    return Probe(name=name.strip(), dataset=dataset, kind=kind, query=query, key=key, expect=expect)


def _probe_result(probe: Probe, actual: Any, ok: bool, error: str | None = None) -> dict[str, Any]:
    out = {**probe.to_json(), "ok": ok, "actual": actual}
    if error is not None:
        out["error"] = error
    return out


def failed_probe_findings(results: list[dict[str, Any]]) -> list[Finding]:
    """A ``probe-failed`` finding for each failed probe of ``results``."""
    return [
        Finding(
            code=CheckCode.PROBE_FAILED.value,
            message=f"probe {result['name']!r} expected "
            f"{json.dumps(result['expect'], default=str)}, "
            f"got {json.dumps(result['actual'], default=str)[:200]}",
            subject=result["name"],
            details={k: result[k] for k in ("dataset", "kind", "expect", "actual")}
            | ({"error": result["error"]} if "error" in result else {}),
        )
        for result in results
        if not result["ok"]
    ]


def _subset(expected: Mapping[str, Any], actual: Mapping[str, Any] | None) -> bool:
    """Every expected field has the expected value in ``actual``."""
    return actual is not None and all(k in actual and actual[k] == v for k, v in expected.items())


# -- answered with queries ---------------------------------------------------------------------


def run_query_probes(queries: QueryProbes, probes: list[Probe]) -> list[dict[str, Any]]:
    """Each probe's result (JSON-ready, with ``ok`` and ``actual``), answered by ``queries``
    (the restored server's :meth:`~affidavit.engines.base.Engine.query_probes`). A query the
    server refuses is a failed probe carrying the error."""
    out = []
    for probe in probes:
        try:
            if probe.kind == "count":
                got: Any = queries.count_matching(probe.dataset, probe.query or {})
                out.append(_probe_result(probe, got, got == probe.expect))
            else:
                query = probe.query if probe.kind == "find_one" else {"_id": probe.key}
                doc = queries.find_one_json(probe.dataset, query)
                out.append(_probe_result(probe, doc, _subset(probe.expect, doc)))
        except Error as exc:
            out.append(_probe_result(probe, None, False, exc.message))
    return out


# -- answered from the records read back -------------------------------------------------------


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


class ReadBackProbes:
    """Answers probes from the records the verify phase streams anyway (one pass), for a
    server whose engine has no query interface: key-value records (:class:`RedisRecord`),
    counted by key pattern and looked up by key."""

    def __init__(self, probes: list[Probe]) -> None:
        self.probes = probes
        self.counts = {p.name: 0 for p in probes if p.kind == "count"}
        self.values: dict[str, Any] = {}
        self._counting_in: dict[str, list[Probe]] = {}
        self._keys = {
            str(p.key).encode("utf-8", errors="surrogateescape"): p
            for p in probes
            if p.kind == "get"
        }

    def watch(self, dataset: str, records: Iterable[Any]) -> Iterator[Any]:
        """``records`` of ``dataset`` as they are, noted on the way through."""
        for record in records:
            self.see(dataset, record)
            yield record

    def see(self, dataset: str, record: Any) -> None:
        """Note one record of ``dataset``."""
        assert isinstance(record, RedisRecord)
        for probe in self._counting(dataset):
            if probe.query is None or fnmatch.fnmatchcase(
                record.key.decode("utf-8", errors="surrogateescape"), probe.query
            ):
                self.counts[probe.name] += 1
        wanted = self._keys.get(record.key)
        if wanted is not None and wanted.dataset == dataset:
            self.values[wanted.name] = _redis_json(record)

    def _counting(self, dataset: str) -> list[Probe]:
        mine = self._counting_in.get(dataset)
        if mine is None:
            mine = [p for p in self.probes if p.dataset == dataset and p.kind == "count"]
            self._counting_in[dataset] = mine
        return mine

    def results(self) -> list[dict[str, Any]]:
        """Each probe's result (JSON-ready, with ``ok`` and ``actual``) from what was seen."""
        out = []
        for probe in self.probes:
            if probe.kind == "count":
                got: Any = self.counts[probe.name]
                out.append(_probe_result(probe, got, got == probe.expect))
            else:
                got = self.values.get(probe.name)
                out.append(_probe_result(probe, got, _redis_expect_equal(probe.expect, got)))
        return out
