"""`policy check` against a catalog edited behind affidavit's back (issue 13): someone who can
write the catalog database but not the ledger flips a failed verification or drill to passed,
shortens a drill's restore time, hides a backup or deletes the row of a failed result. Each
control takes its facts from the ledger events that vouch for them, so the edit helps
nothing, and ``ledger.integrity`` names the edited row. An untampered catalog still passes.
Real servers, real commands; the edits are plain SQL on the SQLite catalog."""

from __future__ import annotations

import json
import os
import sqlite3
import stat
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from affidavit.constants import EngineName
from affidavit.models.uri import ConnectionUri
from affidavit.scratch.secantus_server import SecantusScratch
from affidavit.services.backends import engine_for_uri

pytestmark = pytest.mark.e2e

POLICY = (Path(__file__).resolve().parents[1] / "unit" / "policy" / "policy.toml").read_text(
    encoding="utf-8"
)


@pytest.fixture
def mongo(mongo_scratch_class: type[SecantusScratch]) -> Iterator[str]:
    """A seeded MongoDB of this test's own (some tests write to it)."""
    with mongo_scratch_class() as server:
        parsed = ConnectionUri.parse(EngineName.MONGODB, server.uri)
        with engine_for_uri(EngineName.MONGODB, parsed, password=None, timeout=5) as db:
            db.seed_sample(seed=13, scale=5)
        yield server.uri


def _ok(result: Any) -> Any:
    assert result.code == 0, result.err + result.out
    return result


def _check(cli: Any, *args: str) -> tuple[int, dict[str, Any]]:
    r = cli("policy", "check", "--json", *args)
    assert r.out, r.err
    assert "Traceback" not in r.err
    return r.code, json.loads(r.out)


def _results(out: dict[str, Any], control: str) -> dict[str, dict[str, Any]]:
    return {r["subject"]: r for r in out["results"] if r["control"] == control}


def _failing(out: dict[str, Any]) -> set[tuple[str, str]]:
    return {(r["control"], r["subject"]) for r in out["results"] if r["status"] == "fail"}


def _sql(home: Path, statement: str, *params: Any) -> None:
    with sqlite3.connect(home / "catalog.sqlite") as db:
        assert db.execute(statement, params).rowcount >= 1, statement


def _healthy_home(cli: Any, tmp_path: Path, mongo: str, *, policy: str = POLICY) -> str:
    """A home whose policy check passes: one verified backup of one source, every dataset
    classified, a baseline, a published checkpoint, a policy approved by two people. Returns
    the backup's id."""
    _ok(cli("source", "add", "orders", "--engine", "mongodb", "--uri", mongo,
            "--classification", "internal", "--region", "eu-west-1"))  # fmt: skip
    _ok(cli("vault", "add", "v1", "--url", f"file://{tmp_path / 'vault'}",
            "--region", "eu-central-1"))  # fmt: skip
    _ok(cli("inventory"))
    backup_id = str(json.loads(_ok(cli("backup", "run", "orders", "--json")).out)["backup_id"])
    _ok(cli("verify", backup_id, "--json"))
    _, out = _check(cli, "--offline")
    for subject in _results(out, "dataset.classified"):
        ref = subject.removeprefix("dataset:")
        _ok(cli("dataset", "classify", ref, "internal", "--reason", "order data"))
    policy_file = tmp_path / "policy.toml"
    policy_file.write_text(policy, encoding="utf-8")
    _ok(cli("--actor", "alice", "policy", "propose", str(policy_file)))
    _ok(cli("--actor", "bob", "policy", "approve", "1"))
    # local mode enforces no approval: access.segregation_of_duties reports the approval as not
    # authenticated, and the organisation accepts that risk with an exception (issue 15)
    expires = (datetime.now(UTC) + timedelta(days=30)).strftime("%Y-%m-%d")
    added = _ok(cli("--actor", "alice", "exception", "add", "access.segregation_of_duties", "*",
                    "--reason", "one host in local mode", "--expires", expires, "--json"))  # fmt: skip
    _ok(cli("--actor", "bob", "exception", "approve", json.loads(added.out)["id"]))
    _ok(cli("--actor", "dave", "baseline", "approve", "--note", "as deployed"))
    _ok(cli("ledger", "checkpoint", "--publish", str(tmp_path / "witness")))
    return backup_id


