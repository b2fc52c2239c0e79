"""Governance records edited behind affidavit's back (attack pass M2, M3, M4, M8, M9, B6).

The attacker can write the catalog database (SQLite) and the vault, but not ``HOME/keys``:
they edit the text of the policy in force, clear an approval to roll the policy back, make
the approved baseline match a drifted server, mark a completed backup ``running`` (or type in
a running one) so that the next command signs its abandonment, type in a fresh verification
so that the scheduler skips a due one, and store entries or a policy text that do not parse.
Each edit is caught: the ledger decides, the edited row is named under ``ledger.integrity``,
and nothing stops the check. Real servers, real commands; the edits are plain SQL.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
import rfc8785

from affidavit.config import load_settings
from affidavit.constants import EngineName
from affidavit.models.uri import ConnectionUri
from affidavit.scratch.redis_server import RedisScratch
from affidavit.services import leases
from affidavit.services.backends import engine_for_uri
from affidavit.services.context import open_app

pytestmark = pytest.mark.e2e

POLICY = (Path(__file__).resolve().parents[1] / "unit" / "policy" / "policy.toml").read_text(
    encoding="utf-8"
)
STRICT = POLICY.replace("immutability_required = false", "immutability_required = true")
assert STRICT != POLICY


@pytest.fixture
def cache() -> Iterator[RedisScratch]:
    """A seeded redis-server of this test's own (tests change its configuration)."""
    with RedisScratch(replica_sync_delay=0) as server:
        uri = ConnectionUri.parse(EngineName.REDIS, server.uri)
        with engine_for_uri(EngineName.REDIS, uri, password=None, timeout=5) as engine:
            engine.seed_sample(seed=5, scale=3)
        yield server


def _ok(result: Any) -> Any:
    assert result.code == 0, result.err + result.out
    return result


def _check(cli: Any, *args: str) -> tuple[int, dict[str, Any]]:
    r = cli("policy", "check", "--json", *args)
    assert r.out, r.err  # a result, never a stop (exit 2, 3 or 4 print no JSON)
    assert "Traceback" not in r.err
    return r.code, json.loads(r.out)


def _results(out: dict[str, Any], control: str) -> dict[str, dict[str, Any]]:
    return {r["subject"]: r for r in out["results"] if r["control"] == control}


def _failing(out: dict[str, Any]) -> set[tuple[str, str]]:
    return {(r["control"], r["subject"]) for r in out["results"] if r["status"] == "fail"}


def _integrity(out: dict[str, Any], subject: str) -> str:
    """The ``ledger.integrity`` failure naming ``subject``, citing a ledger event."""
    found = _results(out, "ledger.integrity").get(subject)
    assert found is not None and found["status"] == "fail", _results(out, "ledger.integrity")
    assert subject in found["evidence"]
    assert any(e.startswith("ledger:") for e in found["evidence"])
    return str(found["message"])


def _sql(home: Path, statement: str, *params: Any) -> None:
    with sqlite3.connect(home / "catalog.sqlite") as db:
        assert db.execute(statement, params).rowcount >= 1, statement


def _one(home: Path, query: str, *params: Any) -> Any:
    with sqlite3.connect(home / "catalog.sqlite") as db:
        return db.execute(query, params).fetchone()[0]


def _events(home: Path, action: str) -> list[dict[str, Any]]:
    with sqlite3.connect(home / "catalog.sqlite") as db:
        rows = db.execute("SELECT entry FROM ledger_entries WHERE action = ? ORDER BY seq",
                          (action,))  # fmt: skip
        return [json.loads(e) for (e,) in rows]


def _register(cli: Any, tmp_path: Path, server: RedisScratch) -> str:
    """A Redis source, a folder vault and one complete backup; returns its id."""
    _ok(cli("source", "add", "cache", "--engine", "redis", "--uri", server.uri,
            "--classification", "internal", "--region", "eu-west-1"))  # fmt: skip
    _ok(cli("vault", "add", "v1", "--url", f"file://{tmp_path / 'vault'}",
            "--region", "eu-central-1"))  # fmt: skip
    _ok(cli("inventory"))
    return str(json.loads(_ok(cli("backup", "run", "cache", "--json")).out)["backup_id"])


