"""Parquet exports (issue 17): delivered, deterministic, verified at the destination, and
every tamper the JSON-lines and CSV tests try is caught on Parquet too. Real SecantusDB, real
backups, real pyarrow, real age encryption."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pyrage
import pytest
from pymongo import MongoClient
from pyrage import x25519
from tests.e2e.test_export_cli import (
    SPEC,
    Setup,
    _checks,
    _customers,
    prepare,
    run_export,
    verify,
)

from affidavit.formats.parquet_records import WRITER_OPTIONS, ParquetRows
from affidavit.scratch.secantus_server import SecantusScratch

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def mongo(mongo_scratch_class: type[SecantusScratch]) -> Iterator[str]:
    with mongo_scratch_class() as server:
        client: MongoClient[dict[str, Any]] = MongoClient(server.uri)
        client["shop"]["customers"].insert_many(_customers())
        client.close()
        yield server.uri


PARQUET_SPEC = SPEC.replace('destination = "{dest}"', 'destination = "{dest}"\nformat = "parquet"')
FIELDS = ["_id", "email", "birth", "age", "country", "notes"]


@pytest.fixture
def delivered_parquet(
    cli: Any, home: Path, tmp_path: Path, mongo: str
) -> tuple[Setup, Path, Path, dict[str, Any]]:
    s = prepare(cli, home, tmp_path, mongo, spec=PARQUET_SPEC)
    out = run_export(cli)
    assert out["output"].endswith(".parquet.age")
    assert out["predicate"]["output"]["format"] == "parquet"
    return s, Path(out["output"]), Path(out["manifest"]), out


def _plain(s: Setup, file: Path) -> bytes:
    return pyrage.decrypt(file.read_bytes(), [x25519.Identity.from_str(s.identity)])


def _rows(s: Setup, file: Path) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = pq.read_table(io.BytesIO(_plain(s, file))).to_pylist()
    return rows


def _write(s: Setup, file: Path, rows: list[dict[str, Any]], fields: list[str] = FIELDS) -> None:
    writer = ParquetRows(fields)
    data = b"".join(writer.add([r.get(f) for f in fields]) for r in rows) + writer.finish()
    recipient = x25519.Identity.from_str(s.identity).to_public()
    file.write_bytes(pyrage.encrypt(data, [recipient]))


def test_a_parquet_export_is_delivered_verified_and_deterministic(
    cli: Any, delivered_parquet: tuple[Setup, Path, Path, dict[str, Any]]
) -> None:
    s, file, manifest, out = delivered_parquet
    rows = _rows(s, file)
    assert len(rows) == 40
    assert list(rows[0]) == FIELDS
    assert rows[0]["country"] == "FR"
    assert rows[0]["notes"] == "null"  # redacted: JSON null, not a missing cell
    assert rows[0]["birth"] == '{"$numberInt":"1960"}'
    assert rows[0]["age"] == "20..30"
    checked = verify(cli, s, file, manifest)
    assert checked.code == 0, checked.out
    assert json.loads(checked.out)["records"] == 40
    # the same records written again give the same bytes
    plain = _plain(s, file)
    _write(s, file, rows)
    assert _plain(s, file) == plain
    # and the records' logical fingerprint is the JSON-lines export's (version 2 of the spec)
    s.spec_file.write_text(SPEC.format(dest=s.dest))
    assert cli("--actor", "olga", "export", "spec", "add", str(s.spec_file)).code == 0
    approve = ("--actor", "paul", "export", "spec", "approve", "customers-to-acme", "2")
    assert cli(*approve).code == 0
    lines = run_export(cli)
    assert lines["predicate"]["output"]["format"] == "extjson"
    assert lines["predicate"]["output"]["fingerprint"] == out["predicate"]["output"]["fingerprint"]
    assert (
        lines["predicate"]["output"]["plaintext_sha256"]
        != out["predicate"]["output"]["plaintext_sha256"]
    )


def test_parquet_records_added_dropped_or_edited_are_caught(
    cli: Any, delivered_parquet: tuple[Setup, Path, Path, dict[str, Any]]
) -> None:
    s, file, manifest, _ = delivered_parquet
    rows = _rows(s, file)
    _write(s, file, [*rows, {**rows[0], "_id": "f" * 64}])
    assert {"output-digest", "plaintext-digest", "record-count", "fingerprint"} <= _checks(
        verify(cli, s, file, manifest)
    )
    _write(s, file, rows[:-1])
    assert {"record-count", "fingerprint", "plaintext-digest"} <= _checks(
        verify(cli, s, file, manifest)
    )
    edited = [dict(r) for r in rows]
    edited[5]["country"] = "DE" if edited[5]["country"] != "DE" else "FR"
    _write(s, file, edited)
    found = _checks(verify(cli, s, file, manifest))
    assert {"fingerprint", "plaintext-digest"} <= found
    assert "record-count" not in found


def test_a_parquet_column_outside_the_allow_list_is_caught(
    cli: Any, delivered_parquet: tuple[Setup, Path, Path, dict[str, Any]]
) -> None:
    s, file, manifest, _ = delivered_parquet
    rows = [{**r, "name": f"Person {n}"} for n, r in enumerate(_rows(s, file))]
    _write(s, file, rows, [*FIELDS, "name"])
    result = verify(cli, s, file, manifest)
    assert "encoding" in _checks(result)
    assert "not the allow-list" in result.out


def test_a_parquet_file_that_is_not_the_encoding_is_caught(
    cli: Any, delivered_parquet: tuple[Setup, Path, Path, dict[str, Any]]
) -> None:
    s, file, manifest, _ = delivered_parquet
    rows = _rows(s, file)
    recipient = x25519.Identity.from_str(s.identity).to_public()
    # the same records with other writer options: valid Parquet, not the canonical bytes
    other = io.BytesIO()
    table = pa.Table.from_pylist(rows, schema=pa.schema([(f, pa.string()) for f in FIELDS]))
    pq.write_table(table, other, **{**WRITER_OPTIONS, "compression_level": 9})
    file.write_bytes(pyrage.encrypt(other.getvalue(), [recipient]))
    result = verify(cli, s, file, manifest)
    assert "not the canonical parquet encoding" in result.out
    assert "record-count" not in _checks(result)
    # not Parquet at all, and a column of another type
    file.write_bytes(pyrage.encrypt(b"PAR1 not parquet", [recipient]))
    result = verify(cli, s, file, manifest)
    assert "encoding" in _checks(result) and "not a readable Parquet file" in result.out
    typed = pa.table({f: pa.array([1] * 40, pa.int64()) for f in FIELDS})
    other = io.BytesIO()
    pq.write_table(typed, other)
    file.write_bytes(pyrage.encrypt(other.getvalue(), [recipient]))
    assert "encoding" in _checks(verify(cli, s, file, manifest))


def test_parquet_manifest_and_recipient_tampering_are_caught(
    cli: Any, delivered_parquet: tuple[Setup, Path, Path, dict[str, Any]], tmp_path: Path
) -> None:
    from affidavit.crypto.dsse import Envelope, sign_envelope
    from affidavit.crypto.signing import SigningKey

    s, file, manifest, _ = delivered_parquet
    genuine_manifest, genuine_file = manifest.read_text(), file.read_bytes()
    envelope = json.loads(genuine_manifest)
    statement = json.loads(base64.b64decode(envelope["payload"]))
    statement["predicate"]["output"]["records"] = 41
    envelope["payload"] = base64.b64encode(json.dumps(statement).encode()).decode()
    manifest.write_text(json.dumps(envelope))
    assert _checks(verify(cli, s, file, manifest)) == {"signature"}
    genuine = Envelope.from_json(genuine_manifest)
    forged = sign_envelope(
        genuine.payload, genuine.payload_type, SigningKey.generate(), genuine.signatures[0].keyid
    )
    manifest.write_text(forged.to_json())
    assert _checks(verify(cli, s, file, manifest)) == {"signature"}
    manifest.write_text(genuine_manifest)
    mallory = x25519.Identity.generate()
    file.write_bytes(pyrage.encrypt(_plain(s, file), [mallory.to_public()]))
    assert {"decrypt", "output-digest"} <= _checks(verify(cli, s, file, manifest))
    key = tmp_path / "mallory.key"
    key.write_text(str(mallory) + "\n")
    assert {"recipient", "output-digest"} <= _checks(verify(cli, s, file, manifest, identity=key))
    file.write_bytes(genuine_file)
    assert verify(cli, s, file, manifest).code == 0
