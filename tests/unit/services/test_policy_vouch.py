"""The catalog's rows reconciled with the ledger events that vouch for them (issue 13): rows
that agree give their own facts; every edit, forged row and lost row is named, and the facts
are the ledger's. Hand-made rows and events; the CLI story is tests/e2e/test_policy_tamper_cli.

Each fixture is named after its defect."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from affidavit.constants import Classification
from affidavit.crypto.digest import sha256_hex
from affidavit.models.backup import Backup, BackupDataset, BackupStatus, Hold
from affidavit.models.checks import Drill, Verification
from affidavit.models.ledger import Event, rfc3339_utc
from affidavit.policy.facts import BackupFacts, Facts, KeyFacts, LedgerFacts
from affidavit.policy.rules import Status, evaluate
from affidavit.services.policy_vouch import LedgerRecords, Vouched, vouch

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
STARTED = NOW - timedelta(hours=2)
FINISHED = STARTED + timedelta(minutes=5)
RETAIN = STARTED + timedelta(days=35)
MS = timedelta(milliseconds=30)  # a row's time is taken just before its event


def _event(seq: int, action: str, subject: str, at: datetime, **details: Any) -> Event:
    return Event(
        seq=seq, time=rfc3339_utc(at), actor="bot", action=action, subject=subject,
        details=details,
    )  # fmt: skip


def _manifest(level: str = "restricted") -> bytes:
    statement = {
        "predicate": {
            "started_at": STARTED.isoformat(),
            "datasets": [{"name": "shop.orders", "classification": level}],
        }
    }
    return json.dumps(statement).encode()


def _backup(**changes: Any) -> Backup:
    manifest = _manifest()
    row = Backup(
        id="bk-1", source="orders", vault="v1", kind="run", format="mongodump",
        status=BackupStatus.COMPLETE, started_at=STARTED, finished_at=FINISHED,
        retain_until=RETAIN, manifest=manifest, manifest_sha256=sha256_hex(manifest),
        recipient="age1xyz", kek_id="file:kek", kek_version=1,
        datasets=(BackupDataset(name="shop.orders", records=3, fingerprint="afp1:x",
                                classification="restricted"),),
        holds=(Hold(id=1, backup_id="bk-1", case_id="C-1", reason="r",
                    created_at=STARTED + timedelta(hours=1), created_by="a"),),
    )  # fmt: skip
    return replace(row, **changes)


def _facts(b: Backup) -> BackupFacts:
    """What the catalog row alone says (services.policy_facts._backup_facts)."""
    return BackupFacts(
        id=b.id, source=b.source, vault=b.vault, status=b.status.value,
        started_at=b.started_at, finished_at=b.finished_at, retain_until=b.retain_until,
        datasets=tuple(d.name for d in b.datasets), classification=Classification.PUBLIC,
        encrypted=b.recipient is not None and b.kek_id is not None,
        deleted_at=b.deleted_at if b.status is BackupStatus.DELETED else None,
        holds=tuple((h.created_at, h.released_at) for h in b.holds),
    )  # fmt: skip


def _events(*, deleted: bool = False, released: bool = False) -> list[Event]:
    manifest = _manifest()
    events = [
        _event(1, "backup.started", "backup:bk-1", STARTED + MS, source="orders", vault="v1",
               kind="run", format="mongodump", retain_until=RETAIN.isoformat(),
               recipient="age1xyz", kek={"id": "file:kek", "version": 1}),
        _event(2, "backup.completed", "backup:bk-1", FINISHED + MS,
               manifest_sha256=sha256_hex(manifest), artifacts=2,
               datasets={"shop.orders": "afp1:x"}),
        _event(3, "hold.added", "backup:bk-1", STARTED + timedelta(hours=1) + MS, case="C-1",
               reason="r"),
        _event(4, "verification.completed", "backup:bk-1", FINISHED + timedelta(minutes=9),
               verification_id="vf-1", kind="full", ok=False, findings=["hash"]),
        _event(5, "drill.completed", "backup:bk-1", FINISHED + timedelta(minutes=20),
               drill_id="dr-1", ok=True, target="scratch", rto_seconds=3600.0,
               restore_seconds=12.345678, fingerprint_match=True),
    ]  # fmt: skip
    if released:
        events.append(_event(6, "hold.released", "backup:bk-1", NOW - timedelta(minutes=30),
                             case="C-1", reason="case closed"))  # fmt: skip
    if deleted:
        events.append(_event(7, "backup.deleted", "backup:bk-1", NOW - timedelta(minutes=1)))
    return events


def _verification(**changes: Any) -> Verification:
    v = Verification(
        id="vf-1", backup_id="bk-1", kind="full", started_at=FINISHED,
        finished_at=FINISHED + timedelta(minutes=9) - MS, ok=False, findings=(),
    )  # fmt: skip
    return replace(v, **changes)


def _drill(**changes: Any) -> Drill:
    d = Drill(
        id="dr-1", backup_id="bk-1", target="scratch", started_at=FINISHED,
        finished_at=FINISHED + timedelta(minutes=20) - MS, ok=True, rto_seconds=3600.0,
        restore_seconds=12.3456781, fingerprint_match=True, phases={}, probes=(), findings=(),
    )  # fmt: skip
    return replace(d, **changes)


def _vouch(
    events: list[Event],
    backups: list[Backup] | None = None,
    verifications: list[Verification] | None = None,
    drills: list[Drill] | None = None,
) -> Vouched:
    records = LedgerRecords()
    for event in events:
        records.add(event)
    rows = [_backup()] if backups is None else backups
    return vouch(
        records,
        backups=[(b, _facts(b)) for b in rows],
        verifications=[_verification()] if verifications is None else verifications,
        drills=[_drill()] if drills is None else drills,
        levels={("orders", "shop.orders"): Classification.CONFIDENTIAL},
    )


def _messages(vouched: Vouched) -> dict[str, str]:
    return {m.subject: m.message for m in vouched.mismatches}


def test_rows_that_agree_give_their_own_exact_facts() -> None:
    out = _vouch(_events())
    assert out.mismatches == ()
    (b,) = out.backups
    assert (b.status, b.finished_at, b.started_at, b.seq) == ("complete", FINISHED, STARTED, 2)
    assert b.classification is Classification.RESTRICTED  # the signed manifest's
    assert b.holds == ((STARTED + timedelta(hours=1), None),)
    (v,) = out.verifications
    assert (v.ok, v.at) == (False, _verification().finished_at)
    (d,) = out.drills
    assert (d.ok, d.restore_seconds, d.at) == (True, 12.345678, _drill().finished_at)


def test_verification_flipped_to_passed_counts_as_failed() -> None:
    out = _vouch(_events(), verifications=[_verification(ok=True)])
    assert (
        "the result is 'passed' in the catalog but 'failed'" in _messages(out)["verification:vf-1"]
    )
    assert out.verifications[0].ok is False
    assert out.mismatches[0].seq == 4


def test_verification_row_deleted_counts_from_its_event() -> None:
    out = _vouch(_events(), verifications=[])
    assert "missing from the catalog" in _messages(out)["verification:vf-1"]
    (v,) = out.verifications
    assert (v.id, v.backup_id, v.ok, v.at) == (
        "vf-1",
        "bk-1",
        False,
        FINISHED + timedelta(minutes=9),
    )


def test_verification_forged_without_event_is_not_counted() -> None:
    forged = _verification(id="vf-forged", ok=True)
    out = _vouch(_events(), verifications=[_verification(), forged])
    assert "no verification.completed event" in _messages(out)["verification:vf-forged"]
    assert [v.id for v in out.verifications] == ["vf-1"]


def test_verification_moved_to_now_keeps_the_ledger_time() -> None:
    out = _vouch(_events(), verifications=[_verification(finished_at=NOW)])
    assert "the finish time is" in _messages(out)["verification:vf-1"]
    assert out.verifications[0].at == FINISHED + timedelta(minutes=9)


def test_drill_restore_time_shortened_and_match_flipped() -> None:
    out = _vouch(_events(), drills=[_drill(restore_seconds=0.5, fingerprint_match=False)])
    message = _messages(out)["drill:dr-1"]
    assert "the restore time is 0.5 in the catalog but 12.345678" in message
    assert "the fingerprint match is false in the catalog but true" in message
    assert out.drills[0].restore_seconds == 12.345678


def test_backup_status_edits_both_ways() -> None:
    hidden = _vouch(_events(), backups=[_backup(status=BackupStatus.FAILED)])
    assert "'failed' in the catalog but 'complete'" in _messages(hidden)["backup:bk-1"]
    assert hidden.backups[0].status == "complete"
    events = [e for e in _events() if e.action != "backup.completed"]  # it never completed
    forged = _vouch(events)
    assert "'complete' in the catalog but 'running'" in _messages(forged)["backup:bk-1"]
    assert forged.backups[0].status == "running"


def test_failed_and_running_may_differ_a_dead_run_is_failed_without_an_event() -> None:
    events = [e for e in _events() if e.action == "backup.started"]
    out = _vouch(events, backups=[_backup(status=BackupStatus.FAILED, manifest=None, holds=())],
                 verifications=[], drills=[])  # fmt: skip
    assert out.mismatches == () and out.backups[0].status == "failed"


def test_backup_completion_retention_classification_and_recipient_edits() -> None:
    edited = _backup(
        finished_at=NOW, retain_until=RETAIN + timedelta(days=400), recipient="age1other",
        started_at=STARTED - timedelta(days=1),
        datasets=(BackupDataset(name="shop.orders", records=3, fingerprint="afp1:x",
                                classification="public"),),
    )  # fmt: skip
    out = _vouch(_events(), backups=[edited])
    message = _messages(out)["backup:bk-1"]
    for part in ("the completion time", "retain_until", "the age recipient",
                 "classification differs", "the start is"):  # fmt: skip
        assert part in message, message
    (b,) = out.backups
    assert (b.finished_at, b.retain_until, b.started_at) == (FINISHED + MS, RETAIN, STARTED)
    assert b.classification is Classification.RESTRICTED


def test_backup_manifest_replaced_takes_the_strictest_level() -> None:
    other = _manifest("public")
    out = _vouch(_events(), backups=[_backup(manifest=other, manifest_sha256=sha256_hex(other))])
    assert "the manifest is not the one" in _messages(out)["backup:bk-1"]
    assert out.backups[0].classification is Classification.RESTRICTED


def test_backup_row_deleted_is_rebuilt_from_its_events() -> None:
    out = _vouch(_events(deleted=True), backups=[])
    assert "missing from the catalog" in _messages(out)["backup:bk-1"]
    (b,) = out.backups
    assert (b.status, b.source, b.vault, b.retain_until) == ("deleted", "orders", "v1", RETAIN)
    assert b.deleted_at == NOW - timedelta(minutes=1)
    assert b.datasets == ("shop.orders",) and b.encrypted
    assert b.classification is Classification.CONFIDENTIAL  # the inventory's
    assert b.holds == ((STARTED + timedelta(hours=1) + MS, None),)


def test_backup_forged_without_started_event_is_not_counted() -> None:
    out = _vouch(_events(), backups=[_backup(), _backup(id="bk-forged")])
    assert "no backup.started event" in _messages(out)["backup:bk-forged"]
    assert [b.id for b in out.backups] == ["bk-1"]


def test_hold_deleted_or_released_in_the_catalog_only() -> None:
    gone = _vouch(_events(), backups=[_backup(holds=())])
    assert "hold C-1: 0 in the catalog but 1 in the ledger" in _messages(gone)["backup:bk-1"]
    assert gone.backups[0].holds == ((STARTED + timedelta(hours=1) + MS, None),)
    (hold,) = _backup().holds
    released = _backup(holds=(replace(hold, released_at=NOW - timedelta(days=1)),))
    out = _vouch(_events(), backups=[released])
    assert "active in the ledger" in _messages(out)["backup:bk-1"]
    assert out.backups[0].holds == ((hold.created_at, None),)
    # released in both, at the same moment: nothing to report
    fine = _backup(holds=(replace(hold, released_at=NOW - timedelta(minutes=30) - MS),))
    assert _vouch(_events(released=True), backups=[fine]).mismatches == ()


def test_deletion_time_may_precede_its_event_by_the_vaults_work_but_not_follow_it() -> None:
    long_ago = NOW - timedelta(hours=1, minutes=1)  # an hour of deleting artifacts
    deleted = _backup(status=BackupStatus.DELETED, deleted_at=long_ago)
    assert _vouch(_events(deleted=True), backups=[deleted]).backups[0].deleted_at == long_ago
    later = _backup(status=BackupStatus.DELETED, deleted_at=NOW + timedelta(days=30))
    out = _vouch(_events(deleted=True), backups=[later])
    assert "the deletion time" in _messages(out)["backup:bk-1"]
    assert out.backups[0].deleted_at == NOW - timedelta(minutes=1)


def test_ledger_integrity_names_every_mismatched_row() -> None:
    out = _vouch(_events(), verifications=[_verification(ok=True)], drills=[])
    facts = Facts(
        now=NOW, policy=None, sources=(), datasets=(), vaults=(), backups=out.backups,
        verifications=out.verifications, drills=out.drills,
        ledger=LedgerFacts(ok=True, size=8, mismatches=out.mismatches),
        keys=KeyFacts(kek_id="file:kek", version=1, created_at=NOW), default_retention_days=35,
    )  # fmt: skip
    integrity = {r.subject: r for r in evaluate(facts, None) if r.control == "ledger.integrity"}
    assert integrity["ledger"].status is Status.PASS
    row = integrity["verification:vf-1"]
    assert row.status is Status.FAIL and row.evidence == ("verification:vf-1", "ledger:4")
    assert row.message.startswith("the catalog disagrees with the ledger: the result is")
