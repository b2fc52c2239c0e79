"""An export's Redis input (docs/exports.md "A Redis input"): a logical database (``db0``,
``db1``, ...) of a Redis backup (its RDB artifact decrypted from the vault) or of a live Redis
source, read as one record per key, optionally only the keys a key pattern matches
(:mod:`affidavit.models.key_pattern`, Redis's own glob).

Each key is one record, the document :mod:`affidavit.formats.redis_documents` writes
(``{"_id": KEY, "type": ..., "value": ..., "expire_at_ms": ...}``, record shape
``redis-key/1``), which the allow-list, the transforms and the contract address like any
other (``value.email`` is a path into a hash). The input's fingerprint in
the manifest is the ``exact`` fingerprint of the whole database (every key, matched or not),
computed while the records stream: for a backup it must equal the one its signed manifest
gives (else nothing is exported), for a live source it is what ``affidavit fingerprint`` and
``verify --against-source`` compute for it. Redis has one canonical form of a key, so the
``logical`` one would differ only by its domain tag.

A live source is read at one consistency point: one RDB snapshot of the whole server, taken
over the replication protocol (``SYNC``, as ``redis-cli --rdb`` and ``backup run`` take it),
spooled to a private file and read as of the moment it was asked for. ``SCAN`` is not a point
in time (a key written during the scan may or may not be seen), so it is not used; a server
that refuses ``SYNC`` (an ACL without it, a managed service) cannot be exported live (exit 3).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from affidavit.constants import EngineName
from affidavit.errors import EngineError, InputError, IntegrityError
from affidavit.fingerprint.accumulator import Accumulator
from affidavit.formats.codecs import codec_for
from affidavit.formats.redis_documents import RECORD_SHAPE, redis_bson
from affidavit.models.backup import Backup, BackupArtifact
from affidavit.models.key_pattern import KeyPattern
from affidavit.models.manifest import ManifestDataset
from affidavit.models.records import RecordEncoding, RedisRecord
from affidavit.private_temp import private_folder
from affidavit.services.backends import engine_for, format_engine, reader_class, restore_layout
from affidavit.services.context import App
from affidavit.services.exports.sources import LiveInput, LiveRead
from affidavit.services.fingerprint import spool_snapshot

if TYPE_CHECKING:
    from affidavit.formats.base import RecordReader
    from affidavit.services.exports.passes import Plan

PROFILE: Final = "exact"
_BATCH: Final = 2000
Fetch = Callable[[App, Backup, list[BackupArtifact], Path], dict[str, Path]]
"""Fetches a backup's artifacts, checked and decrypted into a folder (``passes._fetch``)."""


def is_redis_plan(plan: Plan) -> bool:
    """Whether ``plan`` reads a Redis input (a live Redis source, or an RDB backup)."""
    if plan.live is not None:
        return plan.live.source.engine is EngineName.REDIS
    return plan.backup is not None and format_engine(plan.backup.format) is EngineName.REDIS


def redis_read(app: App, plan: Plan, *, fetch: Fetch) -> RedisRead | None:
    """The read of ``plan``'s Redis input; None when its input is not Redis."""
    if not is_redis_plan(plan):
        return None
    pattern = plan.spec.input.key_pattern
    if plan.live is not None:
        return RedisRead(app=app, live=plan.live, query=None, pattern=pattern)
    assert plan.backup is not None
    assert plan.dataset is not None
    with app.read() as uow:
        source = uow.sources.get(plan.spec.input.source)  # the backup's (_choose_backup)
    return RedisRead(
        app=app,
        live=LiveInput(source=source, dataset=plan.dataset.name),
        query=None,
        pattern=pattern,
        backup=plan.backup,
        signed=plan.dataset,
        backup_manifest_sha256=plan.backup_manifest_sha256,
        fetch=fetch,
    )


def backup_as_of_ms(backup: Backup) -> int:
    """A Redis backup's capture time (keys that expired after it are still in it), as its
    verification reads it."""
    captured = (backup.consistency or {}).get("captured_at_ms")
    if isinstance(captured, int):
        return captured
    return int(backup.started_at.timestamp() * 1000)


