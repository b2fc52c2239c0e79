"""Exports read from the live source and filtered by a query (issue 17): the manifest records
the source's URI (no credentials), the read's consistency point and the logical fingerprint of
what was read instead of a backup; the filter is applied by the server for a live source and
by affidavit's evaluator for a backup, with the same result; records left out by the filter
are counted; `export verify` holds at the destination; bad input is refused before anything
is recorded; an approved live run whose data changed since the approval delivers nothing.
Real SecantusDB, real redis-server, real age encryption."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pymongo import MongoClient
from tests.e2e.test_export_cli import (
    SPEC,
    _customers,
    events,
    ledger_size,
    prepare,
    run_export,
    verify,
)
from tests.e2e.test_export_preview import _people

from affidavit.errors import ApprovalPending, IntegrityError
from affidavit.models.export_filter import QueryFilter
from affidavit.scratch.redis_server import RedisScratch
from affidavit.scratch.secantus_server import SecantusScratch
from affidavit.services import gated, requests
from affidavit.services.context import App
from affidavit.services.exports.run import run_export as run_export_service

pytestmark = pytest.mark.e2e

INPUT = '[input]\nsource = "shop"\ndataset = "shop.customers"\n'
FILTER = 'filter = {{ country = {{ "$in" = ["FR", "DE"] }} }}\n'
LIVE_SPEC = SPEC.replace(INPUT, INPUT + 'from = "live"\n' + FILTER)
BACKUP_SPEC = SPEC.replace(INPUT, INPUT + FILTER)
FR_OR_DE = sum(1 for n in range(40) if n % 3 != 2)  # 27 of the 40 customers


def _mongo(cls: type[SecantusScratch]) -> Iterator[str]:
    with cls() as server:
        client: MongoClient[dict[str, Any]] = MongoClient(server.uri)
        client["shop"]["customers"].insert_many(_customers())
        client.close()
        yield server.uri


@pytest.fixture(scope="module")
def mongo(mongo_scratch_class: type[SecantusScratch]) -> Iterator[str]:
    yield from _mongo(mongo_scratch_class)


def test_a_live_filtered_export_records_its_read_and_verifies(
    cli: Any, home: Path, tmp_path: Path, mongo: str
) -> None:
    s = prepare(cli, home, tmp_path, mongo, spec=LIVE_SPEC)
    out = run_export(cli)
    assert out["ok"] is True
    predicate = out["predicate"]
    assert Path(out["output"]).name == "customers-to-acme-v1-live.jsonl.age"
    assert predicate["records"] == {
        "in": FR_OR_DE,
        "out": FR_OR_DE,
        "excluded": {"filter": 40 - FR_OR_DE},
        "fields_dropped": FR_OR_DE,
    }
    source = predicate["input"]
    assert source["from"] == "live"
    assert "backup_id" not in source
    assert source["uri"] == mongo and "@" not in source["uri"]
    assert source["dataset"] == "shop.customers"
    assert source["records"] == FR_OR_DE and source["records_in_dataset"] == 40
    assert (
        source["fingerprint"].startswith("afp1:logical:")
        and f":n{FR_OR_DE}:" in (source["fingerprint"])
    )
    assert source["consistency"]["mode"] in ("snapshot", "per-collection")
    assert source["read_at"]
    assert source["filter"] == {"country": {"$in": ["FR", "DE"]}}
    assert out["export"]["backup_id"] == "live"
    checked = verify(cli, s, Path(out["output"]), Path(out["manifest"]))
    assert checked.code == 0, checked.out
    assert json.loads(checked.out)["records"] == FR_OR_DE
    completed = events(home, "export.completed")[-1]["details"]
    assert completed["input"]["fingerprint"] == source["fingerprint"]
    assert completed["records"]["excluded"] == {"filter": 40 - FR_OR_DE}
    assert cli("ledger", "verify").code == 0


def test_the_filter_selects_the_same_records_from_a_backup_and_from_the_live_source(
    cli: Any, home: Path, tmp_path: Path, mongo: str
) -> None:
    s = prepare(cli, home, tmp_path, mongo, spec=BACKUP_SPEC)
    from_backup = run_export(cli)["predicate"]
    assert from_backup["records"] == {
        "in": 40,
        "out": FR_OR_DE,
        "excluded": {"filter": 40 - FR_OR_DE},
        "fields_dropped": FR_OR_DE,
    }
    assert from_backup["input"]["backup_id"] == s.backup_id
    assert from_backup["input"]["filter"] == {"country": {"$in": ["FR", "DE"]}}
    # the same spec read live (version 2): the same records leave, to the same recipient
    s.spec_file.write_text(LIVE_SPEC.format(dest=s.dest))
    assert cli("--actor", "olga", "export", "spec", "add", str(s.spec_file)).code == 0
    assert cli("--actor", "paul", "export", "spec", "approve", "customers-to-acme", "2").code == 0
    live = run_export(cli)["predicate"]
    assert live["input"]["from"] == "live"
    assert live["output"]["fingerprint"] == from_backup["output"]["fingerprint"]
    assert live["output"]["plaintext_sha256"] == from_backup["output"]["plaintext_sha256"]


def _refused_before_anything(r: Any, home: Path, before: int, words: str) -> None:
    assert r.code == 2, r.err + r.out
    assert words in r.err, r.err
    assert "Traceback" not in r.err
    assert ledger_size(home) == before


@pytest.mark.parametrize(
    "operator", ["$where", "$function", "$expr", "$accumulator", "$regex", "$nor"]
)
def test_a_filter_with_a_refused_operator_is_bad_input(
    cli: Any, home: Path, tmp_path: Path, operator: str
) -> None:
    assert (
        cli(
            "source",
            "add",
            "shop",
            "--engine",
            "mongodb",
            "--uri",
            "mongodb://h/",
            "--classification",
            "internal",
        ).code
        == 0
    )
    bad = (
        f'filter = {{{{ "{operator}" = ["x"] }}}}\n'
        if operator in ("$expr", "$nor")
        else f'filter = {{{{ email = {{{{ "{operator}" = "x" }}}} }}}}\n'
    )
    spec = tmp_path / "spec.toml"
    spec.write_text(SPEC.replace(INPUT, INPUT + bad).format(dest=tmp_path))
    before = ledger_size(home)
    r = cli("--actor", "olga", "export", "spec", "add", str(spec))
    _refused_before_anything(r, home, before, operator)


def test_a_live_dataset_that_does_not_exist_is_refused_before_anything_is_recorded(
    cli: Any, home: Path, tmp_path: Path, mongo: str
) -> None:
    s = prepare(cli, home, tmp_path, mongo, spec=LIVE_SPEC.replace("shop.customers", "shop.nope"))
    before = ledger_size(home)
    r = cli("export", "run", "customers-to-acme")
    _refused_before_anything(r, home, before, "no dataset shop.nope")
    assert list(s.dest.iterdir()) == []
    r = cli("export", "run", "customers-to-acme", "--backup", s.backup_id)
    _refused_before_anything(r, home, before, "--backup does not apply")


def test_a_query_filter_on_a_redis_source_is_refused_at_spec_add(
    cli: Any, home: Path, tmp_path: Path, redis_server: RedisScratch, mongo: str
) -> None:
    s = prepare(cli, home, tmp_path, mongo, spec=LIVE_SPEC)
    add = ("source", "add", "cache", "--engine", "redis", "--uri", redis_server.uri)
    assert cli(*add, "--classification", "internal").code == 0
    s.spec_file.write_text(LIVE_SPEC.replace('"shop"', '"cache"', 1).format(dest=s.dest))
    before = ledger_size(home)
    r = cli("--actor", "olga", "export", "spec", "add", str(s.spec_file))
    _refused_before_anything(r, home, before, "input.filter is a MongoDB query")
    assert list(s.dest.iterdir()) == []  # Redis inputs: tests/e2e/test_export_redis.py


def test_an_approved_live_run_whose_data_changed_delivers_nothing(
    app: App, cli: Any, home: Path, tmp_path: Path, mongo_scratch_class: type[SecantusScratch]
) -> None:
    for uri in _mongo(mongo_scratch_class):  # a server of this test's own: it is written to
        s = prepare(cli, home, tmp_path, uri, spec=LIVE_SPEC)
        people = _people(app, {})
        with app.acting_as(people["olga"]), pytest.raises(ApprovalPending) as pending:
            run_export_service(app, "customers-to-acme")
        request_id = pending.value.request["id"]
        counts = pending.value.request["params"]["preview"]["counts"]
        assert counts["in"] == FR_OR_DE and counts["excluded"] == {"filter": 40 - FR_OR_DE}
        assert pending.value.request["params"]["input"] == {"from": "live", "source": "shop"}
        assert list(s.dest.iterdir()) == []  # the dry pass delivered nothing
        requests.approve(app, people["paul"], request_id)
        client: MongoClient[dict[str, Any]] = MongoClient(uri)
        new = {**_customers()[0], "_id": 1000, "country": "FR"}
        client["shop"]["customers"].insert_one(new)  # the live data changes
        client.close()
        with pytest.raises(IntegrityError, match="the data changed since the approval"):
            gated.execute(app, people["olga"], request_id)
        assert [p for p in s.dest.iterdir() if not p.name.startswith(".")] == []
        assert list(s.dest.iterdir()) == []
        failed = events(home, "export.failed")
        assert len(failed) == 1 and "changed since the approval" in failed[0]["details"]["error"]
        assert events(home, "export.completed") == []


def test_a_live_record_the_approved_filter_does_not_match_fails_the_run(
    cli: Any, home: Path, tmp_path: Path, mongo: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server's answer is checked against the filter's documented semantics: a server
    that returns more than the filter describes (here: sent a broader query, as a collection
    with another collation would answer) fails the run, and nothing is delivered."""
    s = prepare(cli, home, tmp_path, mongo, spec=LIVE_SPEC)
    monkeypatch.setattr(QueryFilter, "to_mongo", lambda self: {})
    r = cli("export", "run", "customers-to-acme", "--json")
    assert r.code == 1, r.out + r.err
    assert "that the filter does not match" in r.err and "Traceback" not in r.err
    assert list(s.dest.iterdir()) == []
    failed = events(home, "export.failed")
    assert len(failed) == 1 and "filter does not match" in failed[0]["details"]["error"]
    assert events(home, "export.completed") == []


def test_a_filter_that_matches_nothing_blocks_on_the_contract_not_on_the_allow_list(
    cli: Any, home: Path, tmp_path: Path, mongo: str
) -> None:
    none = BACKUP_SPEC.replace('["FR", "DE"]', '["XX"]')
    s = prepare(cli, home, tmp_path, mongo, spec=none)
    r = cli("export", "run", "customers-to-acme", "--json")
    assert r.code == 1, r.out + r.err  # blocked: min_records = 1
    blocked = events(home, "export.blocked")[-1]["details"]
    assert blocked["records"]["excluded"] == {"filter": 40}
    assert [v["rule"] for v in blocked["contract"]["listed"]] == ["min_records"]
    assert list(s.dest.iterdir()) == []
