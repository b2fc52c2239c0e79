"""Policy as code through the CLI against real servers (issue 7): two-person approval, the
policy check with persistent findings and their trail, exceptions, baselines and drift."""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis

from affidavit.constants import EngineName
from affidavit.models.uri import ConnectionUri
from affidavit.scratch.redis_server import RedisScratch
from affidavit.scratch.secantus_server import SecantusScratch
from affidavit.services.backends import engine_for_uri

pytestmark = pytest.mark.e2e

POLICY = (Path(__file__).resolve().parents[1] / "unit" / "policy" / "policy.toml").read_text(
    encoding="utf-8"
)


@pytest.fixture(scope="module")
def servers(mongo_scratch_class: type[SecantusScratch]) -> Iterator[dict[str, str]]:
    """A seeded MongoDB and Redis of this module's own (one test changes Redis' config)."""
    with mongo_scratch_class() as mongo, RedisScratch(replica_sync_delay=0) as cache:
        for engine, uri in ((EngineName.MONGODB, mongo.uri), (EngineName.REDIS, cache.uri)):
            with engine_for_uri(engine, ConnectionUri.parse(engine, uri), password=None,
                                timeout=5) as db:  # fmt: skip
                db.seed_sample(seed=7, scale=10)
        yield {"mongo": mongo.uri, "redis": cache.uri}


def _ledger_size(home: Path) -> int:
    with sqlite3.connect(home / "catalog.sqlite") as db:
        return int(db.execute("SELECT count(*) FROM ledger_entries").fetchone()[0])


def _rows(home: Path, table: str) -> int:
    with sqlite3.connect(home / "catalog.sqlite") as db:
        return int(db.execute(f"SELECT count(*) FROM {table}").fetchone()[0])


def _ok(result: Any) -> Any:
    assert result.code == 0, result.err + result.out
    return result


def _check(cli: Any, *args: str) -> tuple[int, dict[str, Any]]:
    r = cli("policy", "check", "--json", *args)
    assert r.out, r.err
    return r.code, json.loads(r.out)


def _failing(out: dict[str, Any]) -> set[tuple[str, str]]:
    return {(r["control"], r["subject"]) for r in out["results"] if r["status"] == "fail"}


def _setup(cli: Any, servers: dict[str, str], tmp_path: Path) -> dict[str, str]:
    _ok(cli("source", "add", "orders", "--engine", "mongodb", "--uri", servers["mongo"],
            "--classification", "internal", "--region", "eu-west-1"))  # fmt: skip
    _ok(cli("source", "add", "cache", "--engine", "redis", "--uri", servers["redis"],
            "--classification", "internal", "--region", "eu-west-1"))  # fmt: skip
    _ok(cli("vault", "add", "v1", "--url", f"file://{tmp_path / 'vault'}",
            "--region", "eu-central-1"))  # fmt: skip
    _ok(cli("inventory"))
    ids = {}
    for source in ("orders", "cache"):
        ids[source] = json.loads(_ok(cli("backup", "run", source, "--json")).out)["backup_id"]
        _ok(cli("verify", ids[source], "--json"))
    return ids


