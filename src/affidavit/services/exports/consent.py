"""Consent for an export: a JSON-lines file with one consent per line (or the same entries
read from a registered source: :func:`load_consents_for`, below)::

    {"subject": "person7@example.com", "purpose": "churn analysis",
     "valid_from": "2026-01-01T00:00:00Z", "valid_to": "2027-01-01T00:00:00Z"}

``subject`` is a string or an integer (compared with the text of the input record's value
at ``subject_field``, a field or a dotted path through sub-documents, :func:`subject_of`: a
string as it is, an integer as its digits, an ObjectId as its hex digits); ``valid_to`` may be
null or absent (no end). A record is excluded, counted by reason, when it names no subject
(``consent_subject_missing``: the path missing, null, an array or a sub-document), or its
subject holds no consent for the spec's purpose that is valid at the run's time:
``no_consent`` (none for this purpose) or ``consent_not_valid`` (not yet valid, or expired).
A line that is not such an object is bad input, named by its line number: the run is refused
before anything is recorded.

The same entries may live in a registered source (``[consent] source``), read at one
consistency point:

- a MongoDB collection (``dataset = "db.collection"``): one consent per document with the
  same fields (and its ``_id``); ``valid_from``/``valid_to`` an ISO-8601 string or a BSON
  date; read in one snapshot session (as a live export input is); a malformed document is
  named by its ``_id``;
- Redis keys (``key_pattern``, in ``dataset``, ``db0`` by default): one hash per consent with
  the fields ``subject``, ``purpose``, ``valid_from`` and optionally ``valid_to`` (UTF-8
  strings); read from one RDB snapshot of the server (as a live Redis export input is); a key
  that is not such a hash is named.

What the manifest and the ledger record of it: the source, its URI without credentials, the
dataset (and pattern), the read's time and consistency point, the exact (Redis) or logical
(MongoDB) fingerprint of what was read, the number of entries and ``sha256``: the SHA-256 of
the entries in a canonical form (RFC 8785-style JSON lines sorted by ``_id``/key), which the
approval of a run covers as it covers a file's SHA-256.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from affidavit.constants import EngineName
from affidavit.crypto.digest import Sha256Stream
from affidavit.errors import EngineError, InputError, NotFound
from affidavit.fingerprint.accumulator import Accumulator
from affidavit.formats.bson_codec.extjson_fast import canonical_value, decode_document
from affidavit.formats.codecs import codec_for
from affidavit.input_files import open_regular
from affidavit.models.export import ConsentSource
from affidavit.models.inventory import Source
from affidavit.models.records import RecordEncoding, RedisRecord
from affidavit.models.uri import ConnectionUri
from affidavit.private_temp import private_folder
from affidavit.services.backends import engine_for
from affidavit.services.context import App
from affidavit.services.exports.records import MISSING, value_at
from affidavit.services.fingerprint import spool_snapshot

NO_CONSENT: Final = "no_consent"
NOT_VALID: Final = "consent_not_valid"
SUBJECT_MISSING: Final = "consent_subject_missing"
_MAX_LINE: Final = 64 * 1024
_REDIS_DB: Final = re.compile(r"db[0-9]{1,5}")
_KEYS: Final = frozenset({"subject", "purpose", "valid_from", "valid_to"})


@dataclass(slots=True)
class Consents:
    """The consents of one list for one purpose, by subject, and the list's SHA-256; for a
    list read from a source, ``origin`` says what was read (:func:`load_consents_for`)."""

    path: Path | None
    purpose: str
    sha256: str = ""
    lines: int = 0
    by_subject: dict[str, list[tuple[datetime, datetime | None]]] = field(default_factory=dict)
    origin: dict[str, Any] | None = None

    def judge(self, subject: str | None, at: datetime) -> str | None:
        """None when ``subject`` holds a consent valid at ``at``; else the reason."""
        windows = self.by_subject.get(subject) if subject is not None else None
        if not windows:
            return NO_CONSENT
        if any(start <= at and (end is None or at < end) for start, end in windows):
            return None
        return NOT_VALID

    def judge_record(self, document: Mapping[str, Any], path: str, at: datetime) -> str | None:
        """:meth:`judge` for an input record (decoded, before minimisation) whose subject is
        at ``path`` (:func:`subject_of`); :data:`SUBJECT_MISSING` when it names none."""
        subject = subject_of(document, path)
        if subject is None:
            return SUBJECT_MISSING
        return self.judge(subject, at)

    def add(self, subject: str, purpose: str, start: datetime, end: datetime | None) -> None:
        """One well-formed entry (kept when it is for this list's purpose)."""
        self.lines += 1
        if purpose == self.purpose:
            self.by_subject.setdefault(subject, []).append((start, end))

    def to_json(self) -> dict[str, Any]:
        """JSON-ready (the manifest predicate's ``consent``)."""
        if self.origin is not None:
            return {**self.origin, "sha256": self.sha256, "entries": self.lines}
        assert self.path is not None
        return {"file": self.path.name, "sha256": self.sha256, "lines": self.lines}


def subject_text(value: Any) -> str | None:
    """The text a consent's ``subject`` is compared with, of a canonical Extended JSON
    value: a string as it is; an Int32/Int64 or ObjectId as its digits; None for null."""
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, Mapping) and len(value) == 1:
        ((tag, inner),) = value.items()
        if tag in ("$numberInt", "$numberLong", "$oid") and isinstance(inner, str):
            return inner
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