def _healthy_home(cli: Any, tmp_path: Path, server: RedisScratch) -> str:
    """A home whose policy check passes: a verified backup, every dataset classified, policy
    version 1 proposed by alice and approved by bob, a baseline, a published checkpoint."""
    backup_id = _register(cli, tmp_path, server)
    _ok(cli("verify", backup_id, "--json"))
    _, out = _check(cli, "--offline")
    for subject in _results(out, "dataset.classified"):
        _ok(cli("dataset", "classify", subject.removeprefix("dataset:"), "internal",
                "--reason", "cache data"))  # fmt: skip
    _propose_and_approve(cli, tmp_path, POLICY, 1)
    _accept_local_mode(cli)
    _ok(cli("--actor", "dave", "baseline", "approve", "--note", "as deployed"))
    _ok(cli("ledger", "checkpoint", "--publish", str(tmp_path / "witness")))
    code, out = _check(cli)
    assert code == 0, _failing(out)
    return backup_id


def _accept_local_mode(cli: Any) -> None:
    """These homes act in local mode, which enforces no approval: the policy approvals are
    reported by access.segregation_of_duties as not authenticated, and the organisation
    accepts that risk with an exception (issue 15)."""
    expires = (datetime.now(UTC) + timedelta(days=30)).strftime("%Y-%m-%d")
    added = _ok(cli("--actor", "alice", "exception", "add", "access.segregation_of_duties", "*",
                    "--reason", "one host in local mode: no approval is enforced",
                    "--expires", expires, "--json"))  # fmt: skip
    _ok(cli("--actor", "bob", "exception", "approve", json.loads(added.out)["id"]))


def _propose_and_approve(cli: Any, tmp_path: Path, text: str, version: int) -> None:
    path = tmp_path / f"policy-v{version}.toml"
    path.write_text(text, encoding="utf-8")
    _ok(cli("--actor", "alice", "policy", "propose", str(path)))
    _ok(cli("--actor", "bob", "policy", "approve", str(version)))


def _stricter_v2(cli: Any, tmp_path: Path, backup_id: str) -> None:
    """Version 2 (immutability required) approved by two people: the folder vault fails it."""
    _propose_and_approve(cli, tmp_path, STRICT, 2)
    _ok(cli("--actor", "dave", "baseline", "approve", "--note", "policy v2"))
    code, out = _check(cli)
    assert code == 1 and out["policy_version"] == 2
    assert _failing(out) == {("backup.immutable", f"backup:{backup_id}")}


# -- M2: the text of the policy in force edited ------------------------------------------------


def test_m2_the_text_of_the_policy_in_force_edited_is_not_applied(
    cli: Any, home: Path, tmp_path: Path, cache: RedisScratch
) -> None:
    backup_id = _healthy_home(cli, tmp_path, cache)
    _stricter_v2(cli, tmp_path, backup_id)

    # v2's text replaced by v1's: the sha256 column still matches the events, the text not
    _sql(home, "UPDATE policy_versions SET text = (SELECT text FROM policy_versions "
         "WHERE version = 1) WHERE version = 2")  # fmt: skip
    code, out = _check(cli)
    assert code == 1 and out["policy_version"] == 2
    approved = _results(out, "policy.approved")["policy:v2"]
    assert approved["status"] == "fail"
    assert "cannot be applied: the catalog's text of version 2 was altered" in approved["message"]
    assert "the text was altered" in _integrity(out, "policy:v2")
    # the edited text is not applied: nothing that needs the policy passes under it
    immutable = _results(out, "backup.immutable")
    assert immutable and all(r["status"] == "not-evaluated" for r in immutable.values())
    assert ("ledger.integrity", "ledger") not in _failing(out)  # the ledger itself verifies

    # the sha256 column made to match the edited text too: still the events decide
    _sql(home, "UPDATE policy_versions SET sha256 = (SELECT sha256 FROM policy_versions "
         "WHERE version = 1) WHERE version = 2")  # fmt: skip
    code, out = _check(cli)
    assert code == 1 and ("policy.approved", "policy:v2") in _failing(out)
    message = _integrity(out, "policy:v2")
    assert "the SHA-256 is" in message and "the text was altered" in message


# -- M3: policy rollback by clearing (or adding) an approval -----------------------------------


