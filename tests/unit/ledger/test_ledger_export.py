"""The export file round-trips entries byte for byte and rejects damaged files."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from affidavit.errors import FormatError
from affidavit.ledger import merkle
from affidavit.ledger.export import ExportHeader, ExportReader, write_export
from affidavit.ledger.verify import LedgerRecord

HEADER = ExportHeader(
    origin="o.example/log", vkey="o+00000000+AA==", size=3, checkpoints=1, exported_at="t"
)
ENTRIES = [
    '{"action":"a","seq":0,"subject":"caf\u00e9 \u2028 \\"q\\" \\u0001 \U0001f600"}'.encode(),
    b'{"seq":1}',
    b"\xff\x00 not utf-8",
]


def _write(path: Path) -> None:
    records = [LedgerRecord(i, e, merkle.leaf_hash(e)) for i, e in enumerate(ENTRIES)]
    with path.open("wb") as fh:
        summary = write_export(fh, HEADER, ["note\n\n\u2014 sig\n"], records)
    assert summary.entries == 3 and summary.checkpoints == 1
    assert summary.length == path.stat().st_size


def test_export_round_trip_is_byte_exact(tmp_path: Path) -> None:
    path = tmp_path / "e.jsonl"
    _write(path)
    assert b'"entry_b64"' in path.read_bytes()  # the non-UTF-8 entry
    with ExportReader(path) as reader:
        assert reader.header == HEADER
        assert reader.checkpoints == ["note\n\n\u2014 sig\n"]
        got = list(reader.records())
    assert [r.entry for r in got] == ENTRIES
    assert [r.leaf_hash for r in got] == [merkle.leaf_hash(e) for e in ENTRIES]


def test_export_truncated_mid_line_is_a_format_error(tmp_path: Path) -> None:
    path = tmp_path / "e.jsonl"
    _write(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 20])
    with ExportReader(path) as reader, pytest.raises(FormatError, match="truncated"):
        list(reader.records())


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (b"", "empty"),
        (b'{"type":"entry","seq":0}\n', "header"),
        (b"not json\n", "JSON"),
    ],
)
def test_export_bad_header_is_a_format_error(tmp_path: Path, content: bytes, match: str) -> None:
    path = tmp_path / "e.jsonl"
    path.write_bytes(content)
    with pytest.raises(FormatError, match=match):
        ExportReader(path)


def test_export_checkpoint_after_entries_is_a_format_error(tmp_path: Path) -> None:
    buf = io.BytesIO()
    write_export(buf, HEADER, [], [LedgerRecord(0, b'{"seq":0}', None)])
    path = tmp_path / "e.jsonl"
    path.write_bytes(buf.getvalue() + b'{"type":"checkpoint","note":"x"}\n')
    with ExportReader(path) as reader, pytest.raises(FormatError, match="before the entries"):
        list(reader.records())
