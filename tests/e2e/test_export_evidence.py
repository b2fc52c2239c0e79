"""Exports in the evidence package (issue 17): the signed manifest of every export delivered
in the period, a record naming the ledger events that prove it (cited with inclusion
proofs), and the package still verifies offline. A manifest whose catalog copy is not the
one the ledger recorded stays out. Real SecantusDB, real backups, real packages."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pymongo import MongoClient
from tests.e2e.test_export_cli import _customers, events, prepare, run_export

from affidavit.errors import InputError
from affidavit.scratch.secantus_server import SecantusScratch
from affidavit.services.evidence import read_evidence_file

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def mongo(mongo_scratch_class: type[SecantusScratch]) -> Iterator[str]:
    with mongo_scratch_class() as server:
        client: MongoClient[dict[str, Any]] = MongoClient(server.uri)
        client["shop"]["customers"].insert_many(_customers())
        client.close()
        yield server.uri


def _build(cli: Any, out: Path) -> Any:
    today = datetime.now(UTC).date()
    r = cli(
        "evidence", "build", "--from", str(today - timedelta(days=1)), "--to", str(today),
        "--out", str(out), "--json",
    )  # fmt: skip
    assert r.code == 0, r.err
    return json.loads(r.out)


def test_the_period_exports_manifests_are_in_the_package(
    cli: Any, home: Path, tmp_path: Path, mongo: str
) -> None:
    s = prepare(cli, home, tmp_path, mongo)
    out = run_export(cli)
    assert cli("policy", "check", "--offline").code in (0, 1)
    package = tmp_path / "evidence.tar.gz"
    _build(cli, package)
    checked = cli("evidence", "verify", str(package), "--public-key", s.vkey, "--json")
    assert checked.code == 0, checked.out
    assert json.loads(checked.out)["ok"] is True
    export_id = out["export"]["id"]
    manifest = read_evidence_file(package, f"exports/{export_id}.manifest.dsse.json")
    assert manifest == Path(out["manifest"]).read_bytes()
    (record,) = json.loads(read_evidence_file(package, "records/exports.json"))
    (completed,) = events(home, "export.completed")
    assert record["id"] == export_id
    assert record["completed_seq"] == completed["seq"]
    assert record["manifest"] == f"exports/{export_id}.manifest.dsse.json"
    assert record["output_sha256"] == out["predicate"]["output"]["sha256"]
    # the file by its name: the folder it went to is a path on the server's host
    assert record["output"] and "/" not in record["output"]
    cited = {
        json.loads(line)["seq"]
        for line in read_evidence_file(package, "ledger/events.jsonl").splitlines()
    }
    assert {record["completed_seq"], record["attestation_seq"]} <= cited


def test_a_manifest_edited_in_the_catalog_stays_out(
    cli: Any, home: Path, tmp_path: Path, mongo: str
) -> None:
    s = prepare(cli, home, tmp_path, mongo)
    out = run_export(cli)
    with sqlite3.connect(home / "catalog.sqlite") as db:
        db.execute(
            "UPDATE export_runs SET envelope = ? WHERE id = ?", ('{"x": 1}', out["export"]["id"])
        )
    assert cli("policy", "check", "--offline").code in (0, 1)
    package = tmp_path / "evidence.tar.gz"
    built = _build(cli, package)
    assert any("export-manifest-missing" in w for w in built["warnings"])
    (record,) = json.loads(read_evidence_file(package, "records/exports.json"))
    assert record["manifest"] is None
    assert "not the one the ledger recorded" in record["manifest_problem"]
    # the package does not prove this export: evidence verify says so, it does not pass it
    checked = cli("evidence", "verify", str(package), "--public-key", s.vkey, "--json")
    assert checked.code == 1, checked.out
    found = json.loads(checked.out)["findings"]
    assert [f["code"] for f in found if f["code"] == "export-manifest-missing"] == [
        "export-manifest-missing"
    ]
    assert all(f["subject"] != "manifest.sig" for f in found)


def test_a_period_without_exports_has_no_export_files(
    cli: Any, home: Path, tmp_path: Path, mongo: str
) -> None:
    prepare(cli, home, tmp_path, mongo)
    assert cli("policy", "check", "--offline").code in (0, 1)
    package = tmp_path / "evidence.tar.gz"
    _build(cli, package)
    with pytest.raises(InputError, match=r"has no records/exports\.json"):
        read_evidence_file(package, "records/exports.json")