def subject_of(document: Mapping[str, Any], path: str) -> str | None:
    """The subject text of a decoded input record: the value at ``path`` (a field, or a
    dotted path through sub-documents, by the allow-list's rules: :func:`.records.value_at`),
    as :func:`subject_text` gives it; None when the path is missing, crosses an array or a
    non-document, or holds null, an array or a sub-document (no subject). One rule for a
    top-level field and a nested one."""
    value = value_at(document, path) if "." in path else document.get(path, MISSING)
    if value is MISSING or value is None or type(value) is list or type(value) is dict:
        return None
    return subject_text(canonical_value(value))


def _moment(value: Any, name: str) -> datetime:
    if isinstance(value, datetime):  # a BSON date (UTC)
        return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    if not isinstance(value, str):
        raise ValueError(f"{name} must be an ISO-8601 date-time string")
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"{name} {value[:40]!r} is not an ISO-8601 date-time") from None
    if moment.tzinfo is None:
        raise ValueError(f"{name} needs a time zone (e.g. Z)")
    return moment


def _parse(raw: bytes) -> tuple[str, str, datetime, datetime | None]:
    try:
        value = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise ValueError("not a JSON object") from None
    if not isinstance(value, dict):
        raise ValueError("not a JSON object")
    return _entry(value, _KEYS)


def _entry(
    value: Mapping[str, Any], keys: frozenset[str]
) -> tuple[str, str, datetime, datetime | None]:
    """One consent's members checked: ``(subject, purpose, valid_from, valid_to)``; raises
    ValueError naming what is wrong."""
    unknown = set(value) - keys
    if unknown:
        raise ValueError(f"unknown key(s) {', '.join(sorted(unknown))}")
    subject = value.get("subject")
    if isinstance(subject, bool) or not isinstance(subject, str | int) or subject == "":
        raise ValueError("subject must be a non-empty string or an integer")
    purpose = value.get("purpose")
    if not isinstance(purpose, str) or not purpose.strip():
        raise ValueError("purpose must be a non-empty string")
    start = _moment(value.get("valid_from"), "valid_from")
    end_raw = value.get("valid_to")
    end = _moment(end_raw, "valid_to") if end_raw is not None else None
    if end is not None and end <= start:
        raise ValueError("valid_to is not after valid_from")
    return str(subject), purpose.strip(), start, end


