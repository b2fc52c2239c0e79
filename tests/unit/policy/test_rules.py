"""The rules over hand-made facts: each control passes when it should and fails (with every
failing subject) when it should; exceptions and the fail-closed decision."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from affidavit.constants import Classification
from affidavit.models.governance import ExceptionStatus, PolicyException
from affidavit.policy.controls import CONTROL_IDS, CONTROLS
from affidavit.policy.document import parse_policy
from affidavit.policy.facts import (
    BackupFacts,
    CheckFacts,
    DatasetFacts,
    Facts,
    KeyFacts,
    LedgerFacts,
    PolicyFacts,
    SourceFacts,
    VaultFacts,
)
from affidavit.policy.rules import ControlResult, Status, diff_config, evaluate, passed

GOOD = (Path(__file__).with_name("policy.toml")).read_text(encoding="utf-8")
NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
POLICY = parse_policy(
    GOOD.replace("cross_region_copy_required = false", "cross_region_copy_required = false"),
    controls=CONTROL_IDS,
)
CONFIG = {
    "sources": {"orders": {"engine": "mongodb", "tls": True, "auth_required": True}},
    "vaults": {"eu": {"kind": "s3", "immutability": "object-lock COMPLIANCE"}},
    "policy_version": 1,
}


def backup(bid: str, *, hours_ago: float, vault: str = "eu", **kw: object) -> BackupFacts:
    started = NOW - timedelta(hours=hours_ago)
    values: dict[str, object] = {
        "id": bid,
        "source": "orders",
        "vault": vault,
        "status": "complete",
        "started_at": started,
        "finished_at": started + timedelta(minutes=5),
        "retain_until": started + timedelta(days=35),
        "datasets": ("app.orders",),
        "classification": Classification.INTERNAL,
        "encrypted": True,
    }
    values.update(kw)
    return BackupFacts(**values)  # type: ignore[arg-type]


def healthy() -> Facts:
    return Facts(
        now=NOW,
        policy=PolicyFacts(version=1, proposed_by="alice", approved_by="bob", seq=3),
        sources=(
            SourceFacts(
                name="orders", engine="mongodb", classification=Classification.INTERNAL,
                region="eu-west-1", owner="orders-team@example.com",
            ),
        ),
        datasets=(
            DatasetFacts(source="orders", name="app.orders",
                         classification=Classification.INTERNAL, explicit=True),
        ),
        vaults=(VaultFacts(name="eu", kind="s3", region="eu-central-1", object_lock=True),),
        backups=(backup("bk-1", hours_ago=20), backup("bk-2", hours_ago=2)),
        verifications=(
            CheckFacts(id="vf-1", kind="full", backup_id="bk-2", at=NOW - timedelta(hours=1),
                       ok=True),
        ),
        drills=(
            CheckFacts(id="dr-1", kind="drill", backup_id="bk-2", at=NOW - timedelta(hours=1),
                       ok=True, restore_seconds=12.5, fingerprint_match=True),
        ),
        ledger=LedgerFacts(ok=True, size=40, last_published_at=NOW - timedelta(hours=3),
                           last_published_seq=39),
        keys=KeyFacts(kek_id="file:default", version=1, created_at=NOW - timedelta(days=10)),
        default_retention_days=35,
        config=CONFIG,
        baseline=CONFIG,
        baseline_id=1,
    )  # fmt: skip


def by_control(results: list[ControlResult], control: str) -> list[ControlResult]:
    return [r for r in results if r.control == control]


def failing(results: list[ControlResult]) -> set[tuple[str, str]]:
    return {(r.control, r.subject) for r in results if r.status is Status.FAIL}


def test_a_healthy_estate_passes_every_control_and_each_control_reports() -> None:
    results = evaluate(healthy(), POLICY)
    assert failing(results) == set()
    assert passed(results)
    assert {r.control for r in results} == {c.id for c in CONTROLS}
    owner = by_control(results, "drill.rto")[0].owner
    assert owner == "sre@example.com"  # [owners] wins over the source owner
    assert by_control(results, "backup.rpo")[0].owner == "orders-team@example.com"


def test_without_an_approved_policy_the_check_fails_closed() -> None:
    facts = replace(healthy(), policy=None)
    results = evaluate(facts, None)
    assert ("policy.approved", "policy") in failing(results)
    assert by_control(results, "backup.rpo")[0].status is Status.NOT_EVALUATED
    assert not passed(results)
    assert not passed([])  # an empty result set fails


def test_self_approved_policy_fails() -> None:
    facts = replace(healthy(), policy=PolicyFacts(version=2, proposed_by="a", approved_by="a",
                                                  seq=1))  # fmt: skip
    assert ("policy.approved", "policy:v2") in failing(evaluate(facts, POLICY))


def test_every_unprotected_dataset_is_reported_not_just_the_first() -> None:
    extra = tuple(
        DatasetFacts(source="orders", name=f"app.c{i}", classification=Classification.INTERNAL,
                     explicit=True)
        for i in range(3)
    )  # fmt: skip
    facts = replace(healthy(), datasets=healthy().datasets + extra)
    bad = failing(evaluate(facts, POLICY))
    assert {("dataset.protected", f"dataset:orders/app.c{i}") for i in range(3)} <= bad


def test_stale_backup_breaks_the_rpo_and_sparse_backups_the_frequency() -> None:
    facts = replace(
        healthy(),
        backups=(backup("bk-1", hours_ago=100), backup("bk-2", hours_ago=30)),
    )
    bad = failing(evaluate(facts, POLICY))
    assert ("backup.rpo", "dataset:orders/app.orders") in bad
    assert ("backup.frequency", "dataset:orders/app.orders") in bad


def test_frequency_counts_the_gap_across_the_window_start_and_per_dataset() -> None:
    # 31 days ago, then 2 h and 1 h ago: the 31-day gap crosses the window's start
    facts = replace(
        healthy(),
        backups=(
            backup("bk-0", hours_ago=31 * 24),
            backup("bk-1", hours_ago=2),
            backup("bk-2", hours_ago=1),
        ),
    )
    assert ("backup.frequency", "dataset:orders/app.orders") in failing(evaluate(facts, POLICY))
    # hourly backups of one dataset do not hide a 20-day gap in another of the same source
    other = DatasetFacts(source="orders", name="app.other",
                         classification=Classification.INTERNAL, explicit=True)  # fmt: skip
    hourly = tuple(backup(f"bk-h{i}", hours_ago=i + 1) for i in range(10))
    sparse = (
        backup("bk-s0", hours_ago=24 * 21, datasets=("app.other",)),
        backup("bk-s1", hours_ago=2, datasets=("app.other",)),
    )
    facts = replace(healthy(), datasets=(*healthy().datasets, other), backups=hourly + sparse)
    bad = failing(evaluate(facts, POLICY))
    assert ("backup.frequency", "dataset:orders/app.other") in bad
    assert ("backup.frequency", "dataset:orders/app.orders") not in bad


def test_a_failed_newest_verification_is_not_hidden_by_an_older_pass() -> None:
    facts = replace(
        healthy(),
        verifications=(
            CheckFacts(id="vf-old", kind="sample", backup_id="bk-1", at=NOW, ok=True),
            CheckFacts(id="vf-new", kind="full", backup_id="bk-2",
                       at=NOW - timedelta(minutes=5), ok=False),
        ),
    )  # fmt: skip
    results = evaluate(facts, POLICY)
    bad = failing(results)
    assert ("verify.recent", "dataset:orders/app.orders") in bad
    # and the failed backup does not count for the RPO: the older one (20 h) still does
    assert ("backup.rpo", "dataset:orders/app.orders") not in bad
    rpo = by_control(results, "backup.rpo")[0]
    assert "bk-1" in rpo.message


def test_the_newest_backup_must_itself_be_verified_once_due() -> None:
    facts = replace(
        healthy(),
        backups=(backup("bk-1", hours_ago=24 * 20), backup("bk-2", hours_ago=24 * 9)),
        verifications=(
            CheckFacts(id="vf-1", kind="full", backup_id="bk-1", at=NOW - timedelta(days=1),
                       ok=True),
        ),
    )  # fmt: skip
    assert ("verify.recent", "dataset:orders/app.orders") in failing(evaluate(facts, POLICY))


def test_an_offline_check_does_not_claim_drift_or_missing_locks() -> None:
    vaults = (VaultFacts(name="eu", kind="s3", region="eu-central-1", object_lock=None),)
    restricted = tuple(
        replace(b, classification=Classification.RESTRICTED) for b in healthy().backups
    )
    facts = replace(healthy(), live=False, vaults=vaults, backups=restricted)
    results = evaluate(facts, POLICY)
    assert by_control(results, "config.baseline")[0].status is Status.NOT_EVALUATED
    assert {r.status for r in by_control(results, "backup.immutable")} == {Status.NOT_EVALUATED}
    assert not any(r.failed for r in by_control(results, "config.baseline"))


def test_integrity_controls_cannot_be_excepted() -> None:
    facts = replace(healthy(), ledger=LedgerFacts(ok=False, size=1, problems=("x",)))
    exc = PolicyException(
        id="X-1", control="ledger.integrity", subject="*", reason="r", requested_by="a",
        requested_at=NOW - timedelta(days=1), expires_at=NOW + timedelta(days=1),
        status=ExceptionStatus.APPROVED, approved_by="b", approved_at=NOW,
    )  # fmt: skip
    results = evaluate(facts, POLICY, [exc])
    assert by_control(results, "ledger.integrity")[0].status is Status.FAIL
    assert not passed(results)


def test_retention_outside_the_levels_limits_fails() -> None:
    short = backup("bk-3", hours_ago=1)
    short = replace(short, retain_until=short.started_at + timedelta(days=3))
    facts = replace(healthy(), backups=(*healthy().backups, short), default_retention_days=500)
    bad = failing(evaluate(facts, POLICY))
    assert ("backup.retention", "backup:bk-3") in bad
    assert ("backup.retention", "config:retention_days") in bad


def test_unencrypted_and_mutable_restricted_backups_fail() -> None:
    plain = backup("bk-3", hours_ago=1, encrypted=False, vault="local",
                   classification=Classification.RESTRICTED)  # fmt: skip
    facts = replace(
        healthy(),
        backups=(*healthy().backups, plain),
        vaults=(*healthy().vaults, VaultFacts(name="local", kind="file", region=None,
                                              object_lock=False)),
    )  # fmt: skip
    bad = failing(evaluate(facts, POLICY))
    assert ("backup.encrypted", "backup:bk-3") in bad
    assert ("backup.immutable", "backup:bk-3") in bad
    assert ("backup.immutable", "backup:bk-2") not in bad  # object lock


def test_cross_region_copy_required_but_missing() -> None:
    policy = parse_policy(
        GOOD.replace("cross_region_copy_required = false", "cross_region_copy_required = true"),
        controls=CONTROL_IDS,
    )
    facts = healthy()
    assert ("backup.cross_region", "dataset:orders/app.orders") not in failing(
        evaluate(facts, policy)
    )  # the vault is in another region than the source
    same = replace(facts, vaults=(VaultFacts(name="eu", kind="s3", region="eu-west-1",
                                             object_lock=True),))  # fmt: skip
    assert ("backup.cross_region", "dataset:orders/app.orders") in failing(evaluate(same, policy))


def test_verification_and_drill_must_be_recent_and_passing() -> None:
    old = NOW - timedelta(days=200)
    facts = replace(
        healthy(),
        backups=(backup("bk-1", hours_ago=24 * 200), backup("bk-2", hours_ago=2)),
        verifications=(CheckFacts(id="vf-1", kind="full", backup_id="bk-2", at=NOW, ok=False),),
        drills=(CheckFacts(id="dr-1", kind="drill", backup_id="bk-1", at=old, ok=True,
                           restore_seconds=99999.0, fingerprint_match=True),),
    )  # fmt: skip
    results = evaluate(facts, POLICY)
    bad = failing(results)
    assert ("verify.recent", "dataset:orders/app.orders") in bad
    assert ("drill.recent", "source:orders") in bad
    assert ("drill.rto", "source:orders") in bad
    assert "failed" in by_control(results, "verify.recent")[0].message


def test_new_backups_are_not_yet_due_for_verification() -> None:
    facts = replace(healthy(), verifications=(), drills=())
    results = evaluate(facts, POLICY)
    assert by_control(results, "verify.recent")[0].status is Status.PASS
    assert "not yet due" in by_control(results, "verify.recent")[0].message


def test_ledger_keys_and_publication() -> None:
    facts = replace(
        healthy(),
        ledger=LedgerFacts(ok=False, size=40, problems=("root-mismatch: x",)),
        keys=KeyFacts(kek_id="file:default", version=1, created_at=NOW - timedelta(days=400)),
    )
    bad = failing(evaluate(facts, POLICY))
    assert ("ledger.integrity", "ledger") in bad
    assert ("ledger.checkpoint_published", "ledger") in bad
    assert ("keys.rotated", "kek:file:default") in bad


def test_deletion_before_retention_or_under_hold_fails() -> None:
    early = backup("bk-3", hours_ago=48, status="deleted")
    early = replace(early, deleted_at=NOW - timedelta(hours=1))
    held = backup("bk-4", hours_ago=24 * 40, status="deleted")
    held = replace(held, deleted_at=NOW - timedelta(hours=1),
                   holds=((NOW - timedelta(days=2), None),))  # fmt: skip
    lawful = backup("bk-5", hours_ago=24 * 40, status="deleted")
    lawful = replace(lawful, deleted_at=NOW - timedelta(hours=1),
                     holds=((NOW - timedelta(days=9), NOW - timedelta(days=3)),))  # fmt: skip
    facts = replace(healthy(), backups=(*healthy().backups, early, held, lawful))
    results = evaluate(facts, POLICY)
    bad = failing(results)
    assert ("deletion.lawful", "backup:bk-3") in bad
    assert ("deletion.lawful", "backup:bk-4") in bad
    assert ("deletion.lawful", "backup:bk-5") not in bad


def test_inherited_classification_and_unknown_vaults_fail() -> None:
    facts = replace(
        healthy(),
        datasets=(replace(healthy().datasets[0], explicit=False),),
        backups=(*healthy().backups, backup("bk-9", hours_ago=1, vault="rogue")),
    )
    bad = failing(evaluate(facts, POLICY))
    assert ("dataset.classified", "dataset:orders/app.orders") in bad
    assert ("inventory.known_targets", "vault:rogue") in bad


def test_every_drift_item_is_reported() -> None:
    drifted = {
        "sources": {"orders": {"engine": "mongodb", "tls": False, "auth_required": None},
                    "cache": {"engine": "redis"}},
        "vaults": {},
        "policy_version": 2,
    }  # fmt: skip
    facts = replace(healthy(), config=drifted, config_errors={"source:cache": "refused"})
    results = evaluate(facts, POLICY)
    bad = failing(results)
    assert {("config.baseline", "source:orders"), ("config.baseline", "source:cache"),
            ("config.baseline", "vault:eu"), ("config.baseline", "policy")} <= bad  # fmt: skip
    message = next(
        r.message for r in by_control(results, "config.baseline") if r.subject == "source:orders"
    )
    assert "tls: True -> False" in message and "auth_required: True -> None" in message
    assert list(diff_config({"a": {"b": 1}}, {"a": {"b": 1}})) == []


def test_no_baseline_is_a_finding() -> None:
    facts = replace(healthy(), baseline=None, baseline_id=None)
    assert ("config.baseline", "baseline") in failing(evaluate(facts, POLICY))


@pytest.mark.parametrize("days_left", [5, -1])
def test_exceptions_excuse_a_failure_only_while_approved_and_unexpired(days_left: int) -> None:
    facts = replace(healthy(), datasets=(replace(healthy().datasets[0], explicit=False),))
    exc = PolicyException(
        id="X-1", control="dataset.classified", subject="*", reason="migration",
        requested_by="carol", requested_at=NOW - timedelta(days=10),
        expires_at=NOW + timedelta(days=days_left), status=ExceptionStatus.APPROVED,
        approved_by="dave", approved_at=NOW - timedelta(days=9),
    )  # fmt: skip
    results = evaluate(facts, POLICY, [exc])
    status = by_control(results, "dataset.classified")[0].status
    assert status is (Status.EXCEPTED if days_left > 0 else Status.FAIL)
    requested = replace(exc, status=ExceptionStatus.REQUESTED)
    assert by_control(evaluate(facts, POLICY, [requested]), "dataset.classified")[0].failed
