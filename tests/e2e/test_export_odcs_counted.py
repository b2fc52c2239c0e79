"""ODCS ``duplicateValues`` / ``invalidValues`` limits above zero, end to end (issue 17): a
run within the limits ships, its manifest naming each rule, its limit and its count, and
`export verify` re-counts them from the output; one over a limit (rows, or percent at the
boundary) blocks the run with nothing delivered and the counts recorded; one process and
workers give the same bytes and counts; an output tampered to break a limit is caught at the
destination. Real SecantusDB, real backups, real age."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pymongo import MongoClient
from tests.e2e.test_export_cli import (
    _checks,
    _plain,
    _reencrypt,
    events,
    prepare,
    verify,
)
from tests.e2e.test_export_parallel import _same_run

from affidavit.scratch.secantus_server import SecantusScratch
from affidavit.services.exports import parallel

pytestmark = pytest.mark.e2e

N = 300
DUPS = 6  # the last 6 records repeat earlier emails
INVALID = 9  # 3% of the records have country XX

ODCS = """\
apiVersion: v3.1.0
kind: DataContract
id: counted-limits
version: 1.0.0
status: active
schema:
  - name: customers
    logicalType: object
    properties:
      - name: _id
        logicalType: integer
        primaryKey: true
      - name: email
        logicalType: string
        quality:
          - metric: duplicateValues
            mustBeLessOrEqualTo: 6
      - name: country
        logicalType: string
        quality:
          - metric: invalidValues
            arguments: {validValues: [FR, DE, NL]}
            mustBeLessOrEqualTo: 3
            unit: percent
      - name: notes
        logicalType: string
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
_id = "keep"
email = "keep"
country = "keep"
notes = "keep"