def load_consents(path: Path, purpose: str) -> Consents:
    """Read and check a consent file, keeping the consents for ``purpose``. Raises
    :class:`InputError` naming the first malformed line by its number."""
    consents = Consents(path=path, purpose=purpose)
    digest = Sha256Stream()
    try:
        fh = open_regular(path, what="the consent file")
    except FileNotFoundError:
        raise InputError(f"the consent file {path} does not exist") from None
    except OSError as exc:
        raise InputError(f"cannot read the consent file {path}: {exc.strerror}") from None
    with fh:
        for number, line in enumerate(iter(lambda: fh.readline(_MAX_LINE + 1), b""), start=1):
            digest.update(line)
            if len(line) > _MAX_LINE:
                raise InputError(
                    f"the consent file {path.name} line {number}: longer than 64 KiB",
                    hint="one consent per line",
                )
            if not line.strip():
                continue
            try:
                subject, for_purpose, start, end = _parse(line)
            except ValueError as exc:
                raise InputError(
                    f"the consent file {path.name} line {number}: {exc}",
                    hint='each line: {"subject": ..., "purpose": ..., "valid_from": ..., '
                    '"valid_to": ...} (docs/exports.md)',
                ) from None
            consents.add(subject, for_purpose, start, end)
    consents.sha256 = digest.hexdigest()
    return consents


def load_consents_for(app: App, consent: ConsentSource | None, purpose: str) -> Consents | None:
    """The consents a spec names (None: it names none): its file, or its registered source
    read at one consistency point (see the module docstring). Raises :class:`InputError`
    (exit 2) naming a malformed entry, :class:`EngineError` (exit 3) for a source that
    cannot be read."""
    if consent is None:
        return None
    if consent.file is not None:
        return load_consents(Path(consent.file), purpose)
    assert consent.source is not None
    assert consent.dataset is not None
    with app.read() as uow:
        source = uow.sources.get(consent.source)  # NotFound: not registered
    check_consent_engine(consent, source.engine)
    uri = ConnectionUri.parse(source.engine, source.uri).redacted
    consents = Consents(path=None, purpose=purpose)
    entries: list[tuple[str, list[Any]]] = []
    origin: dict[str, Any] = {
        "source": source.name,
        "engine": source.engine.value,
        "uri": uri,
        "dataset": consent.dataset,
        "read_at": datetime.now(UTC).isoformat(),
    }
    if consent.key_pattern is not None:
        origin["key_pattern"] = consent.key_pattern.text
        origin.update(
            _read_redis(app, source, consent=consent, uri=uri, consents=consents, entries=entries)
        )
    else:
        origin.update(
            _read_mongo(
                app, source, dataset=consent.dataset, uri=uri, consents=consents, entries=entries
            )
        )
    digest = Sha256Stream()
    for _, line in sorted(entries, key=lambda e: e[0].encode("utf-8", "surrogateescape")):
        digest.update(json.dumps(line, separators=(",", ":"), ensure_ascii=False).encode())
        digest.update(b"\n")
    consents.sha256 = digest.hexdigest()
    consents.origin = origin
    return consents


def check_consent_engine(consent: ConsentSource, engine: EngineName) -> None:
    """A consent source fits its engine: a key pattern reads Redis, a collection MongoDB.
    Raises :class:`InputError` (exit 2)."""
    if consent.key_pattern is not None and engine is not EngineName.REDIS:
        raise InputError(
            f"consent.key_pattern selects Redis keys, but source {consent.source} is a "
            f"{engine.value} source",
            hint='a MongoDB consent list is a collection: consent.dataset = "db.collection"',
        )
    if consent.key_pattern is None and engine is not EngineName.MONGODB:
        raise InputError(
            f"consent.dataset names a MongoDB collection, but source {consent.source} is a "
            f"{engine.value} source",
            hint='Redis consents are hashes: consent.key_pattern = "consent:*"',
        )


def _bad(where: str, what: str, exc: ValueError) -> InputError:
    return InputError(
        f"the consent source {where} {what}: {exc}",
        hint="each entry: subject, purpose, valid_from, valid_to (docs/exports.md, consent)",
    )