def test_m3_a_cleared_or_added_approval_does_not_change_the_policy_in_force(
    cli: Any, home: Path, tmp_path: Path, cache: RedisScratch
) -> None:
    backup_id = _healthy_home(cli, tmp_path, cache)
    _stricter_v2(cli, tmp_path, backup_id)

    # v2's approval cleared: the catalog's newest approved row is v1 again
    _sql(home, "UPDATE policy_versions SET approved_at = NULL, approved_by = NULL, "
         "approval_seq = NULL WHERE version = 2")  # fmt: skip
    code, out = _check(cli)
    assert code == 1 and out["policy_version"] == 2  # the ledger's version, not the rows'
    assert _results(out, "policy.approved")["policy:v2"]["status"] == "pass"
    assert ("backup.immutable", f"backup:{backup_id}") in _failing(out)  # v2 still applies
    assert "the approval was cleared in the catalog" in _integrity(out, "policy:v2")

    # a lenient v3 proposed, and approved in the catalog only
    path = tmp_path / "policy-v3.toml"
    path.write_text(POLICY.replace("rpo_hours = 24", "rpo_hours = 48"), encoding="utf-8")
    _ok(cli("--actor", "alice", "policy", "propose", str(path)))
    _sql(home, "UPDATE policy_versions SET approved_at = proposed_at, approved_by = 'bob', "
         "approval_seq = proposal_seq WHERE version = 3")  # fmt: skip
    code, out = _check(cli)
    assert code == 1 and out["policy_version"] == 2
    assert ("backup.immutable", f"backup:{backup_id}") in _failing(out)
    assert "no policy.approved of it by a second person" in _integrity(out, "policy:v3")

    # and v2's text altered as well: the version in force is not applied, and it says why
    _sql(home, "UPDATE policy_versions SET text = (SELECT text FROM policy_versions "
         "WHERE version = 1) WHERE version = 2")  # fmt: skip
    code, out = _check(cli)
    assert code == 1 and out["policy_version"] == 2
    approved = _results(out, "policy.approved")["policy:v2"]
    assert approved["status"] == "fail" and "was altered" in approved["message"]
    message = _integrity(out, "policy:v2")
    assert "the approval was cleared" in message and "the text was altered" in message
    immutable = _results(out, "backup.immutable")
    assert immutable and all(r["status"] == "not-evaluated" for r in immutable.values())


# -- M4: the baseline edited to match a drifted server -----------------------------------------


def test_m4_a_baseline_edited_to_match_drift_is_caught(
    cli: Any, home: Path, tmp_path: Path, cache: RedisScratch
) -> None:
    _healthy_home(cli, tmp_path, cache)
    client = redis.Redis(host="127.0.0.1", port=cache.port)
    try:
        client.config_set("appendonly", "yes")
    finally:
        client.close()
    code, out = _check(cli)
    drift = _results(out, "config.baseline")["source:cache"]
    assert code == 1 and drift["status"] == "fail" and "aof_enabled" in drift["message"]

    # the baseline's content (and its sha256 column) edited to say what the server now says
    baseline_id, raw = 1, _one(home, "SELECT content FROM baselines WHERE id = 1")
    content = json.loads(raw)
    content["sources"]["cache"]["settings"]["aof_enabled"] = True
    forged = rfc8785.dumps(content)
    _sql(home, "UPDATE baselines SET content = ? WHERE id = ?", forged, baseline_id)
    code, out = _check(cli)
    assert code == 1
    results = _results(out, "config.baseline")
    assert results["baseline"]["status"] == "fail"
    assert "is not the configuration baseline.approved" in results["baseline"]["message"]
    assert f"baseline:{baseline_id}" in results["baseline"]["evidence"]
    assert all(r["status"] != "pass" for r in results.values())  # nothing compared with it
    assert "its content was altered" in _integrity(out, f"baseline:{baseline_id}")
    r = cli("baseline", "show")
    assert r.code == 1 and "is not the configuration baseline.approved" in r.err

    _sql(home, "UPDATE baselines SET sha256 = ? WHERE id = ?",
         hashlib.sha256(forged).hexdigest(), baseline_id)  # fmt: skip
    code, out = _check(cli)
    assert code == 1 and ("config.baseline", "baseline") in _failing(out)
    message = _integrity(out, f"baseline:{baseline_id}")
    assert "its content was altered" in message and "the SHA-256 is" in message

    # approving the drifted configuration is the legitimate way: it is recorded and passes
    _ok(cli("--actor", "dave", "baseline", "approve", "--note", "AOF on, by change CHG-7"))
    code, out = _check(cli)
    assert _results(out, "config.baseline")["source:cache"]["status"] == "pass"
    assert ("config.baseline", "baseline") not in _failing(out)
    assert ("ledger.integrity", f"baseline:{baseline_id}") in _failing(out)  # still on record