def test_policy_takes_effect_only_with_a_second_person(
    cli: Any, home: Path, tmp_path: Path
) -> None:
    policy = tmp_path / "policy.toml"
    policy.write_text(POLICY, encoding="utf-8")
    r = _ok(cli("--actor", "alice", "policy", "propose", str(policy), "--json"))
    version = json.loads(r.out)["version"]
    assert version == 1
    # the proposer cannot approve, and the refusal changes nothing
    before = _ledger_size(home)
    r = cli("--actor", "alice", "policy", "approve", "1")
    assert r.code == 2 and "cannot also approve" in r.err and "Traceback" not in r.err
    assert _ledger_size(home) == before
    # proposing the same text twice is refused
    assert cli("--actor", "alice", "policy", "propose", str(policy)).code == 2
    r = _ok(cli("--actor", "bob", "policy", "approve", "1", "--json"))
    approved = json.loads(r.out)
    assert approved["approved_by"] == "bob" and approved["proposed_by"] == "alice"
    assert _ledger_size(home) == before + 1
    assert cli("--actor", "carol", "policy", "approve", "1").code == 2  # already approved
    r = _ok(cli("policy", "list", "--json"))
    assert [v["version"] for v in json.loads(r.out)["versions"]] == [1]
    assert _ok(cli("policy", "show")).out.strip() == POLICY.strip()
    events = json.loads(_ok(cli("ledger", "show", "--json")).out)
    actions = [e["action"] for e in (events["entries"] if isinstance(events, dict) else events)]
    assert actions[-2:] == ["policy.proposed", "policy.approved"]


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("[policy\n", "not valid TOML"),
        (POLICY.replace("rpo_hours = 24", "rpo_hours = 0"), "defaults.rpo_hours"),
        (POLICY.replace('"drill.rto"', '"drill.nope"'), "owners.drill.nope: unknown control"),
        ("\udcff", "not UTF-8"),
    ],
)
def test_a_bad_policy_file_is_refused_and_nothing_is_recorded(
    cli: Any, home: Path, tmp_path: Path, content: str, expected: str
) -> None:
    path = tmp_path / "bad.toml"
    path.write_bytes(content.encode("utf-8", errors="surrogateescape"))
    before = (_ledger_size(home), _rows(home, "policy_versions"))
    for command in ("validate", "propose"):
        r = cli("policy", command, str(path))
        assert r.code == 2, r.out
        assert expected in r.err and "Traceback" not in r.err
        assert len(r.err.strip().splitlines()) <= 2  # one line + hint
    assert (_ledger_size(home), _rows(home, "policy_versions")) == before
    assert cli("policy", "propose", str(tmp_path / "missing.toml")).code == 2