def _integrity(out: dict[str, Any], subject: str, *, event: bool = True) -> str:
    """The ``ledger.integrity`` failure that names ``subject`` (citing its ledger event when
    ``event``); its message."""
    found = _results(out, "ledger.integrity").get(subject)
    assert found is not None and found["status"] == "fail", _results(out, "ledger.integrity")
    assert subject in found["evidence"]
    assert any(e.startswith("ledger:") for e in found["evidence"]) is event
    return str(found["message"])


def _fail_verification(cli: Any, tmp_path: Path, backup_id: str) -> str:
    """Flip a byte of one of the backup's data artifacts in the vault; verify it (exit 1).
    Returns the failed verification's id."""
    backup = json.loads(_ok(cli("backup", "show", backup_id, "--json")).out)
    path = next(tmp_path / "vault" / a["path"] for a in backup["artifacts"] if a["role"] == "data")
    os.chmod(path, stat.S_IRUSR | stat.S_IWUSR)  # the vault's files are 0444
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    path.write_bytes(bytes(raw))
    r = cli("verify", backup_id, "--json")
    assert r.code == 1, r.err + r.out
    return str(json.loads(r.out)["id"])


def test_a_failed_verification_flipped_to_passed_or_deleted_still_fails(
    cli: Any, home: Path, tmp_path: Path, mongo: str
) -> None:
    backup_id = _healthy_home(cli, tmp_path, mongo)
    code, out = _check(cli)
    assert code == 0, _failing(out)  # the untampered catalog passes, as before
    assert set(_results(out, "ledger.integrity")) == {"ledger"}

    # a byte of the backup flipped in the vault: a failed verification, verify.recent fails
    failed_id = _fail_verification(cli, tmp_path, backup_id)
    code, out = _check(cli)
    assert code == 1
    recent = [r for r in _results(out, "verify.recent").values() if r["status"] == "fail"]
    assert recent and all(f"verification:{failed_id}" in r["evidence"] for r in recent)
    assert set(_results(out, "ledger.integrity")) == {"ledger"}

    # flipped to passed in the catalog: verify.recent still fails, and the row is named
    _sql(home, "UPDATE verifications SET ok = 1, findings = '[]' WHERE id = ?", failed_id)
    code, out = _check(cli)
    assert code == 1
    message = _integrity(out, f"verification:{failed_id}")
    assert "the result is 'passed' in the catalog but 'failed' in verification.completed" in message
    recent = _results(out, "verify.recent")
    assert recent and all(r["status"] == "fail" for r in recent.values())
    assert ("ledger.integrity", "ledger") not in _failing(out)  # the ledger itself verifies

    # the row deleted: the event still says a verification happened and failed
    _sql(home, "DELETE FROM verifications WHERE id = ?", failed_id)
    code, out = _check(cli)
    assert code == 1
    message = _integrity(out, f"verification:{failed_id}")
    assert "missing from the catalog" in message and "failed" in message
    recent = _results(out, "verify.recent")
    assert recent and all(r["status"] == "fail" for r in recent.values())
    assert all(f"verification:{failed_id}" in r["evidence"] for r in recent.values())

    # a passing verification typed into the catalog counts for nothing
    _sql(home, "INSERT INTO verifications (id, backup_id, kind, started_at, finished_at, ok, "
         "findings) SELECT 'vf-forged', backup_id, kind, started_at, "
         "datetime('now'), 1, '[]' FROM verifications LIMIT 1")  # fmt: skip
    code, out = _check(cli)
    assert code == 1
    assert "no verification.completed event" in _integrity(
        out, "verification:vf-forged", event=False
    )
    assert all(r["status"] == "fail" for r in _results(out, "verify.recent").values())


