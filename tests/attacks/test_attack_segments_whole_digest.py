"""Segment tables against the whole-file digest (target 7 of the attack pass).

1. A manifest whose segment table describes the file in the vault while its whole-file
SHA-256 (the artifact's ``sha256`` and the statement's subject) names another file: the
sequential run finds ``artifact-hash-mismatch`` (exit 1), and so must ``verify --workers 2``.
It did not (it took the segments' word); now the whole-file digest is recomputed from the
very bytes the segment workers read, in file order (``crypto/segments.py: OrderedDigest``;
with ``--cluster`` on a folder vault, on a thread beside the segments:
``services/verify/reading.py: _WholeFileDigest``).

2. A first record moved to another genuine document start is caught by the chain check.
"""

from __future__ import annotations

import json
import sqlite3
import stat
from pathlib import Path
from typing import Any

import pytest
from test_verify_segments import _codes, _verify, ingested, small_segments

from affidavit.crypto.digest import sha256_hex
from affidavit.ledger.attestation import Statement, attest
from affidavit.services.context import load_ledger_identity
from affidavit.services.verify import reading

__all__ = ["ingested", "small_segments"]  # fixtures, used by name

OTHER = "ab" * 32  # the digest of some other file


def _resign_digest(home: Path, vault: Path, backup_id: str) -> None:
    """Re-sign the statement with the data artifact's whole-file digest (in the predicate and
        in the subjects) replaced; its segment table left as it is (it describes the file). The
    catalog's artifact list and the vault's copy of the envelope follow, as a signer would
    have written them."""
    identity = load_ledger_identity(home)
    assert identity is not None
    with sqlite3.connect(home / "catalog.sqlite") as db:
        (raw,) = db.execute("select manifest from backups where id = ?", (backup_id,)).fetchone()
        data = json.loads(bytes(raw))
        [art] = [
            a for a in data["predicate"]["artifacts"] if a["path"].endswith("customers.bson.age")
        ]
        real = art["sha256"]
        art["sha256"] = OTHER
        for subject in data["subject"]:
            if subject["digest"]["sha256"] == real:
                subject["digest"]["sha256"] = OTHER
        forged = Statement.from_json(json.dumps(data).encode())
        envelope = attest(forged, identity.signer.key, identity.keyid)
        payload = forged.to_json()
        db.execute(
            "update backups set manifest = ?, manifest_sha256 = ?, envelope = ? where id = ?",
            (payload, sha256_hex(payload), envelope.to_json(), backup_id),
        )
        db.execute(  # the catalog's artifact list agrees with the signed subjects
            "update backup_artifacts set sha256 = ? where backup_id = ? and sha256 = ?",
            (OTHER, backup_id, real),
        )
        (copy,) = db.execute(
            "select path from backup_artifacts where backup_id = ? and role = 'manifest'",
            (backup_id,),
        ).fetchone()
        text = (
            envelope.to_json().encode()
            if isinstance(envelope.to_json(), str)
            else envelope.to_json()
        )
        db.execute(
            "update backup_artifacts set sha256 = ?, size = ? where backup_id = ? and path = ?",
            (sha256_hex(text), len(text), backup_id, copy),
        )
    target = vault / copy
    target.chmod(stat.S_IRUSR | stat.S_IWUSR)
    target.write_bytes(text)
    target.chmod(0o444)


@pytest.mark.e2e
def test_segments_that_match_under_a_wrong_whole_file_digest_reach_the_sequential_verdict(
    cli: Any, home: Path, ingested: dict[str, Any]
) -> None:
    _resign_digest(home, ingested["vault"], ingested["backup_id"])
    parallel_code, parallel = _verify(cli, ingested["backup_id"], "--workers", "2")
    with pytest.MonkeyPatch.context() as patch:  # the sequential pass only: no table used
        patch.setattr(reading.ArtifactReader, "_segmented", lambda *_: (False, None))
        sequential_code, sequential = _verify(cli, ingested["backup_id"])
    assert "artifact-hash-mismatch" in _codes(sequential), sequential["findings"]
    assert sequential_code == 1
    assert (parallel_code, _codes(parallel)) == (sequential_code, _codes(sequential))


def _starts(plain: bytes) -> list[int]:
    """Where each BSON document of ``plain`` starts."""
    found, pos = [], 0
    while pos < len(plain):
        found.append(pos)
        pos += int.from_bytes(plain[pos : pos + 4], "little")
    return found


@pytest.mark.e2e
@pytest.mark.parametrize("move", [1, -1], ids=["skip-a-record", "repeat-a-record"])
def test_a_first_record_moved_to_another_document_start_is_refused(
    cli: Any, home: Path, ingested: dict[str, Any], move: int
) -> None:
    """A re-signed table whose first record still names a genuine document start, one
    document later (the segments would skip it) or earlier (count it twice): the chain of
    first records refuses it (``segment-table-invalid``), and no fingerprint is taken from
    the segments. (This defence holds.)"""
    from test_verify_segments import _resign

    starts = _starts(Path(ingested["plain"]).read_bytes())

    def edit(table: dict[str, Any]) -> None:
        row = next(r for r in table["table"][2:] if r["first_record"] is not None)
        row["first_record"] = starts[starts.index(row["first_record"]) + move]

    _resign(home, ingested["backup_id"], edit)
    code, out = _verify(cli, ingested["backup_id"], "--workers", "2")
    assert code == 1
    # one later: the chain refuses it; one earlier lies before the segment, which the
    # manifest's model refuses when it reads the statement (worded as a manifest that does
    # not verify)
    expected = "segment-table-invalid" if move > 0 else "manifest-signature-invalid"
    assert expected in _codes(out), out["findings"]
    assert not {"fingerprint-mismatch", "content-unreadable"} & _codes(out)
