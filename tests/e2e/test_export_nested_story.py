"""Nested fields end to end (issue 17): an allow-list of dotted paths into nested documents
and arrays of documents, a transform on a nested leaf, a uniqueness rule on a nested path;
the delivered records hold only the allowed leaves; `export verify` passes at the destination
and catches a nested field slipped in. Real SecantusDB, real age encryption."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from pymongo import MongoClient
from tests.e2e.test_export_cli import _checks, _plain, _reencrypt, prepare, run_export, verify

from affidavit.scratch.secantus_server import SecantusScratch

pytestmark = pytest.mark.e2e

SPEC = """
name = "customers-to-acme"
purpose = "logistics study"
legal_basis = "legitimate_interests"
recipient = "acme"
destination = "{dest}"

[input]
source = "shop"
dataset = "shop.customers"

[fields]
_id = "keep"
"address.city" = "keep"
"address.zip" = {{ transform = "mask", keep = 2 }}
"orders.sku" = "keep"
"orders.paid" = "generalise"

[contract]
unique = ["address.zip"]

[contract.schema.properties.address]
type = "object"
additionalProperties = false
required = ["city"]

[contract.schema.properties.address.properties.city]
type = "string"

[contract.schema.properties.address.properties.zip]
type = "string"
"""


def _customers() -> list[dict[str, Any]]:
    return [
        {
            "_id": n,
            "name": f"Person {n}",
            "address": {"street": f"{n} rue X", "city": "Paris", "zip": f"750{n:02d}"},
            "orders": [
                {"sku": f"s{n}", "price": n, "paid": datetime(2020 + n % 3, 1, 2, tzinfo=UTC)},
                {"price": 1},
            ],
        }
        for n in range(12)
    ]


@pytest.fixture(scope="module")
def mongo(mongo_scratch_class: type[SecantusScratch]) -> Iterator[str]:
    with mongo_scratch_class() as server:
        client: MongoClient[dict[str, Any]] = MongoClient(server.uri)
        client["shop"]["customers"].insert_many(_customers())
        client.close()
        yield server.uri


def test_nested_fields_leave_minimised_and_verify(
    cli: Any, home: Path, tmp_path: Path, mongo: str
) -> None:
    s = prepare(cli, home, tmp_path, mongo, spec=SPEC)
    out = run_export(cli)
    assert out["ok"] is True
    predicate = out["predicate"]
    assert [f["name"] for f in predicate["fields"]][1:] == [
        "address.city",
        "address.zip",
        "orders.sku",
        "orders.paid",
    ]
    # per record: name, street, the first order's price, the second order's price
    assert predicate["records"]["fields_dropped"] == 12 * 4
    file, manifest = Path(out["output"]), Path(out["manifest"])
    records = [json.loads(line) for line in _plain(s, file)]
    assert len(records) == 12
    first = records[0]
    assert first == {
        "_id": {"$numberInt": "0"},
        "address": {"city": "Paris", "zip": "***00"},
        "orders": [{"sku": "s0", "paid": {"$numberInt": "2020"}}],
    }
    checked = verify(cli, s, file, manifest)
    assert checked.code == 0, checked.out

    # a nested field slipped in at the destination is caught
    lines = _plain(s, file)
    record = json.loads(lines[3])
    record["address"]["street"] = "3 rue X"
    lines[3] = json.dumps(record, separators=(",", ":")).encode() + b"\n"
    _reencrypt(s, file, lines)
    result = verify(cli, s, file, manifest)
    assert "allow-list" in _checks(result)
    problems = json.loads(result.out)["discrepancies"]
    assert any("address.street" in d["message"] for d in problems)


def test_a_nested_path_no_record_holds_fails_the_run(
    cli: Any, home: Path, tmp_path: Path, mongo: str
) -> None:
    prepare(cli, home, tmp_path, mongo, spec=SPEC.replace('"orders.sku"', '"orders.code"'))
    r = cli("export", "run", "customers-to-acme", "--json")
    assert r.code == 2, r.out + r.err
    assert "orders.code" in r.err