def test_a_hidden_or_back_dated_backup_is_reported(
    cli: Any, home: Path, tmp_path: Path, mongo: str
) -> None:
    first = _healthy_home(cli, tmp_path, mongo)
    # a newer backup that fails its verification
    second = str(json.loads(_ok(cli("backup", "run", "orders", "--json")).out)["backup_id"])
    _fail_verification(cli, tmp_path, second)
    code, out = _check(cli)
    assert code == 1 and ("ledger.integrity", f"backup:{second}") not in _failing(out)
    assert all(r["status"] == "fail" for r in _results(out, "verify.recent").values())

    # hiding the newer backup as "failed" would leave the older, verified one as the newest
    _sql(home, "UPDATE backups SET status = 'failed' WHERE id = ?", second)
    code, out = _check(cli)
    assert code == 1
    message = _integrity(out, f"backup:{second}")
    assert "the status is 'failed' in the catalog but 'complete' in backup.completed" in message
    assert all(r["status"] == "fail" for r in _results(out, "verify.recent").values())
    _sql(home, "UPDATE backups SET status = 'complete' WHERE id = ?", second)

    # a completion moved a year back, a retention shortened, a dataset re-classified
    _sql(home, "UPDATE backups SET finished_at = datetime(finished_at, '-365 days'), "
         "retain_until = datetime(retain_until, '-300 days') WHERE id = ?", first)  # fmt: skip
    _sql(home, "UPDATE backup_datasets SET classification = 'public' WHERE backup_id = ?", first)
    code, out = _check(cli)
    message = _integrity(out, f"backup:{first}")
    assert "the completion time is" in message and "retain_until is" in message
    assert "classification differs from the manifest" in message
    retention = _results(out, "backup.retention")[f"backup:{first}"]
    assert retention["status"] == "pass"  # the signed retention, not the edited one

    # the row deleted altogether: the ledger still knows the backup
    _sql(home, "DELETE FROM backups WHERE id = ?", second)
    code, out = _check(cli)
    assert "missing from the catalog" in _integrity(out, f"backup:{second}")
    assert all(r["status"] == "fail" for r in _results(out, "verify.recent").values())
    assert _ok(cli("ledger", "verify"))  # the ledger itself is untouched


def test_a_drill_flipped_shortened_or_deleted_still_fails(
    cli: Any, home: Path, tmp_path: Path, mongo: str
) -> None:
    # a policy whose RTO no real restore meets
    strict = POLICY.replace("rto_seconds = 14400", "rto_seconds = 0.001")
    backup_id = _healthy_home(cli, tmp_path, mongo, policy=strict)
    r = cli("drill", "run", backup_id, "--json")
    assert r.code == 0, r.err + r.out
    drill = json.loads(r.out)
    code, out = _check(cli)
    assert code == 1 and ("drill.rto", "source:orders") in _failing(out)
    assert ("drill.recent", "source:orders") not in _failing(out)
    assert set(_results(out, "ledger.integrity")) == {"ledger"}

    # the restore time shortened in the catalog: drill.rto still fails, with the signed time
    _sql(home, "UPDATE drills SET restore_seconds = 0.0001 WHERE id = ?", drill["drill_id"])
    code, out = _check(cli)
    assert code == 1
    message = _integrity(out, f"drill:{drill['drill_id']}")
    assert "the restore time is 0.0001 in the catalog but" in message
    rto = _results(out, "drill.rto")["source:orders"]
    assert rto["status"] == "fail" and f"{drill['restore_seconds']:.1f} s" in rto["message"]

    # a failed drill flipped to passed: drill.recent still fails
    r = cli("drill", "run", backup_id, "--rto", "0.001", "--json")
    assert r.code == 1, r.err + r.out
    failed = json.loads(r.out)["drill_id"]
    _sql(home, "UPDATE drills SET ok = 1, findings = '[]' WHERE id = ?", failed)
    code, out = _check(cli)
    assert code == 1
    message = _integrity(out, f"drill:{failed}")
    assert "the result is 'passed' in the catalog but 'failed' in drill.completed" in message
    assert ("drill.recent", "source:orders") in _failing(out)

    # the failed drill's row deleted: its event still counts
    _sql(home, "DELETE FROM drills WHERE id = ?", failed)
    code, out = _check(cli)
    assert code == 1
    assert "missing from the catalog" in _integrity(out, f"drill:{failed}")
    recent = _results(out, "drill.recent")["source:orders"]
    assert recent["status"] == "fail" and f"drill:{failed}" in recent["evidence"]