[contract]
max_violations = 1000
odcs = '''
{odcs}'''
"""


def spec(odcs: str = ODCS) -> str:
    return SPEC.format(odcs=odcs.replace("{", "{{").replace("}", "}}"))


def _documents() -> list[dict[str, Any]]:
    out = []
    for n in range(N):
        out.append(
            {
                "_id": n,
                "email": f"p{n if n < N - DUPS else n - (N - DUPS)}@example.com",
                "country": "XX" if n % 33 == 5 and n < 33 * INVALID else "FR",
                "notes": "x" * 200,
            }
        )
    return out


@pytest.fixture(scope="module")
def mongo(mongo_scratch_class: type[SecantusScratch]) -> Iterator[str]:
    with mongo_scratch_class() as server:
        client: MongoClient[dict[str, Any]] = MongoClient(server.uri)
        client["shop"]["customers"].insert_many(_documents())
        client.close()
        yield server.uri


@pytest.fixture
def small_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(parallel, "BATCH_BYTES", 4 * 1024)  # ~15 records a batch


def _run(cli: Any, workers: int, output: str, *, code: int = 0) -> dict[str, Any]:
    r = cli(
        "export", "run", "customers-to-acme", "--workers", str(workers), "--output", output,
        "--json",
    )  # fmt: skip
    assert r.code == code, r.err + r.out
    out: dict[str, Any] = json.loads(r.out)
    return out


def test_within_the_limits_ships_names_the_counts_and_verifies(
    cli: Any, home: Path, tmp_path: Path, mongo: str, small_batches: None
) -> None:
    assert sum(1 for d in _documents() if d["country"] == "XX") == INVALID
    s = prepare(cli, home, tmp_path, mongo, spec=spec())
    serial = _run(cli, 1, "serial.jsonl.age")
    predicate = serial["predicate"]
    assert predicate["records"]["out"] == N  # counted rules refuse no record
    result = predicate["contract"]["result"]
    assert result["passed"] is True and result["failed_records"] == 0
    assert result["counted"] == [
        {"rule": "duplicateValues(email)", "metric": "duplicateValues", "field": "email",
         "limit": "at most 6 rows", "count": DUPS, "records": N, "passed": True},
        {"rule": "invalidValues(country)", "metric": "invalidValues", "field": "country",
         "limit": "at most 3%", "count": INVALID, "records": N, "passed": True},
    ]  # fmt: skip
    rules = predicate["contract"]["rules"]["counted"]
    assert [(r["metric"], r["path"], r["unit"], r["high"]) for r in rules] == [
        ("duplicateValues", "email", "rows", "6"),
        ("invalidValues", "country", "percent", "3"),
    ]
    file, manifest = Path(serial["output"]), Path(serial["manifest"])
    checked = verify(cli, s, file, manifest)
    assert checked.code == 0, checked.out
    workers = _run(cli, 3, "workers.jsonl.age")
    _same_run(serial, workers)
    assert workers["predicate"]["contract"]["result"]["counted"] == result["counted"]

    # a duplicate made unique: within the limit, but not the count the manifest signed
    original = _plain(s, file)
    lines = list(original)
    record = json.loads(lines[-1])
    assert record["email"] == f"p{DUPS - 1}@example.com"  # the last record repeats p5
    record["email"] = "someone-else@example.com"
    lines[-1] = (json.dumps(record, separators=(",", ":"), ensure_ascii=False) + "\n").encode()
    _reencrypt(s, file, lines)
    tampered = verify(cli, s, file, manifest)
    assert tampered.code != 0
    messages = [d["message"] for d in json.loads(tampered.out)["discrepancies"]]
    assert any("duplicateValues(email): 5 in the records, the manifest signed 6" in m
               for m in messages), messages  # fmt: skip
    assert not any("at most 6 rows" in m for m in messages)  # the limit itself holds

    # one more duplicate slipped into the output (re-encrypted to the same recipient): the
    # destination counts 7 against the signed limit of 6 and the signed count of 6
    lines = list(original)
    record = json.loads(lines[10])
    record["email"] = "p0@example.com"
    lines[10] = (json.dumps(record, separators=(",", ":"), ensure_ascii=False) + "\n").encode()
    _reencrypt(s, file, lines)
    tampered = verify(cli, s, file, manifest)
    assert tampered.code != 0
    assert "duplicateValues" in _checks(tampered)
    messages = [d["message"] for d in json.loads(tampered.out)["discrepancies"]]
    assert any("7 record(s) with a duplicate value of 300, at most 6 rows" in m for m in messages)
    assert any("duplicateValues(email): 7 in the records, the manifest signed 6" in m
               for m in messages)  # fmt: skip


LIMITS = {
    "one duplicate over": (
        ODCS.replace("mustBeLessOrEqualTo: 6", "mustBeLessOrEqualTo: 5"),
        "duplicateValues",
        "email: 6 record(s) with a duplicate value of 300, at most 5 rows",
    ),
    "percent at the boundary, exclusive": (
        ODCS.replace("mustBeLessOrEqualTo: 3\n", "mustBeLessThan: 3\n"),
        "invalidValues",
        "country: 9 record(s) with an invalid value of 300, under 3%",
    ),
    "percent just under": (
        ODCS.replace("mustBeLessOrEqualTo: 3\n", "mustBeLessOrEqualTo: 2.99\n"),
        "invalidValues",
        "at most 2.99%",
    ),
}


@pytest.mark.parametrize("limit", list(LIMITS))
@pytest.mark.parametrize("workers", [1, 2])
def test_one_over_a_limit_blocks_the_run_and_delivers_nothing(
    cli: Any,
    home: Path,
    tmp_path: Path,
    mongo: str,
    small_batches: None,
    limit: str,
    workers: int,
) -> None:
    odcs, rule, words = LIMITS[limit]
    s = prepare(cli, home, tmp_path, mongo, spec=spec(odcs))
    out = _run(cli, workers, "out.jsonl.age", code=1)
    assert out["ok"] is False
    contract = out["contract"]
    assert contract["failed_records"] == 0  # max_violations = 1000 tolerates no count
    (listed,) = [v for v in contract["listed"] if v["rule"] == rule]
    assert listed["key"] is None and words in listed["message"], listed
    counted = {c["metric"]: c for c in contract["counted"]}
    assert counted[rule]["passed"] is False
    assert counted["duplicateValues"]["count"] == DUPS
    assert counted["invalidValues"]["count"] == INVALID
    assert list(s.dest.iterdir()) == []
    (blocked,) = events(home, "export.blocked")
    assert blocked["details"]["contract"]["counted"] == contract["counted"]
