"""ODCS contracts end to end (issue 17): a spec whose contract is an Open Data Contract
Standard document is added, approved and run; the manifest names the contract's kind and
digest; `export verify` re-checks every record against the same contract at the
destination; each quality rule breached blocks the run unless the spec tolerates the failing
records; documents that cannot be checked are refused at `spec add`, with nothing recorded.
Real SecantusDB, real backups, real age encryption."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pymongo import MongoClient
from tests.e2e.test_export_cli import (
    _checks,
    _customers,
    _json,
    _plain,
    _reencrypt,
    _refused,
    events,
    prepare,
    run_export,
    verify,
)

from affidavit.crypto.digest import sha256_hex
from affidavit.scratch.secantus_server import SecantusScratch

pytestmark = pytest.mark.e2e

ODCS = """\
apiVersion: v3.0.2
kind: DataContract
id: customers-to-acme-contract
version: 2.1.0
status: active
schema:
  - name: customers
    logicalType: object
    quality:
      - metric: rowCount
        mustBeGreaterOrEqualTo: 1
    properties:
      - name: _id
        logicalType: string
        primaryKey: true
        logicalTypeOptions: {pattern: "^[0-9a-f]{64}$"}
      - name: email
        logicalType: string
        required: true
        logicalTypeOptions: {pattern: "com$"}
      - name: age
        logicalType: string
      - name: country
        logicalType: string
        required: true
        quality:
          - metric: invalidValues
            arguments: {validValues: [FR, DE, NL]}
            mustBe: 0
      - name: notes
        quality:
          - metric: nullValues
            mustBeLessOrEqualTo: 100
            unit: percent
"""

SPEC = """
name = "customers-to-acme"
purpose = "churn analysis"
legal_basis = "legitimate_interests"
recipient = "acme"
destination = "{{dest}}"

[input]
source = "shop"
dataset = "shop.customers"

[fields]
_id = "pseudonymise"
email = {{{{ transform = "mask", keep = 4 }}}}
age = {{{{ transform = "generalise", width = 10 }}}}
country = "keep"
notes = "redact"

[contract]
max_violations = {tolerate}
odcs = '''
{odcs}'''
"""


def spec(odcs: str = ODCS, tolerate: int = 0) -> str:
    """The spec's text, with ``{dest}`` left for :func:`prepare` to fill in."""
    return SPEC.format(odcs=odcs.replace("{", "{{").replace("}", "}}"), tolerate=tolerate)


@pytest.fixture(scope="module")
def mongo(mongo_scratch_class: type[SecantusScratch]) -> Iterator[str]:
    with mongo_scratch_class() as server:
        client: MongoClient[dict[str, Any]] = MongoClient(server.uri)
        client["shop"]["customers"].insert_many(_customers())
        client.close()
        yield server.uri


def test_an_odcs_contract_export_is_delivered_and_verified(
    cli: Any, home: Path, tmp_path: Path, mongo: str
) -> None:
    s = prepare(cli, home, tmp_path, mongo, spec=spec())
    out = run_export(cli)
    predicate = out["predicate"]
    assert predicate["records"]["in"] == 40
    assert predicate["records"]["out"] == 40
    assert predicate["contract"]["result"]["passed"] is True
    assert predicate["contract"]["result"]["records_checked"] == 40
    rules = predicate["contract"]["rules"]
    assert rules["source"] == {
        "kind": "odcs",
        "api_version": "v3.0.2",
        "id": "customers-to-acme-contract",
        "version": "2.1.0",
        "sha256": sha256_hex(("\n" + ODCS).removeprefix("\n").encode()),
    }
    assert rules["unique"] == ["_id"]
    assert rules["min_records"] == 1
    assert rules["max_null_percent"] == {"notes": {"percent": "100", "inclusive": True}}
    assert rules["schema"]["properties"]["country"]["enum"] == ["FR", "DE", "NL"]
    added = events(home, "export.spec_added")
    assert added[0]["details"]["contract"]["kind"] == "odcs"
    file, manifest = Path(out["output"]), Path(out["manifest"])
    checked = verify(cli, s, file, manifest)
    assert checked.code == 0, checked.out
    assert json.loads(checked.out)["records"] == 40
    # a record edited to break the contract (re-encrypted to the same recipient): the
    # destination re-checks it against the signed ODCS contract and names the rule
    lines = _plain(s, file)
    record = json.loads(lines[4])
    record["country"] = "XX"
    record["email"] = "****@example.org"
    lines[4] = (json.dumps(record, separators=(",", ":"), ensure_ascii=False) + "\n").encode()
    _reencrypt(s, file, lines)
    result = verify(cli, s, file, manifest)
    assert {"schema", "fingerprint", "plaintext-digest"} <= _checks(result)
    messages = [d["message"] for d in json.loads(result.out)["discrepancies"]]
    assert any("country" in m and "XX" in m for m in messages)
    assert any("email" in m and "com$" in m for m in messages)