def test_check_findings_trail_exceptions_baseline_and_drift(
    cli: Any, home: Path, servers: dict[str, str], tmp_path: Path
) -> None:
    ids = _setup(cli, servers, tmp_path)
    # no policy yet: the check fails closed
    code, out = _check(cli)
    assert code == 1 and ("policy.approved", "policy") in _failing(out)
    assert any(r["status"] == "not-evaluated" for r in out["results"])

    policy = tmp_path / "policy.toml"
    policy.write_text(POLICY, encoding="utf-8")
    _ok(cli("--actor", "alice", "policy", "propose", str(policy)))
    _ok(cli("--actor", "bob", "policy", "approve", "1"))
    code, out = _check(cli)
    assert code == 1
    failing = _failing(out)
    assert ("config.baseline", "baseline") in failing
    assert ("ledger.checkpoint_published", "ledger") in failing
    assert ("dataset.classified", "dataset:orders/shop.orders") in failing
    assert ("policy.approved", "policy:v1") not in failing
    assert ("backup.encrypted", f"backup:{ids['orders']}") not in failing
    # every failure has a finding (some opened by the first check), not just the first
    assert len(out["findings"]) == len(failing) >= 5
    assert ("policy.approved", "policy") not in {
        (f["control"], f["subject"]) for f in out["findings"]
    }
    findings = {(f["control"], f["subject"]): f for f in out["findings"]}
    baseline_finding = findings[("config.baseline", "baseline")]
    assert baseline_finding["owner"] == "platform@example.com"
    assert baseline_finding["severity"] == "high"

    # the same failures again: the findings are refreshed, not duplicated
    code, again = _check(cli)
    assert again["opened"] == [] and len(again["findings"]) == len(failing)

    # acknowledge one, with a note; the trail records who and why
    fid = baseline_finding["id"]
    _ok(cli("--actor", "carol", "finding", "ack", fid, "--note", "baseline review booked"))
    assert cli("finding", "ack", fid, "--note", "twice").code == 2
    assert cli("finding", "ack", fid, "--note", "   ").code == 2

    # fix two causes: publish a checkpoint, approve the baseline; the next check resolves
    _ok(cli("ledger", "checkpoint", "--publish", str(tmp_path / "witness")))
    _ok(cli("--actor", "dave", "baseline", "approve", "--note", "as deployed"))
    code, out = _check(cli)
    assert fid in out["resolved"]
    assert ("config.baseline", "baseline") not in _failing(out)
    assert ("ledger.checkpoint_published", "ledger") not in _failing(out)
    r = _ok(cli("finding", "show", fid, "--json"))
    trail = json.loads(r.out)["trail"]
    assert [s["status"] for s in trail] == ["open", "acknowledged", "resolved"]
    assert [s["actor"] for s in trail[:2]] == ["tester@example.com", "carol"]
    assert all(isinstance(s["seq"], int) for s in trail)
    resolved_list = json.loads(_ok(cli("finding", "list", "--json")).out)["findings"]
    assert fid not in {f["id"] for f in resolved_list}
    everything = json.loads(_ok(cli("finding", "list", "--all", "--json")).out)["findings"]
    assert fid in {f["id"] for f in everything}

    # an exception needs a second person and then excuses the failure
    expires = (datetime.now(UTC) + timedelta(days=30)).strftime("%Y-%m-%d")
    r = _ok(cli("--actor", "alice", "exception", "add", "dataset.classified", "*",
                "--reason", "classification review in Q1", "--expires", expires, "--json"))  # fmt: skip
    xid = json.loads(r.out)["id"]
    assert cli("--actor", "alice", "exception", "approve", xid).code == 2
    assert cli("exception", "add", "no.such", "*", "--reason", "x", "--expires", expires).code == 2
    assert cli("exception", "add", "dataset.classified", "*", "--reason", "x",
               "--expires", "2001-01-01").code == 2  # fmt: skip
    _ok(cli("--actor", "bob", "exception", "approve", xid))
    # local mode enforces no approval: access.segregation_of_duties reports the policy and
    # exception approvals as not authenticated until the organisation accepts that risk
    code, out = _check(cli)
    local = [r for r in out["results"] if r["control"] == "access.segregation_of_duties"]
    assert local and all("not authenticated (local mode)" in r["message"] for r in local)
    r = _ok(cli("--actor", "alice", "exception", "add", "access.segregation_of_duties", "*",
                "--reason", "one host in local mode", "--expires", expires, "--json"))  # fmt: skip
    _ok(cli("--actor", "bob", "exception", "approve", json.loads(r.out)["id"]))
    code, out = _check(cli)
    statuses = {(r["control"], r["subject"]): r["status"] for r in out["results"]}
    assert statuses[("dataset.classified", "dataset:orders/shop.orders")] == "excepted"

    # drift: Redis' persistence changes behind everyone's back
    client = redis.Redis.from_url(servers["redis"])
    client.config_set("appendonly", "yes")
    try:
        code, out = _check(cli)
    finally:
        client.config_set("appendonly", "no")
    drift = next(
        r for r in out["results"]
        if r["control"] == "config.baseline" and r["subject"] == "source:cache"
    )  # fmt: skip
    assert drift["status"] == "fail" and "aof_enabled: False -> True" in drift["message"]
    assert code == 1

    # drift undone: the human form shows every control passing or excepted
    r = cli("policy", "check", "--all")
    assert r.code == 0 and "All controls pass" in r.out and "excepted" in r.out
    assert _ok(cli("ledger", "verify", "--json"))


def test_baseline_refuses_when_a_source_is_unreachable(
    cli: Any, home: Path, tmp_path: Path
) -> None:
    with RedisScratch() as gone:
        uri = gone.uri
    _ok(
        cli(
            "source", "add", "dead", "--engine", "redis", "--uri", uri, "--classification", "public"
        )
    )
    before = _ledger_size(home)
    r = cli("--timeout", "1", "baseline", "approve", "--note", "x")
    assert r.code == 3 and "cannot read" in r.err
    assert _ledger_size(home) == before and _rows(home, "baselines") == 0


