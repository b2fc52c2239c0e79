"""A backup compared with its live source now (``verify --against-source``).

Only the source the signed manifest names is read (:func:`check_source_identity`: a
look-alike server holding the backup's data is never read, nor sent the source's secret).
Each dataset's live fingerprint, taken from one whole-server snapshot of a large source or
record by record, is compared with the signed one (:func:`compare_with_source`); the keys
that differ are named from the stored index and classified by the source's change log:
changed after the backup (``drift``, which does not fail a verification) or not
(``source-differs``).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from affidavit.crypto.digest import sha256_hex
from affidavit.engines.base import Engine
from affidavit.errors import InputError, NotFound
from affidavit.fingerprint.diff import Change, DiffResult
from affidavit.models.checks import CheckCode
from affidavit.models.inventory import Source
from affidavit.models.uri import ConnectionUri
from affidavit.services.fingerprint import (
    fingerprint_records,
    prefers_snapshot,
    snapshot_fingerprints,
)
from affidavit.services.verify.content import KEYS_SHOWN, diff_files, key_json
from affidavit.services.verify.state import Run

_KEYS_CLASSIFIED = 10_000  # keys looked up in the source's change log per dataset


def check_source_identity(run: Run, source: Source) -> bool:
    """Whether the registered source (catalog row) is the one the signed manifest names:
    same name, engine and URI as recorded without secrets (the user name redacted, as
    :attr:`ConnectionUri.redacted` gives it; host list, port, database and options
    compared as text). Anything that differs is one ``source-mismatch`` finding naming
    each field, and False: the live server is then not read at all (nor sent the
    source's secret), for a look-alike server holding the backup's data would pass.
    True when no signed manifest could be read: there is nothing signed to compare with,
    and the verification fails on that already."""
    signed = run.signed.source
    if signed is None:
        return True
    try:
        uri = ConnectionUri.parse(source.engine, source.uri).redacted
    except InputError:
        uri = "(not a valid URI)"
    registered = {"name": source.name, "engine": source.engine.value, "uri": uri}
    named = {
        "name": signed.name,
        "engine": None if signed.engine is None else signed.engine.value,
        "uri": signed.uri,
    }
    differ = {
        key: {"signed": named[key], "registered": value}
        for key, value in registered.items()
        if named[key] != value
    }
    if not differ:
        return True
    run.find(
        CheckCode.SOURCE_MISMATCH,
        f"the registered source {source.name!r} is not the source the signed manifest "
        f"names ({', '.join(differ)} differ): the live data was not compared",
        source.name,
        fields=differ,
    )
    return False


def compare_with_source(
    run: Run, source: Source, engine: Engine, indexes: Mapping[str, Path]
) -> dict[str, Any]:
    """Each signed dataset's fingerprint against the live one read from ``engine``; the keys
    of a difference are named from the dataset's stored index (``indexes``) and classified.
    Returns the comparison the signed result holds as ``against_source``."""
    summary: dict[str, Any] = {"source": source.name, "datasets": {}}
    snapshot = _live_snapshot(run, engine)
    for name, expected in sorted(run.signed.fingerprints.items()):
        live_index = _live_index(run, name)
        live: str | None = snapshot.get(name)
        if live is None:
            run.rep.task(f"fingerprinting {source.name}/{name} (live)", None)
            try:
                live = fingerprint_records(
                    engine.iter_records(name),
                    encoding=engine.record_encoding,
                    profile="exact",
                    workers=1,
                    index=live_index,
                    dataset=name,
                ).fingerprint.text
            except NotFound:
                live = None
            run.rep.finish()
        summary["datasets"][name] = {
            "live": live,
            "backup": expected,
            "equal": live == expected,
        }
        if live == expected:
            continue
        stored = indexes.get(name)
        if live is None:
            run.find(
                CheckCode.SOURCE_DIFFERS,
                f"the dataset no longer exists on source {source.name}",
                name,
                keys=[],
            )
            continue
        if stored is None:
            run.find(
                CheckCode.SOURCE_DIFFERS,
                "the live dataset differs from the backup; the stored index is unusable, "
                "so the keys cannot be named",
                name,
                live=live,
                backup=expected,
                keys=[],
            )
            continue
        diff, encoding = diff_files(stored, live_index, limit=_KEYS_CLASSIFIED)
        _classify(run, name, diff, encoding, engine)
    return summary


def _live_index(run: Run, name: str) -> Path:
    return run.tmp / f"live-{sha256_hex(name.encode())[:12]}"


def _live_snapshot(run: Run, engine: Engine) -> dict[str, str]:
    """The live fingerprints of a large source's datasets from one whole-server snapshot
    of it (:func:`~affidavit.services.fingerprint.snapshot_fingerprints`); empty when the
    engine streams no snapshot, the source is small (:func:`prefers_snapshot`) or it
    refuses one: each dataset is then read record by record. A dataset the server no
    longer has is left out (it is reported as gone)."""
    if engine.snapshot_format is None:
        return {}
    names = []
    for name in sorted(run.signed.fingerprints):
        try:
            engine.count_records(name)
        except NotFound:
            continue
        names.append(name)
    if not prefers_snapshot(engine, names):
        return {}
    found = snapshot_fingerprints(
        engine, names, profile="exact", index_for=lambda n: _live_index(run, n), rep=run.rep
    )
    return {} if found is None else {r.name: r.fingerprint.text for r in found}


def _classify(run: Run, name: str, diff: DiffResult, encoding: str, engine: Engine) -> None:
    """The keys that differ: ``drift`` when the source's change log says they changed after
    the backup's consistency point, ``source-differs`` for the rest (and for every key
    beyond the lookup limit, or all of them when the log cannot tell)."""
    differences = [d for d in diff.differences if d.change is not Change.DUPLICATE]
    total = sum(n for c, n in diff.counts.items() if c is not Change.DUPLICATE)
    lookup = [d.key for d in differences if not d.key_truncated]
    changed = engine.keys_changed_since(name, lookup, run.backup.consistency)
    if changed is None:
        note = engine.change_log_gap()
        drift, other = [], differences
    else:
        note = "keys without an oplog entry after the backup's consistency point"
        drift = [d for d in differences if d.key in changed]
        other = [d for d in differences if d.key not in changed]
    unclassified = total - len(differences)  # beyond the lookup limit: not drift
    if drift:
        keys = [key_json(d, encoding) for d in drift]
        run.find(
            CheckCode.DRIFT,
            f"{len(drift)} record(s) changed at the source after the backup "
            f"(oplog): {', '.join(k['key'] for k in keys[:5])}",
            name,
            count=len(drift),
            keys=keys[:KEYS_SHOWN],
        )
    if other or unclassified:
        keys = [key_json(d, encoding) for d in other]
        shown = ", ".join(k["key"] for k in keys[:5])
        run.find(
            CheckCode.SOURCE_DIFFERS,
            f"{len(other) + unclassified} record(s) differ from the live source"
            + (f": {shown}" if shown else ""),
            name,
            count=len(other) + unclassified,
            keys=keys[:KEYS_SHOWN],
            note=note,
        )