BREACHES = {
    "row count": (
        ODCS.replace("mustBeGreaterOrEqualTo: 1", "mustBeLessThan: 10"),
        "max_records",
        "40 record(s), at most 9",
    ),
    "nulls": (
        ODCS.replace("mustBeLessOrEqualTo: 100\n            unit: percent", "mustBe: 0"),
        "max_nulls",
        "notes: 40 null or missing, at most 0",
    ),
    "nulls in percent": (
        ODCS.replace("mustBeLessOrEqualTo: 100", "mustBeLessThan: 99.5"),
        "max_nulls",
        "under 99.5%",
    ),
    "duplicates": (
        ODCS.replace(
            "        quality:\n          - metric: invalidValues",
            "        quality:\n          - metric: duplicateValues\n            mustBe: 0\n"
            "          - metric: invalidValues",
        ),
        "unique",
        "country: duplicate value",
    ),
    "invalid values": (
        ODCS.replace("validValues: [FR, DE, NL]", "validValues: [FR, DE]"),
        "schema",
        "'NL' is not one of",
    ),
}


@pytest.mark.parametrize("breach", list(BREACHES))
def test_each_quality_rule_breached_blocks_the_run(
    cli: Any, home: Path, tmp_path: Path, mongo: str, breach: str
) -> None:
    odcs, rule, words = BREACHES[breach]
    s = prepare(cli, home, tmp_path, mongo, spec=spec(odcs))
    out = run_export(cli, code=1)
    assert out["ok"] is False
    listed = [v for v in out["contract"]["listed"] if v["rule"] == rule]
    assert listed, out["contract"]
    assert any(words in v["message"] for v in listed), listed
    assert list(s.dest.iterdir()) == []
    assert len(events(home, "export.blocked")) == 1
    assert events(home, "export.completed") == []


@pytest.mark.parametrize(
    ("breach", "failing"),
    [("duplicates", 37), ("invalid values", 13)],  # 3 countries of 40; every third is NL
)
def test_failing_records_within_the_spec_threshold_ship(
    cli: Any, home: Path, tmp_path: Path, mongo: str, breach: str, failing: int
) -> None:
    odcs = BREACHES[breach][0]
    s = prepare(cli, home, tmp_path, mongo, spec=spec(odcs, tolerate=failing - 1))
    assert run_export(cli, code=1)["contract"]["failed_records"] == failing
    s.spec_file.write_text(spec(odcs, tolerate=failing).format(dest=s.dest))
    _json(cli("--actor", "olga", "export", "spec", "add", str(s.spec_file), "--json"))
    _json(cli("--actor", "paul", "export", "spec", "approve", "customers-to-acme", "2", "--json"))
    out = run_export(cli)
    assert out["predicate"]["records"]["out"] == 40 - failing
    assert out["predicate"]["records"]["excluded"]["contract"] == failing
    checked = verify(cli, s, Path(out["output"]), Path(out["manifest"]))
    assert checked.code == 0, checked.out


def _ledger_size(home: Path) -> int:
    import sqlite3

    with sqlite3.connect(home / "catalog.sqlite") as db:
        (n,) = db.execute("SELECT COUNT(*) FROM ledger_entries").fetchone()
    return int(n)


def test_bad_odcs_documents_are_refused_at_spec_add(
    cli: Any, home: Path, tmp_path: Path, mongo: str
) -> None:
    add = ("source", "add", "shop", "--engine", "mongodb", "--uri", mongo)
    assert cli(*add, "--classification", "internal").code == 0
    before = _ledger_size(home)
    bad = tmp_path / "bad.toml"
    cases = {
        "schema: [unclosed\n  - {": "not valid YAML or JSON",
        ODCS.replace("metric: rowCount", "metric: freshness"): "unknown quality rule 'freshness'",
        ODCS.replace("- name: notes", "- name: name"): "'name' is not a field that leaves",
        ODCS.replace(
            "      - metric: rowCount\n        mustBeGreaterOrEqualTo: 1\n",
            "      - type: sql\n        query: SELECT COUNT(*) FROM customers\n",
        ): "a sql rule cannot be checked",
        ODCS.replace("status: active\n", "status: active\nowner: me\n"): "not ODCS v3.0.x",
    }
    for odcs, words in cases.items():
        bad.write_text(spec(odcs).format(dest=tmp_path))
        _refused(cli("export", "spec", "add", str(bad)), words)
    assert _ledger_size(home) == before
    assert _json(cli("export", "spec", "list", "--json"))["specs"] == []
