"""Nested fields in CSV and Parquet exports (issue 17): each allowed dotted path is a column
of its own, named by the path; `export verify` rebuilds the nested documents from the
columns, re-checks the contract and the allow-list, and finds a stray column or a nested
field outside the allow-list; the records' logical fingerprint is the same in JSON lines, CSV
and Parquet; a record whose allowed path crosses an array cannot be written as columns and
fails the run. Real SecantusDB, real backups, real pyarrow, real age encryption."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pyrage
import pytest
from pymongo import MongoClient
from pyrage import x25519
from tests.e2e.test_export_cli import (
    Setup,
    _checks,
    _csv_reencrypt,
    _csv_rows,
    _json,
    _refused,
    events,
    prepare,
    run_export,
    verify,
)

from affidavit.formats.parquet_records import ParquetRows
from affidavit.scratch.secantus_server import SecantusScratch

pytestmark = pytest.mark.e2e

SPEC = """
name = "customers-to-acme"
purpose = "logistics study"
legal_basis = "legitimate_interests"
recipient = "acme"
destination = "{dest}"
format = "FORMAT"

[input]
source = "shop"
dataset = "shop.customers"

[fields]
_id = "keep"
"address.city" = "keep"
"address.zip" = {{ transform = "mask", keep = 2 }}
"profile.contact.email" = "pseudonymise"
country = "keep"

[contract]
unique = ["address.zip"]

[contract.max_nulls]
"address.city" = 2

[contract.schema.properties.address]
type = "object"
additionalProperties = false

[contract.schema.properties.address.properties.city]
type = ["string", "null"]

