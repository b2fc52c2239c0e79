"""Lineage through the CLI (issue 17): a backup -> verify -> drill -> export story yields
OpenLineage run events that validate against the official schema and a graph from the source
dataset to the export's destination; ``lineage verify`` catches a changed artifact, an edited
ledger entry and a forged event; ``lineage emit`` POSTs exactly the events to a real local
HTTP server and marks nothing sent when the endpoint is down. Real SecantusDB, real backups,
real drills, real exports."""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator, FormatChecker
from pymongo import MongoClient
from referencing import Registry, Resource
from tests.e2e.test_export_cli import _customers, prepare, run_export

from affidavit.scratch.secantus_server import SecantusScratch

pytestmark = pytest.mark.e2e

SCHEMAS = Path(__file__).parent / "lineage_schema"


@pytest.fixture(scope="module")
def mongo(mongo_scratch_class: type[SecantusScratch]) -> Iterator[str]:
    """The export story's source (tests/e2e/test_export_cli.py): shop.customers, shop.orders."""
    with mongo_scratch_class() as server:
        client: MongoClient[dict[str, Any]] = MongoClient(server.uri)
        client["shop"]["customers"].insert_many(_customers())
        client["shop"]["orders"].insert_many([{"_id": i, "total": i * 3} for i in range(5)])
        client.close()
        yield server.uri


def _validators() -> tuple[Draft202012Validator, Draft202012Validator, Draft202012Validator]:
    docs = {
        name: json.loads((SCHEMAS / name).read_text())
        for name in (
            "OpenLineage.json",
            "ColumnLineageDatasetFacet.json",
            "ErrorMessageRunFacet.json",
        )
    }
    registry: Registry[Any] = Registry().with_resources(
        (doc["$id"], Resource.from_contents(doc)) for doc in docs.values()
    )
    checker = FormatChecker()
    assert {"date-time", "uuid"} <= set(checker.checkers)

    @checker.checks("uri")
    def _uri(instance: object) -> bool:
        return not isinstance(instance, str) or (":" in instance and " " not in instance)

    def make(schema: dict[str, Any]) -> Draft202012Validator:
        return Draft202012Validator(schema, registry=registry, format_checker=checker)

    column = docs["ColumnLineageDatasetFacet.json"]
    error = docs["ErrorMessageRunFacet.json"]
    return (
        make(docs["OpenLineage.json"]),
        make({"$ref": f"{column['$id']}#/$defs/ColumnLineageDatasetFacet"}),
        make({"$ref": f"{error['$id']}#/$defs/ErrorMessageRunFacet"}),
    )


def schema_problems(event: dict[str, Any]) -> list[str]:
    """Every way ``event`` breaks the OpenLineage schema (and its standard facets')."""
    run_event, column, error = _validators()
    problems = [e.message for e in run_event.iter_errors(event)]
    for dataset in event.get("outputs", []):
        if "columnLineage" in dataset.get("facets", {}):
            problems += [e.message for e in column.iter_errors(dataset["facets"]["columnLineage"])]
    if "errorMessage" in event["run"].get("facets", {}):
        problems += [e.message for e in error.iter_errors(event["run"]["facets"]["errorMessage"])]
    return problems


def test_schema_check_can_fail() -> None:
    """The validator is not vacuous: a RunEvent without a runId, a bad time or a bad facet
    is refused."""
    good = {
        "eventType": "START",
        "eventTime": "2026-12-05T12:00:00.000000Z",
        "producer": "https://example.invalid/affidavit",
        "schemaURL": "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunEvent",
        "run": {"runId": "8f0c2a49-7d1e-5b8a-9c3e-4a61d2f0b7c5"},
        "job": {"namespace": "n", "name": "j"},
    }
    assert schema_problems(good) == []
    assert schema_problems({**good, "run": {}})
    assert schema_problems({**good, "eventTime": "yesterday"})
    assert schema_problems({**good, "run": {"runId": "not-a-uuid"}})
    bad_facet = {
        **good,
        "outputs": [
            {"namespace": "file", "name": "/x", "facets": {"columnLineage": {
                "_producer": "https://example.invalid/a", "_schemaURL": "https://x.invalid/s",
                "fields": {"a": {"inputFields": [{"name": "n"}]}}}}}
        ],
    }  # fmt: skip
    assert schema_problems(bad_facet)