def _read_mongo(
    app: App,
    source: Source,
    *,
    dataset: str,
    uri: str,
    consents: Consents,
    entries: list[tuple[str, list[Any]]],
) -> dict[str, Any]:
    codec = codec_for(RecordEncoding.BSON, "logical")
    accumulator = Accumulator("logical", keep_keys=False)
    with engine_for(source, app.settings) as engine:
        try:
            engine.count_records(dataset)
        except NotFound:
            raise InputError(
                f"the consent source {source.name} ({uri}) has no dataset {dataset}",
                hint="`affidavit inventory` lists the datasets; MongoDB datasets are db.collection",
            ) from None
        with engine.dataset_snapshot() as snapshot:
            for raw in snapshot.iter_raw(dataset, None):
                accumulator.add_records([codec(raw)])
                document = decode_document(raw)
                ident = json.dumps(canonical_value(document.get("_id")), sort_keys=True)
                try:
                    subject, purpose, start, end = _entry(document, _KEYS | {"_id"})
                except ValueError as exc:
                    raise _bad(f"{source.name} ({dataset})", f"_id {ident[:100]}", exc) from None
                consents.add(subject, purpose, start, end)
                entries.append((ident, _line(ident, subject, purpose, start, end)))
            consistency = dict(snapshot.consistency)
    fingerprint, _ = accumulator.finish()
    return {"consistency": consistency, "fingerprint": fingerprint.text}


def _read_redis(
    app: App,
    source: Source,
    *,
    consent: ConsentSource,
    uri: str,
    consents: Consents,
    entries: list[tuple[str, list[Any]]],
) -> dict[str, Any]:
    assert consent.key_pattern is not None
    assert consent.dataset is not None
    if not _REDIS_DB.fullmatch(consent.dataset):
        raise InputError(
            f"consent.dataset of Redis source {source.name} is {consent.dataset[:40]!r}, not a "
            "database",
            hint="a Redis dataset is db0, db1, ... (the logical database)",
        )
    match = consent.key_pattern.matcher()
    encode = codec_for(RecordEncoding.REDIS, "exact")
    accumulator = Accumulator("exact", keep_keys=False)
    where = f"{source.name} ({consent.dataset}, {consent.key_pattern.text})"
    with private_folder("consent-redis") as work:
        with engine_for(source, app.settings) as engine:
            as_of = datetime.now(UTC)
            reader = spool_snapshot(engine, work / "consent.rdb")
        if reader is None:
            raise EngineError(
                f"Redis at {uri} refused SYNC: its consents cannot be read at one point in time",
                hint="grant the user SYNC (+sync), or export the consents to a file",
            )
        for name, record in reader.iter_all():
            if name != consent.dataset or not isinstance(record, RedisRecord):
                continue
            if not match(record.key):
                continue
            accumulator.add_records([encode(record)])
            ident = record.key.decode("utf-8", "backslashreplace")
            try:
                value = _hash_entry(record)
                subject, purpose, start, end = _entry(value, _KEYS)
            except ValueError as exc:
                raise _bad(where, f"key {ident[:100]!r}", exc) from None
            consents.add(subject, purpose, start, end)
            entries.append((ident, _line(ident, subject, purpose, start, end)))
    fingerprint, _ = accumulator.finish()
    return {
        "consistency": {
            "mode": "rdb-snapshot",
            "method": "SYNC (an RDB over the replication protocol)",
            "as_of_ms": int(as_of.timestamp() * 1000),
        },
        "fingerprint": fingerprint.text,
    }


def _hash_entry(record: RedisRecord) -> dict[str, Any]:
    """A Redis consent: a hash of UTF-8 fields and values (ValueError otherwise)."""
    if record.type != "hash":
        raise ValueError(f"is a {record.type}, not a hash")
    out: dict[str, Any] = {}
    for name, value in record.value:  # type: ignore[attr-defined]
        try:
            out[bytes(name).decode("utf-8")] = bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            raise ValueError("a field or value is not UTF-8") from None
    return out


def _line(
    ident: str, subject: str, purpose: str, start: datetime, end: datetime | None
) -> list[Any]:
    """One entry in the canonical form the list's SHA-256 is computed over."""
    return [
        ident,
        subject,
        purpose,
        start.astimezone(UTC).isoformat(),
        end.astimezone(UTC).isoformat() if end is not None else None,
    ]