# -- M8: dead-run clean-up of rows the ledger does not vouch for ------------------------------


def _backup_in_a_process_of_its_own(home: Path) -> str:
    """``backup run`` as an operator runs it: its lease names a process that has exited."""
    done = subprocess.run(
        [sys.executable, "-m", "affidavit", "--home", str(home), "backup", "run", "cache",
         "--json"],
        capture_output=True, env=dict(os.environ), timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr.decode()
    return str(json.loads(done.stdout)["backup_id"])


def test_m8_rows_set_running_are_not_abandoned_unless_the_ledger_says_so(
    cli: Any, home: Path, tmp_path: Path, cache: RedisScratch
) -> None:
    _register(cli, tmp_path, cache)
    backup_id = _backup_in_a_process_of_its_own(home)
    # a complete backup marked running again; its lease's process is gone
    _sql(home, "UPDATE backups SET status = 'running', finished_at = NULL WHERE id = ?",
         backup_id)  # fmt: skip
    # and a backup never started, typed in with a copy of that dead lease
    _sql(home, "INSERT INTO backups (id, source, vault, kind, format, status, started_at, "
         "retain_until) SELECT 'bk-phantom', source, vault, kind, format, 'running', "
         "started_at, retain_until FROM backups WHERE id = ?", backup_id)  # fmt: skip
    _sql(home, "INSERT INTO backup_leases (backup_id, host, boot_id, pid_namespace, pid, "
         "process_start, started_at, heartbeat_at) SELECT 'bk-phantom', host, boot_id, "
         "pid_namespace, pid, process_start, started_at, heartbeat_at FROM backup_leases "
         "WHERE backup_id = ?", backup_id)  # fmt: skip
    size = _one(home, "SELECT count(*) FROM ledger_entries")

    listed = json.loads(_ok(cli("backup", "list", "--json")).out)["backups"]
    status = {b["backup_id"]: b["status"] for b in listed}
    assert status[backup_id] == "running" and status["bk-phantom"] == "running"
    assert _events(home, "backup.abandoned") == []  # nothing signed for either
    assert _one(home, "SELECT count(*) FROM ledger_entries") == size

    code, out = _check(cli, "--offline")
    assert code == 1
    assert ("the status is 'running' in the catalog but 'complete' in backup.completed"
            in _integrity(out, f"backup:{backup_id}"))  # fmt: skip
    phantom = _results(out, "ledger.integrity")["backup:bk-phantom"]
    assert phantom["status"] == "fail" and "no backup.started event" in phantom["message"]
    assert [r["status"] for r in _results(out, "backup.abandoned").values()] == ["not-applicable"]
    assert _events(home, "backup.abandoned") == []
    assert cli("ledger", "verify").code == 0


def test_m8_a_live_run_taken_for_dead_says_it_was_found_abandoned(
    cli: Any, home: Path, tmp_path: Path
) -> None:
    with RedisScratch(replica_sync_delay=60) as server:  # holds the run while .partial is open
        uri = ConnectionUri.parse(EngineName.REDIS, server.uri)
        with engine_for_uri(EngineName.REDIS, uri, password=None, timeout=5) as engine:
            engine.seed_sample(seed=5, scale=3)
        _ok(cli("source", "add", "cache", "--engine", "redis", "--uri", server.uri,
                "--classification", "internal"))  # fmt: skip
        _ok(cli("vault", "add", "v1", "--url", f"file://{tmp_path / 'vault'}"))
        proc = subprocess.Popen(
            [sys.executable, "-m", "affidavit", "--home", str(home), "backup", "run", "cache"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=dict(os.environ),
        )  # fmt: skip
        try:
            for _ in range(600):
                if list((tmp_path / "vault").rglob(".*.partial")):
                    break
                assert proc.poll() is None
                time.sleep(0.1)
            # another command takes the live run for dead (as it would a silent host)
            with open_app(load_settings(home=home)) as other:
                assert leases.reclaim_abandoned(other, probe=lambda _pid: None)
            client = redis.Redis(host="127.0.0.1", port=server.port)
            client.config_set("repl-diskless-sync-delay", 0)
            client.close()
            _, err = proc.communicate(timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
    assert proc.returncode != 0
    assert "recorded abandoned" in err.decode(), err.decode()


# -- M9: the scheduler reads the ledger, not the rows --------------------------------------------


def test_m9_a_forged_verification_row_does_not_remove_a_due_check(
    cli: Any, home: Path, tmp_path: Path, cache: RedisScratch
) -> None:
    backup_id = _register(cli, tmp_path, cache)

    def due() -> set[tuple[str, str]]:
        items = json.loads(cli("due", "--json").out)["items"]
        return {(i["kind"], i["backup_id"]) for i in items}

    assert due() == {("verify-full", backup_id), ("drill", backup_id)}
    # a fresh full verification and a fresh drill typed into the catalog
    _sql(home, "INSERT INTO verifications (id, backup_id, kind, started_at, finished_at, ok, "
         "findings) VALUES ('vf-forged', ?, 'full', datetime('now'), datetime('now'), 1, '[]')",
         backup_id)  # fmt: skip
    assert due() == {("verify-full", backup_id), ("drill", backup_id)}
    # the backup hidden as failed in the catalog is still scheduled
    _sql(home, "UPDATE backups SET status = 'failed' WHERE id = ?", backup_id)
    assert due() == {("verify-full", backup_id), ("drill", backup_id)}
    _sql(home, "UPDATE backups SET status = 'complete' WHERE id = ?", backup_id)
    _sql(home, "DELETE FROM verifications WHERE id = 'vf-forged'")
    # a real verification, recorded in the ledger, is what takes the check off the list
    _ok(cli("verify", backup_id, "--json"))
    assert due() == {("drill", backup_id)}


# -- B6: entries and texts that do not parse are findings, not a stop -------------------------


def _corrupt(home: Path, action: str, entry: bytes) -> int:
    seq = int(_one(home, "SELECT max(seq) FROM ledger_entries WHERE action = ?", action))
    _sql(home, "UPDATE ledger_entries SET entry = ? WHERE seq = ?", entry, seq)
    return seq


def test_b6_an_entry_that_is_not_json_is_a_finding(
    cli: Any, home: Path, tmp_path: Path, cache: RedisScratch
) -> None:
    _healthy_home(cli, tmp_path, cache)
    _corrupt(home, "policy.approved", b"not json")
    code, out = _check(cli, "--offline")
    assert code == 1
    assert ("ledger.integrity", "ledger") in _failing(out)
    assert ("policy.approved", "policy") in _failing(out)  # the approval cannot be read
    assert "no policy.approved of it" in _integrity(out, "policy:v1")


def test_b6_an_entry_nested_100000_deep_is_a_finding(
    cli: Any, home: Path, tmp_path: Path, cache: RedisScratch
) -> None:
    backup_id = _healthy_home(cli, tmp_path, cache)
    for action in ("backup.completed", "ledger.checkpoint_published", "baseline.approved"):
        _corrupt(home, action, b"[" * 100_000)
    code, out = _check(cli, "--offline")
    assert code == 1
    assert ("ledger.integrity", "ledger") in _failing(out)
    assert (
        "no baseline.approved event records it"
        in _results(out, "ledger.integrity")["baseline:1"]["message"]
    )
    assert ("ledger.integrity", f"backup:{backup_id}") in _failing(out)
    assert ("ledger.checkpoint_published", "ledger") in _failing(out)
    r = cli("backup", "list", "--json")
    assert r.code == 0 and "Traceback" not in r.err


def test_b6_a_policy_text_that_is_not_toml_is_a_finding(
    cli: Any, home: Path, tmp_path: Path, cache: RedisScratch
) -> None:
    _healthy_home(cli, tmp_path, cache)
    _sql(home, "UPDATE policy_versions SET text = 'not [toml' WHERE version = 1")
    code, out = _check(cli, "--offline")
    assert code == 1 and out["policy_version"] == 1
    approved = _results(out, "policy.approved")["policy:v1"]
    assert approved["status"] == "fail" and "was altered" in approved["message"]
    assert "the text was altered" in _integrity(out, "policy:v1")
    assert ("ledger.integrity", "ledger") not in _failing(out)