def test_approvals_forged_in_the_catalog_count_for_nothing(
    cli: Any, home: Path, servers: dict[str, str], tmp_path: Path
) -> None:
    """Someone who can write the catalog but not the ledger cannot approve an exception or a
    policy by editing rows: approvals are what the ledger records."""
    _setup(cli, servers, tmp_path)
    policy = tmp_path / "policy.toml"
    policy.write_text(POLICY, encoding="utf-8")
    _ok(cli("--actor", "alice", "policy", "propose", str(policy)))
    _ok(cli("--actor", "bob", "policy", "approve", "1"))
    expires = (datetime.now(UTC) + timedelta(days=30)).strftime("%Y-%m-%d")
    r = _ok(cli("--actor", "mallory", "exception", "add", "dataset.classified", "*",
                "--reason", "trust me", "--expires", expires, "--json"))  # fmt: skip
    xid = json.loads(r.out)["id"]
    with sqlite3.connect(home / "catalog.sqlite") as db:
        db.execute(
            "update policy_exceptions set status='approved', approved_by='bob', "
            "approved_at='2026-11-28 11:00:00' where id=?",
            (xid,),
        )
    code, out = _check(cli, "--offline")
    statuses = {(r["control"], r["subject"]): r["status"] for r in out["results"]}
    assert statuses[("dataset.classified", "dataset:orders/shop.orders")] == "fail"
    # an approval typed into the policy row without its ledger event
    policy.write_text(POLICY.replace("rpo_hours = 24", "rpo_hours = 48"), encoding="utf-8")
    _ok(cli("--actor", "mallory", "policy", "propose", str(policy)))
    with sqlite3.connect(home / "catalog.sqlite") as db:
        db.execute(
            "update policy_versions set approved_by='bob', approved_at='2026-11-28 11:00:00' "
            "where version=2"
        )
    # the check runs under version 1, the newest the ledger records approved, and names the row
    code, out = _check(cli, "--offline")
    assert code == 1 and out["policy_version"] == 1
    assert ("ledger.integrity", "policy:v2") in _failing(out)
    assert ("policy.approved", "policy:v1") not in _failing(out)
    rpo = [r for r in out["results"] if r["control"] == "backup.rpo"]
    assert rpo and all(r["status"] != "not-evaluated" for r in rpo)
    # separation of duties ignores case and spacing in names
    r = _ok(cli("--actor", "mallory", "exception", "add", "backup.rpo", "*",
                "--reason", "again", "--expires", expires, "--json"))  # fmt: skip
    other = json.loads(r.out)["id"]
    r = cli("--actor", " MALLORY ", "exception", "approve", other)
    assert r.code == 2 and "cannot also approve" in r.err


def test_hostile_text_and_input_never_crash(cli: Any, home: Path, tmp_path: Path) -> None:
    # markup in names and notes is shown literally, never parsed (it used to exit 4)
    policy = tmp_path / "policy.toml"
    policy.write_text(POLICY.replace('name = "Example policy"', 'name = "[/x] [red]ok"'))
    r = cli("policy", "validate", str(policy))
    assert r.code == 0 and "[/x] [red]ok" in r.out
    expires = (datetime.now(UTC) + timedelta(days=3)).strftime("%Y-%m-%d")
    r = cli("--actor", "[/evil]", "exception", "add", "backup.rpo", "*",
            "--reason", "[/x] because", "--expires", expires)  # fmt: skip
    assert r.code == 0, r.err
    r = cli("exception", "list")
    assert r.code == 0 and "[/evil]" in r.out and "[/x] because" in r.out
    # deeply nested TOML, a FIFO, a policy version beyond any integer, integrity exceptions
    policy.write_text("x = " + "[" * 5000 + "]" * 5000 + "\n")
    r = cli("policy", "validate", str(policy))
    assert r.code == 2 and "Traceback" not in r.err
    fifo = tmp_path / "fifo.toml"
    os.mkfifo(fifo)
    r = cli("policy", "validate", str(fifo))
    assert r.code == 2 and "not a regular file" in r.err
    assert cli("policy", "approve", "99999999999999999999").code == 2
    assert cli("policy", "show", "0").code == 2
    r = cli("exception", "add", "ledger.integrity", "*", "--reason", "x", "--expires", expires)
    assert r.code == 2 and "cannot be excepted" in r.err