class _Collector(BaseHTTPRequestHandler):
    received: list[dict[str, Any]]
    status = 200

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(length)
        assert self.headers.get("Content-Type") == "application/json"
        type(self).received.append(json.loads(body))
        self.send_response(type(self).status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def endpoint() -> Iterator[tuple[str, type[_Collector]]]:
    handler = type("Handler", (_Collector,), {"received": [], "status": 200})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/api/v1/lineage", handler
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def lines(cli: Any, *args: str) -> list[dict[str, Any]]:
    r = cli("lineage", "export", *args)
    assert r.code == 0, r.err
    return [json.loads(line) for line in r.out.splitlines() if line]


def _by_run(events: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for e in events:
        out.setdefault(e["job"]["name"], []).append(e)
    return out


def test_lineage_story(
    cli: Any, home: Path, tmp_path: Path, mongo: str, endpoint: tuple[str, Any]
) -> None:
    s = prepare(cli, home, tmp_path, mongo)
    assert cli("verify", s.backup_id, "--json").code == 0
    drilled = cli("drill", "run", s.backup_id, "--json")
    assert drilled.code == 0, drilled.err
    exported = run_export(cli)
    output = Path(exported["output"])

    events = lines(cli)
    assert events == lines(cli)  # derived deterministically: the same every time
    for event in events:
        assert schema_problems(event) == [], event
        ledger = event["run"]["facets"]["affidavit_ledger"]
        assert len(ledger["leafHash"]) == 64 and isinstance(ledger["seq"], int)
    jobs = _by_run(events)
    assert set(jobs) == {"backup.shop", "verify.shop", "drill.shop", "export.customers-to-acme"}
    for job, evs in jobs.items():
        assert [e["eventType"] for e in evs] == ["START", "COMPLETE"], job
        assert len({e["run"]["runId"] for e in evs}) == 1, job
    backup_done = jobs["backup.shop"][1]
    source = backup_done["inputs"]
    host_port = mongo.split("//", 1)[1].split("/", 1)[0].split("?", 1)[0]
    assert {(d["namespace"], d["name"]) for d in source} == {
        (f"mongodb://{host_port}", "shop.customers"),
        (f"mongodb://{host_port}", "shop.orders"),
    }
    customers = next(d for d in source if d["name"] == "shop.customers")
    assert customers["facets"]["affidavit_fingerprint"]["fingerprint"].startswith("afp1:")
    assert customers["facets"]["affidavit_classification"]["classification"] == "confidential"
    manifest = backup_done["run"]["facets"]["affidavit_manifest"]["sha256"]
    with sqlite3.connect(home / "catalog.sqlite") as db:
        (stored,) = db.execute(
            "SELECT manifest_sha256 FROM backups WHERE id = ?", (s.backup_id,)
        ).fetchone()
    assert manifest == stored
    vault_url = f"file://{tmp_path / 'vault'}"
    assert backup_done["outputs"] and all(
        o["namespace"] == vault_url for o in backup_done["outputs"]
    )
    export_done = jobs["export.customers-to-acme"][1]
    (dest,) = export_done["outputs"]
    assert (dest["namespace"], dest["name"]) == ("file", str(output))
    assert (
        dest["facets"]["affidavit_artifact"]["sha256"] == exported["predicate"]["output"]["sha256"]
    )
    columns = dest["facets"]["columnLineage"]["fields"]
    assert set(columns) == {"_id", "email", "birth", "age", "country", "notes"}
    assert columns["country"]["transformationType"] == "IDENTITY"
    assert columns["country"]["inputFields"][0]["transformations"][0]["masking"] is False
    for masked in ("_id", "email", "birth", "age", "notes"):
        assert columns[masked]["transformationType"] == "MASKED", masked
        assert columns[masked]["inputFields"][0]["transformations"][0]["masking"] is True
    assert columns["email"]["inputFields"][0]["name"] == "shop.customers"
    drill_done = jobs["drill.shop"][1]
    assert {o["name"] for o in drill_done["outputs"]} == {"shop.customers", "shop.orders"}
    assert drill_done["run"]["facets"]["affidavit_check"]["ok"] is True

    # the graph from the source dataset to the destination
    graph = json.loads(cli("lineage", "show", "shop/shop.customers", "--json").out)
    kinds = {r["kind"] for r in graph["runs"]}
    assert kinds == {"backup", "verification", "drill", "export"}
    ids = {d["id"]: d for d in graph["datasets"]}
    src = f"mongodb://{host_port}|shop.customers"
    dst = f"file|{output}"
    assert ids[src]["kind"] == "source" and ids[dst]["kind"] == "destination"
    assert ids[dst]["digest"] == f"sha256:{exported['predicate']['output']['sha256']}"
    forward: dict[str, set[str]] = {}
    for e in graph["edges"]:
        forward.setdefault(e["from"], set()).add(e["to"])
    reach, todo = {src}, [src]
    while todo:
        for n in forward.get(todo.pop(), ()):
            if n not in reach:
                reach.add(n)
                todo.append(n)
    assert dst in reach
    by_export = json.loads(cli("lineage", "show", exported["predicate"]["export_id"], "--json").out)
    assert {r["kind"] for r in by_export["runs"]} == {"backup", "export"}
    by_backup = cli("lineage", "show", s.backup_id)
    assert by_backup.code == 0 and "export:" in by_backup.out
    dot = cli("lineage", "show", s.backup_id, "--dot")
    assert dot.code == 0 and dot.out.startswith("digraph lineage {")

    # bad input: exit 2, one line and a hint, no traceback
    for args in (("show", "bk-nope"), ("show", "nosuch.collection")):
        r = cli("lineage", *args)
        assert r.code == 2 and "no lineage for" in r.err and "Traceback" not in r.err

    # verify: every edge, and the events exported earlier
    file = tmp_path / "events.jsonl"
    assert cli("lineage", "export", "--out", str(file)).code == 0
    assert cli("lineage", "export", "--out", str(file)).code == 2  # never overwritten
    checked = cli("lineage", "verify", "--events", str(file), "--json")
    assert checked.code == 0, checked.out
    report = json.loads(checked.out)
    assert report["ok"] and report["findings"] == []
    assert report["artifacts_checked"] >= 2 and report["outputs_checked"] == 1
    assert report["events_checked"] == len(events)

    # emit: a real HTTP server receives exactly the events, once
    url, handler = endpoint
    sent = cli("lineage", "emit", "--url", url, "--json")
    assert sent.code == 0, sent.err
    assert handler.received == events
    assert json.loads(sent.out)["sent"] == len(events)
    again = cli("lineage", "emit", "--url", url, "--json")
    assert json.loads(again.out)["sent"] == 0 and handler.received == events
    # new ledger events go out next time, and only they
    assert cli("verify", s.backup_id, "--json").code == 0
    third = cli("lineage", "emit", "--url", url, "--json")
    assert json.loads(third.out)["sent"] == 2
    assert [e["eventType"] for e in handler.received[len(events) :]] == ["START", "COMPLETE"]

    # an endpoint that is down: exit 3, nothing marked sent for it
    state = home / "lineage-emitted.json"
    before = state.read_bytes()
    down = f"http://127.0.0.1:{_closed_port()}/api/v1/lineage"
    r = cli("lineage", "emit", "--url", down)
    assert r.code == 3 and "did not take" in r.err and "Traceback" not in r.err
    assert state.read_bytes() == before
    # an endpoint that answers 500 for everything: exit 3 too
    handler.status = 500
    r = cli("lineage", "emit", "--url", url, "--since", "-1")
    assert r.code == 3 and "500" in r.err
    assert state.read_bytes() == before
    # bad input
    assert cli("lineage", "emit").code == 2  # no endpoint set
    assert cli("lineage", "emit", "--url", "ftp://x/y").code == 2


def test_lineage_emit_from_setting(
    cli: Any, home: Path, tmp_path: Path, mongo: str, endpoint: tuple[str, Any]
) -> None:
    """``openlineage_url`` in affidavit.toml is the default endpoint; a restore drill and a
    moved vault still verify."""
    url, handler = endpoint
    config = home / "affidavit.toml"
    config.write_text(config.read_text() + f'\nopenlineage_url = "{url}"\n')
    add = ("source", "add", "shop", "--engine", "mongodb", "--uri", mongo)
    assert cli(*add, "--classification", "internal").code == 0
    assert cli("vault", "add", "v1", "--url", f"file://{tmp_path / 'vault'}").code == 0
    backup_id = json.loads(cli("backup", "run", "shop", "--json").out)["backup_id"]
    assert cli("drill", "run", backup_id, "--json").code == 0
    r = cli("lineage", "emit", "--json")
    assert r.code == 0, r.err
    assert [e["job"]["name"] for e in handler.received] == ["backup.shop"] * 2 + ["drill.shop"] * 2
    assert cli("lineage", "verify").code == 0
    # the vault moves to another folder (same bytes): the lineage still verifies
    moved = tmp_path / "vault-moved"
    os.rename(tmp_path / "vault", moved)
    with sqlite3.connect(home / "catalog.sqlite") as db:
        db.execute("UPDATE vaults SET url = ? WHERE name = 'v1'", (f"file://{moved}",))
    r = cli("lineage", "verify", "--json")
    assert r.code == 0, r.out
    # ... and a vault that lost its files does not
    os.rename(moved, tmp_path / "elsewhere")
    r = cli("lineage", "verify", "--json")
    assert r.code == 1
    assert {f["code"] for f in json.loads(r.out)["findings"]} <= {
        "artifact-missing",
        "vault-unreadable",
    }


def test_lineage_verify_catches_tampering(cli: Any, home: Path, tmp_path: Path, mongo: str) -> None:
    s = prepare(cli, home, tmp_path, mongo)
    exported = run_export(cli)
    file = tmp_path / "events.jsonl"
    assert cli("lineage", "export", "--out", str(file)).code == 0
    assert cli("lineage", "verify").code == 0

    # an artifact changed in the vault
    vault = tmp_path / "vault"
    data = sorted(p for p in vault.rglob("*.age") if p.is_file())[0]
    original = data.read_bytes()
    os.chmod(data, 0o600)
    data.write_bytes(original[:-1] + bytes([original[-1] ^ 1]))
    r = cli("lineage", "verify", "--json")
    assert r.code == 1
    found = json.loads(r.out)["findings"]
    assert [f["code"] for f in found] == ["artifact-changed"]
    assert found[0]["subject"].endswith(data.name)
    human = cli("lineage", "verify")
    assert human.code == 1 and "artifact-changed" in human.out and "FAILED" in human.out
    # a verification of the changed backup fails: its FAIL event is valid OpenLineage too
    assert cli("verify", s.backup_id, "--json").code == 1
    failed = [e for e in lines(cli) if e["job"]["name"] == "verify.shop"]
    assert [e["eventType"] for e in failed] == ["START", "FAIL"]
    assert schema_problems(failed[1]) == []
    assert failed[1]["run"]["facets"]["errorMessage"]["message"].startswith("findings: ")
    assert failed[1]["run"]["facets"]["affidavit_check"]["ok"] is False
    data.write_bytes(original)
    assert cli("lineage", "verify").code == 0

    # the export's output changed at the destination
    output = Path(exported["output"])
    kept = output.read_bytes()
    output.write_bytes(kept + b"x")
    r = cli("lineage", "verify", "--json")
    assert r.code == 1
    assert [f["code"] for f in json.loads(r.out)["findings"]] == ["output-changed"]
    output.write_bytes(kept)

    # a forged event in a file of exported events
    events = [json.loads(x) for x in file.read_text().splitlines()]
    done = next(
        e
        for e in events
        if e["eventType"] == "COMPLETE" and e["job"]["name"] == "export.customers-to-acme"
    )
    done["outputs"][0]["facets"]["columnLineage"]["fields"]["email"]["transformationType"] = (
        "IDENTITY"
    )
    forged = tmp_path / "forged.jsonl"
    hostile = {
        "eventType": "START",
        "run": {"runId": [], "facets": {"affidavit_ledger": {"seq": [1]}}},
    }
    forged.write_text(
        "\n".join(json.dumps(e) for e in events) + '\n{"x": 1}\n' + json.dumps(hostile) + "\n"
    )
    r = cli("lineage", "verify", "--events", str(forged), "--json")
    assert r.code == 1
    assert sorted(f["code"] for f in json.loads(r.out)["findings"]) == [
        "event-differs",
        "event-malformed",
        "event-malformed",
    ]

    # a catalog manifest that is not the signed one
    with sqlite3.connect(home / "catalog.sqlite") as db:
        db.execute(
            "UPDATE backups SET manifest = CAST(? AS BLOB) WHERE id = ?", (b"{}", s.backup_id)
        )
    r = cli("lineage", "verify", "--json")
    assert r.code == 1
    assert "manifest-mismatch" in {f["code"] for f in json.loads(r.out)["findings"]}

    # a ledger entry edited behind affidavit's back
    with sqlite3.connect(home / "catalog.sqlite") as db:
        seq, entry = db.execute(
            "SELECT seq, entry FROM ledger_entries WHERE action = 'export.completed'"
        ).fetchone()
        edited = bytes(entry).replace(b'"transform":"mask"', b'"transform":"keep"')
        assert edited != bytes(entry)
        db.execute("UPDATE ledger_entries SET entry = ? WHERE seq = ?", (edited, seq))
    r = cli("lineage", "verify", "--json")
    assert r.code == 1
    codes = {f["code"] for f in json.loads(r.out)["findings"]}
    assert "ledger-does-not-verify" in codes


def test_lineage_empty_home_fails_closed(cli: Any) -> None:
    r = cli("lineage", "verify", "--json")
    assert r.code == 1 and json.loads(r.out)["edges"] == 0
    r = cli("lineage", "export")
    assert r.code == 0 and r.out == ""
    r = cli("lineage", "show", "--json", "--dot", "x")
    assert r.code == 2
