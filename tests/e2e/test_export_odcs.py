"""ODCS contracts end to end (issue 17): a spec whose contract is an Open Data Contract
Standard document is added, approved and run; the manifest names the contract's kind and
digest; `export verify` re-checks every record against the same contract at the
destination; each quality rule breached blocks the run unless the spec tolerates the failing
records; documents that cannot be checked, or that the official ODCS JSON Schema refuses, are
refused at `spec add`, with nothing recorded. ODCS v3.0.2, v3.1.0 and v3.2.0 documents.
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
        ODCS.replace("metric: rowCount", "metric: freshness"): (
            "at $.schema[0].quality[0].metric: 'freshness' is not one of"
        ),
        ODCS.replace("- name: notes", "- name: name"): "'name' is not a field that leaves",
        ODCS.replace(
            "      - metric: rowCount\n        mustBeGreaterOrEqualTo: 1\n",
            "      - type: sql\n        query: SELECT COUNT(*) FROM customers\n"
            "        mustBeGreaterThan: 0\n",
        ): "a sql rule cannot be checked",
        ODCS.replace(
            "      - metric: rowCount\n        mustBeGreaterOrEqualTo: 1\n",
            "      - type: sql\n        query: SELECT COUNT(*) FROM customers\n",
        ): "at $.schema[0].quality[0]: needs one of mustBe, mustNotBe, mustBeGreaterThan",
        ODCS.replace("status: active\n", "status: active\nowner: me\n"): (
            "breaks the ODCS JSON Schema at $: Additional properties are not allowed ('owner'"
        ),
        ODCS.replace("id: customers-to-acme-contract\n", ""): "at $: 'id' is a required",
        ODCS.replace("version: 2.1.0", "version: 2"): "at $.version: 2 is not of type",
        ODCS.replace("v3.0.2", "v3.3.0"): "at $.apiVersion: 'v3.3.0' is not one of",
        ODCS.replace("status: active\n", ""): "no status, which ODCS v3.0.2 requires",
        V31.replace("status: active\n", ""): "no status, which ODCS v3.1.0 requires",
        V32.replace("kind: DataContract\n", ""): "at $: 'kind' is a required",
        ODCS.replace("v3.0.2", "v2.2.2"): "ODCS v2 is not read",
        V31.replace("logicalType: timestamp", "logicalType: time"): "'time' cannot be checked",
    }
    for odcs, words in cases.items():
        bad.write_text(spec(odcs).format(dest=tmp_path))
        _refused(cli("export", "spec", "add", str(bad)), words)
    assert _ledger_size(home) == before
    assert _json(cli("export", "spec", "list", "--json"))["specs"] == []


V31 = """\
apiVersion: v3.1.0
kind: DataContract
id: customers-to-acme-v31
version: 3.1.0
status: active
contractCreatedTs: 2026-03-01T09:30:00+01:00
team:
  name: data-platform
  members:
    - {username: olga, role: owner}
schema:
  - name: customers
    id: customers
    logicalType: object
    quality:
      - id: some_rows
        metric: rowCount
        mustBeGreaterThan: 0
    properties:
      - name: _id
        id: customer_key
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
            dimension: conformity
      - name: notes
        quality:
          - metric: nullValues
            mustBeLessOrEqualTo: 100
            unit: percent
      - name: birth
        logicalType: timestamp
        required: true
"""

V32 = """\
apiVersion: v3.2.0
kind: DataContract
id: customers-to-acme-v32
version: 4.0.0
context: the customers a churn model is trained on
schema:
  - name: customers
    logicalType: object
    quality:
      - metric: rowCount
        mustBeBetween: [1, 100]
    properties:
      - name: _id
        logicalType: string
        primaryKey: true
        semanticType: dimension
      - name: email
        logicalType: string
        required: true
        synonyms: [{synonym: mail}]
      - name: age
        logicalType: string
      - name: country
        logicalType: string
        required: true
        enum: [{value: FR, label: France}, {value: DE}, {value: NL}]
      - name: notes
        deprecated: true
"""


def _with_birth(text: str) -> str:
    return text.replace('notes = "redact"\n', 'notes = "redact"\nbirth = "keep"\n')


def test_a_v310_contract_export_is_delivered_and_verified(
    cli: Any, home: Path, tmp_path: Path, mongo: str
) -> None:
    s = prepare(cli, home, tmp_path, mongo, spec=_with_birth(spec(V31)))
    out = run_export(cli)
    predicate = out["predicate"]
    assert predicate["records"]["out"] == 40
    rules = predicate["contract"]["rules"]
    assert rules["source"]["api_version"] == "v3.1.0"
    assert rules["source"]["id"] == "customers-to-acme-v31"
    assert rules["min_records"] == 1
    assert rules["schema"]["properties"]["birth"]["required"] == ["$date"]  # a BSON date
    file, manifest = Path(out["output"]), Path(out["manifest"])
    checked = verify(cli, s, file, manifest)
    assert checked.code == 0, checked.out
    # a timestamp turned into text at the destination is named by the signed contract
    lines = _plain(s, file)
    record = json.loads(lines[7])
    record["birth"] = "1967-05-17"
    lines[7] = (json.dumps(record, separators=(",", ":"), ensure_ascii=False) + "\n").encode()
    _reencrypt(s, file, lines)
    result = verify(cli, s, file, manifest)
    assert "schema" in _checks(result)
    messages = [d["message"] for d in json.loads(result.out)["discrepancies"]]
    assert any("birth" in m and "1967-05-17" in m for m in messages), messages


def test_a_v320_contract_export_is_delivered_verified_and_its_enum_enforced(
    cli: Any, home: Path, tmp_path: Path, mongo: str
) -> None:
    s = prepare(cli, home, tmp_path, mongo, spec=spec(V32))
    out = run_export(cli)
    rules = out["predicate"]["contract"]["rules"]
    assert rules["source"]["api_version"] == "v3.2.0"
    assert rules["schema"]["properties"]["country"]["enum"] == ["FR", "DE", "NL"]
    assert (rules["min_records"], rules["max_records"]) == (1, 100)
    checked = verify(cli, s, Path(out["output"]), Path(out["manifest"]))
    assert checked.code == 0, checked.out
    # a narrower enum in a new version of the spec: the NL records fail and block the run
    narrower = V32.replace(", {value: NL}", "")
    s.spec_file.write_text(spec(narrower).format(dest=s.dest))
    _json(cli("--actor", "olga", "export", "spec", "add", str(s.spec_file), "--json"))
    _json(cli("--actor", "paul", "export", "spec", "approve", "customers-to-acme", "2", "--json"))
    blocked = run_export(cli, code=1)
    assert blocked["contract"]["failed_records"] == 13  # every third of 40 is NL
    assert any("'NL' is not one of" in v["message"] for v in blocked["contract"]["listed"])