[contract.schema.properties.address.properties.zip]
type = "string"
"""
COLUMNS = ["_id", "address.city", "address.zip", "profile.contact.email", "country"]


def _customers() -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for n in range(12):
        doc: dict[str, Any] = {
            "_id": n,
            "name": f"Person {n}",
            "address": {"street": f"{n} rue X", "city": "Paris", "zip": f"750{n:02d}"},
            "profile": {"contact": {"email": f"p{n}@example.com", "phone": "0"}, "age": n},
            "country": "FR",
            "orders": [{"sku": f"s{n}", "price": n}],
        }
        if n == 3:
            doc["address"]["city"] = None  # null: a cell "null"
        if n == 4:
            del doc["address"]["city"]  # missing: an empty cell
        if n == 5:
            del doc["profile"]  # no allowed leaf under profile
        if n == 6:
            doc["country"] = "42"  # a string that reads as JSON: quoted in its cell
        out.append(doc)
    return out


@pytest.fixture(scope="module")
def mongo(mongo_scratch_class: type[SecantusScratch]) -> Iterator[str]:
    with mongo_scratch_class() as server:
        client: MongoClient[dict[str, Any]] = MongoClient(server.uri)
        client["shop"]["customers"].insert_many(_customers())
        client.close()
        yield server.uri


def spec(fmt: str) -> str:
    return SPEC.replace("FORMAT", fmt)


def _new_version(cli: Any, s: Setup, text: str, version: int) -> None:
    s.spec_file.write_text(text.format(dest=s.dest))
    _json(cli("--actor", "olga", "export", "spec", "add", str(s.spec_file), "--json"))
    approve = ("--actor", "paul", "export", "spec", "approve", "customers-to-acme", str(version))
    _json(cli(*approve, "--json"))


def _plain(s: Setup, file: Path) -> bytes:
    return pyrage.decrypt(file.read_bytes(), [x25519.Identity.from_str(s.identity)])


def _encrypt(s: Setup, file: Path, data: bytes) -> None:
    recipient = x25519.Identity.from_str(s.identity).to_public()
    file.write_bytes(pyrage.encrypt(data, [recipient]))


@pytest.fixture
def delivered_csv(
    cli: Any, home: Path, tmp_path: Path, mongo: str
) -> tuple[Setup, Path, Path, dict[str, Any]]:
    s = prepare(cli, home, tmp_path, mongo, spec=spec("csv"))
    out = run_export(cli)
    return s, Path(out["output"]), Path(out["manifest"]), out


def test_nested_columns_leave_and_verify_with_the_json_lines_fingerprint(
    cli: Any, delivered_csv: tuple[Setup, Path, Path, dict[str, Any]]
) -> None:
    s, file, manifest, out = delivered_csv
    rows = _csv_rows(s, file)
    assert rows[0] == COLUMNS
    assert len(rows) == 13
    cells = {
        int(json.loads(r[0])["$numberInt"]): dict(zip(COLUMNS, r, strict=True)) for r in rows[1:]
    }
    assert cells[0]["address.city"] == "Paris"
    assert cells[0]["address.zip"] == "***00"
    assert len(cells[0]["profile.contact.email"]) == 64  # the pseudonym
    assert cells[3]["address.city"] == "null"  # a null
    assert cells[4]["address.city"] == ""  # missing
    assert cells[5]["profile.contact.email"] == ""
    assert cells[6]["country"] == '"42"'
    assert b"street" not in _plain(s, file)
    checked = verify(cli, s, file, manifest)
    assert checked.code == 0, checked.out
    assert json.loads(checked.out)["records"] == 12
    fingerprints = {"csv": out["predicate"]["output"]["fingerprint"]}
    for version, fmt in ((2, "extjson"), (3, "parquet")):
        _new_version(cli, s, spec(fmt), version)
        again = run_export(cli)
        assert again["predicate"]["output"]["format"] == fmt
        fingerprints[fmt] = again["predicate"]["output"]["fingerprint"]
        done = verify(cli, s, Path(again["output"]), Path(again["manifest"]))
        assert done.code == 0, done.out
        if fmt == "extjson":
            first = json.loads(_plain(s, Path(again["output"])).splitlines()[0])
            assert first["address"] == {"city": "Paris", "zip": "***00"}
        else:
            table = pq.read_table(io.BytesIO(_plain(s, Path(again["output"]))))
            assert table.column_names == COLUMNS
    assert len(set(fingerprints.values())) == 1, fingerprints


def test_csv_nested_tampering_is_caught(
    cli: Any, delivered_csv: tuple[Setup, Path, Path, dict[str, Any]]
) -> None:
    s, file, manifest, _ = delivered_csv
    rows = _csv_rows(s, file)
    # a nested field outside the allow-list slipped in as a column of its own
    wider = [[*r, "address.street" if n == 0 else f"{n} rue X"] for n, r in enumerate(rows)]
    _csv_reencrypt(s, file, wider)
    result = verify(cli, s, file, manifest)
    assert {"allow-list", "encoding"} <= _checks(result)
    assert "address.street" in result.out
    # a column renamed to a path outside the allow-list
    renamed = [list(r) for r in rows]
    renamed[0][1] = "address.street"
    _csv_reencrypt(s, file, renamed)
    assert "allow-list" in _checks(verify(cli, s, file, manifest))
    # a nested cell edited: the rebuilt records are not the signed ones
    edited = [list(r) for r in rows]
    edited[2][1] = "Lyon"
    _csv_reencrypt(s, file, edited)
    found = _checks(verify(cli, s, file, manifest))
    assert {"fingerprint", "plaintext-digest"} <= found
    assert "record-count" not in found
    # a nested cell that breaks the signed contract (a second zip code 75000... duplicate)
    duplicate = [list(r) for r in rows]
    duplicate[2][2] = duplicate[1][2]
    _csv_reencrypt(s, file, duplicate)
    assert {"unique", "fingerprint"} <= _checks(verify(cli, s, file, manifest))
    # a nested cell holding a document where a string leaf was: the contract's schema
    nested = [list(r) for r in rows]
    nested[2][1] = '{"street":"2 rue X"}'
    _csv_reencrypt(s, file, nested)
    assert {"schema", "fingerprint"} <= _checks(verify(cli, s, file, manifest))
    # a row dropped
    _csv_reencrypt(s, file, rows[:-1])
    assert {"record-count", "fingerprint"} <= _checks(verify(cli, s, file, manifest))


def test_parquet_nested_tampering_is_caught(
    cli: Any, home: Path, tmp_path: Path, mongo: str
) -> None:
    s = prepare(cli, home, tmp_path, mongo, spec=spec("parquet"))
    out = run_export(cli)
    file, manifest = Path(out["output"]), Path(out["manifest"])
    genuine = _plain(s, file)
    rows: list[dict[str, Any]] = pq.read_table(io.BytesIO(genuine)).to_pylist()
    assert list(rows[0]) == COLUMNS
    assert rows[0]["address.city"] == "Paris"

    def write(records: list[dict[str, Any]], columns: list[str]) -> None:
        writer = ParquetRows(columns)
        data = b"".join(writer.add([r.get(c) for c in columns]) for r in records)
        _encrypt(s, file, data + writer.finish())

    write(rows, COLUMNS)
    assert _plain(s, file) == genuine  # the same rows, the same bytes
    assert _checks(verify(cli, s, file, manifest)) == {"output-digest"}  # encrypted anew
    # a nested field outside the allow-list, as a column of its own
    write([{**r, "address.street": "1 rue X"} for r in rows], [*COLUMNS, "address.street"])
    result = verify(cli, s, file, manifest)
    assert {"allow-list", "encoding"} <= _checks(result)
    assert "address.street" in result.out
    # a nested cell edited
    edited = [dict(r) for r in rows]
    edited[1]["address.city"] = "Lyon"
    write(edited, COLUMNS)
    found = _checks(verify(cli, s, file, manifest))
    assert {"fingerprint", "plaintext-digest"} <= found
    # a nested leaf emptied (null cell: the field missing) beyond the contract's null limit
    emptied = [{**r, "address.city": None} for r in rows]
    write(emptied, COLUMNS)
    assert {"max_nulls", "fingerprint"} <= _checks(verify(cli, s, file, manifest))


def test_a_path_through_an_array_fails_a_csv_run(
    cli: Any, home: Path, tmp_path: Path, mongo: str
) -> None:
    text = spec("csv").replace('country = "keep"\n', 'country = "keep"\n"orders.sku" = "keep"\n')
    s = prepare(cli, home, tmp_path, mongo, spec=text)
    _refused(cli("export", "run", "customers-to-acme"), "orders is an array")
    assert list(s.dest.iterdir()) == []
    failed = events(home, "export.failed")
    assert len(failed) == 1
    assert "orders.sku" in failed[0]["details"]["error"]
    assert events(home, "export.completed") == []