@dataclass(slots=True)
class RedisRead(LiveRead):
    """One read of a Redis input (a live source when ``backup`` is None, else the backup):
    :meth:`raw_records` yields the matching keys as BSON documents; ``records`` counts them,
    ``total`` every key of the database (so ``filtered_out`` is the keys the pattern left
    out), ``fingerprint`` is the whole database's."""

    pattern: KeyPattern | None = None
    backup: Backup | None = None
    signed: ManifestDataset | None = None  # the dataset in the backup's signed manifest
    backup_manifest_sha256: str | None = None
    fetch: Fetch | None = None
    matched_fingerprint: str | None = None

    def raw_records(self) -> Iterator[bytes]:
        """The matching keys of the dataset, one BSON document each (see the module
        docstring), at one consistency point. Raises :class:`EngineError` (the source),
        :class:`IntegrityError` (a backup that does not hold what its manifest signs)."""
        with private_folder("export-redis") as work:
            reader = self._snapshot(work) if self.backup is None else self._backup_file(work)
            yield from self._read(reader)
        if self.signed is not None and self.backup is not None:
            assert self.total is not None
            if self.fingerprint != self.signed.fingerprint or self.total != self.signed.records:
                raise IntegrityError(
                    f"{self.signed.name} of backup {self.backup.id} holds {self.total:,} keys "
                    f"({self.fingerprint}), its signed manifest {self.signed.records:,} "
                    f"({self.signed.fingerprint})",
                    hint=f"run `affidavit verify run {self.backup.id}`; nothing was exported",
                )

    def _snapshot(self, work: Path) -> RecordReader:
        with engine_for(self.live.source, self.app.settings) as engine:
            self.read_at = datetime.now(UTC)
            reader = spool_snapshot(engine, work / "live.rdb")
        if reader is None:
            raise EngineError(
                f"Redis at {self.live.uri} refused SYNC: it cannot be read at one point in time",
                hint="grant the user SYNC (+sync), or export a backup of it "
                '(input.from = "backup"); see docs/exports.md',
            )
        self.consistency = {
            "mode": "rdb-snapshot",
            "method": "SYNC (an RDB over the replication protocol)",
            "as_of_ms": int(self.read_at.timestamp() * 1000),
        }
        return reader

    def _backup_file(self, work: Path) -> RecordReader:
        assert self.backup is not None
        assert self.fetch is not None
        assert self.signed is not None
        layout = restore_layout(self.backup.format)
        assert layout is not None  # plan_export checked it
        view = dataclasses.replace(
            self.backup,
            datasets=tuple(d for d in self.backup.datasets if d.name == self.signed.name),
        )
        plain = self.fetch(self.app, self.backup, layout.artifacts(view), work)
        if len(plain) != 1:
            raise IntegrityError(f"backup {self.backup.id} should hold one RDB, not {len(plain)}")
        (path,) = plain.values()
        self.read_at = datetime.now(UTC)
        as_of = backup_as_of_ms(self.backup)
        self.consistency = {"mode": "rdb-snapshot", "captured_at_ms": as_of}
        return reader_class(self.backup.format).as_of(path, captured_at_ms=as_of)

    def _read(self, reader: RecordReader) -> Iterator[bytes]:
        encode = codec_for(RecordEncoding.REDIS, PROFILE)
        whole = Accumulator(PROFILE, keep_keys=False)
        matched = Accumulator(PROFILE, keep_keys=False)
        match = self.pattern.matcher() if self.pattern is not None else None
        dataset = self.live.dataset
        every: list[tuple[bytes, bytes]] = []
        chosen: list[tuple[bytes, bytes]] = []
        total = 0
        for name, record in reader.iter_all():
            if name != dataset:
                continue
            if not isinstance(record, RedisRecord):
                raise InputError(f"{dataset} does not hold Redis keys")
            pair = encode(record)
            every.append(pair)
            total += 1
            if match is None or match(record.key):
                chosen.append(pair)
                self.records += 1
                yield redis_bson(record)
            if len(every) >= _BATCH:
                whole.add_records(every)
                matched.add_records(chosen)
                every.clear()
                chosen.clear()
        whole.add_records(every)
        matched.add_records(chosen)
        self.total = total
        self.fingerprint = whole.finish()[0].text
        self.matched_fingerprint = matched.finish()[0].text

    def to_json(self) -> dict[str, Any]:
        """The manifest's ``input`` members of a Redis read."""
        if self.fingerprint is None or self.read_at is None or self.total is None:
            raise EngineError("the Redis read did not finish")
        out: dict[str, Any] = {
            "source": self.live.source.name,
            "engine": EngineName.REDIS.value,
            "dataset": self.live.dataset,
            "record_shape": RECORD_SHAPE,
        }
        if self.backup is None:
            out.update(
                {
                    "from": "live",
                    "uri": self.live.uri,
                    "read_at": self.read_at.isoformat(),
                }
            )
        else:
            out.update(
                {
                    "backup_id": self.backup.id,
                    "backup_manifest_sha256": self.backup_manifest_sha256,
                }
            )
        out.update(
            {
                "consistency": self.consistency,
                "fingerprint": self.fingerprint,
                "records_in_dataset": self.total,
                "records": self.records,
            }
        )
        if self.pattern is not None:
            out["key_pattern"] = self.pattern.text
            out["matched_fingerprint"] = self.matched_fingerprint
        return out
