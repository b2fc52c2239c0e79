"""Ledger entries and export lines nested 100,000 arrays deep (attack pass, B5): the JSON parser
(and the RFC 8785 encoder) give up with ``RecursionError``, which must reach the user as a
``FormatError`` (a finding of the verifier, or a malformed export file), never as exit 4."""

from __future__ import annotations

from pathlib import Path

import pytest

from affidavit.crypto.note import NoteSigner
from affidavit.crypto.signing import SigningKey
from affidavit.errors import FormatError
from affidavit.ledger import merkle
from affidavit.ledger.export import ExportHeader, ExportReader, write_export
from affidavit.ledger.verify import FindingCode, LedgerRecord, verify_ledger
from affidavit.models.ledger import Event

DEPTH = 100_000
HEADER = ExportHeader(origin="o", vkey="o+00000000+AA==", size=1, checkpoints=0, exported_at="t")


def _event(details: bytes) -> bytes:
    return (
        b'{"action":"verification.completed","actor":"a","client":{},"details":{"x":'
        + details
        + b'},"seq":0,"subject":"s","time":"t"}'
    )


@pytest.mark.parametrize(
    "entry",
    [
        b'{"action":"verification.completed","details":' + b"[" * DEPTH,
        _event(b"[" * DEPTH + b"]" * DEPTH),
        _event(b"[" * 995 + b"]" * 995),  # parses, but too deep to re-encode canonically
    ],
    ids=["cut-short", "whole", "just-parses"],
)
def test_event_from_canonical_refuses_hostile_nesting(entry: bytes) -> None:
    with pytest.raises(FormatError, match="nested too deeply"):
        Event.from_canonical(entry)


def test_moderate_nesting_is_still_an_event() -> None:
    entry = _event(b"[" * 50 + b"]" * 50)
    assert Event.from_canonical(entry).canonical() == entry


def test_full_verification_reports_a_deep_entry_as_unparseable() -> None:
    entry = _event(b"[" * DEPTH + b"]" * DEPTH)
    records = [LedgerRecord(0, entry, merkle.leaf_hash(entry))]
    verifier = NoteSigner("o", SigningKey.generate()).verifier()
    report = verify_ledger(records, [], verifier, full=True)
    codes = {f.code for f in report.findings if f.seq == 0}
    assert FindingCode.ENTRY_UNPARSEABLE in codes


def test_export_reader_refuses_a_deep_line(tmp_path: Path) -> None:
    path = tmp_path / "e.jsonl"
    with path.open("wb") as fh:
        write_export(fh, HEADER, [], [])
    with path.open("ab") as fh:
        fh.write(b'{"type":"entry","seq":' + b"[" * DEPTH + b"]" * DEPTH + b"}\n")
    # the line after the checkpoints is read when the reader opens the file
    with pytest.raises(FormatError, match="line 2: the line is nested too deeply"):
        ExportReader(path).close()
