"""Evidence content shared by the OSCAL and report tests (the OSCAL schema validator is a
fixture of tests/conftest.py)."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from affidavit.evidence.content import EvidenceContent
from affidavit.policy.controls import BY_ID

HOSTILE = '<script>alert("x")</script> & <b>bold</b> [link](javascript:alert(1)) {{ 7*7 }}'
HOSTILE_MULTILINE = "\n  first line\r\n\tsecond\x00line\u2028 third  \n"


def _t(day: int, hour: int = 0, minute: int = 0) -> str:
    return datetime(2026, 3, day, hour, minute, tzinfo=UTC).isoformat()


def _control(cid: str) -> dict[str, Any]:
    return BY_ID[cid].to_json()


def make_content(*, framework: str | None = None) -> EvidenceContent:
    """A month of evidence: controls that pass, fail, are excepted, not applicable and not
    evaluated; complete and failed backups; verifications; drills within and over the RTO;
    findings with a remediation trail; hostile strings in every free-text field."""
    controls = [
        _control(cid)
        for cid in (
            "policy.approved",
            "dataset.protected",
            "backup.rpo",
            "backup.encrypted",
            "verify.recent",
            "drill.rto",
            "ledger.integrity",
            "dataset.classified",
            "keys.rotated",
        )
    ]
    results = [
        _result("policy.approved", "policy", "pass", "version 2 approved by bob", ["ledger:4"]),
        _result("dataset.protected", "dataset:shop/orders", "pass", "in bk-1", ["backup:bk-1"]),
        _result("dataset.protected", "dataset:shop/users", "fail", HOSTILE, []),
        _result("backup.rpo", "dataset:shop/orders", "pass", "bk-1 is 3h old", ["backup:bk-1"]),
        _result(
            "backup.encrypted",
            "backup:bk-2",
            "excepted",
            "not encrypted (exception ex-1 by carol, until 2026-04-30)",
            ["backup:bk-2"],
            exception="ex-1",
        ),
        _result("verify.recent", "dataset:shop/orders", "pass", "vf-1 passed", ["full:vf-1"]),
        _result("drill.rto", "source:shop", "fail", HOSTILE_MULTILINE, ["drill:dr-2"]),
        _result("ledger.integrity", "ledger", "pass", "", ["ledger:9"]),
        _result("dataset.classified", "*", "not-applicable", "nothing to evaluate", []),
        _result("keys.rotated", "policy", "not-evaluated", "no approved policy", []),
    ]
    backups = [
        _backup("bk-1", "complete", 2, attestation="attestations/backup/bk-1.json"),
        _backup("bk-2", "complete", 9, attestation="attestations/backup/bk-2.json"),
        _backup("bk-3", "failed", 12, attestation=None),
        _backup("bk-4 <img src=x onerror=alert(1)>", "complete", 20, attestation=None),
    ]
    verifications = [
        {
            "id": "vf-1",
            "backup_id": "bk-1",
            "kind": "full",
            "started_at": _t(3, 1),
            "finished_at": _t(3, 1, 5),
            "ok": True,
            "findings": [],
            "attestation": "attestations/verification/vf-1.json",
            "seq": 11,
        },
        {
            "id": "vf-2",
            "backup_id": "bk-2",
            "kind": "against-source",
            "started_at": _t(10, 1),
            "finished_at": _t(10, 1, 9),
            "ok": False,
            "findings": [{"code": "record-changed", "message": HOSTILE, "subject": "users/42"}],
            "attestation": None,
            "seq": 15,
        },
    ]
    drills = [
        _drill("dr-1", "bk-1", restore=412.5, rto=900, ok=True),
        _drill("dr-2", "bk-2", restore=1260.0, rto=900, ok=False),
        _drill("dr-3 <i>", "bk-1", restore=75.25, rto=None, ok=True),
    ]
    findings = [
        {
            "id": "F-1",
            "control": "dataset.protected",
            "subject": "dataset:shop/users",
            "severity": "high",
            "owner": "team-data <data@example.com>",
            "message": HOSTILE,
            "status": "acknowledged",
            "opened_at": _t(5),
            "last_seen_at": _t(28),
            "due_at": _t(12),
            "evidence": ["ledger:20"],
            "trail": [
                {"at": _t(5), "actor": "affidavit", "status": "open", "note": "", "seq": 20},
                {
                    "at": _t(6, 9),
                    "actor": "alice",
                    "status": "acknowledged",
                    "note": "backup job added </td></tr><script>x()</script>",
                    "seq": 22,
                },
            ],
        },
        {
            "id": "F-2",
            "control": "drill.rto",
            "subject": "source:shop",
            "severity": "high",
            "owner": "sre",
            "message": "restore took 1260 s, RTO 900 s",
            "status": "resolved",
            "opened_at": _t(11),
            "last_seen_at": _t(11),
            "due_at": _t(18),
            "evidence": ["drill:dr-2"],
            "trail": [
                {"at": _t(11), "actor": "affidavit", "status": "open", "note": "", "seq": 30},
                {"at": _t(15), "actor": "bob", "status": "resolved", "note": "", "seq": 31},
            ],
        },
    ]
    exceptions = [
        {
            "id": "ex-1",
            "control": "backup.encrypted",
            "subject": "backup:bk-2",
            "reason": "legacy restore tool <cannot> decrypt",
            "requested_by": "alice",
            "requested_at": _t(8),
            "expires_at": "2026-04-30T00:00:00+00:00",
            "status": "approved",
            "approved_by": "carol",
            "approved_at": _t(9),
        }
    ]
    return EvidenceContent(
        generated_at=datetime(2026, 4, 1, 6, 30, tzinfo=UTC),
        period_start=datetime(2026, 3, 1, tzinfo=UTC),
        period_end=datetime(2026, 4, 1, tzinfo=UTC),
        framework=framework,
        origin="backup.example.com/affidavit",
        checkpoint_size=42,
        checkpoint_root="9f" * 32,
        event_count=17,
        controls=controls,
        results=results,
        check_runs=[
            {
                "id": "run-1",
                "at": _t(20),
                "actor": "scheduler",
                "ok": False,
                "policy_version": 1,
                "seq": 33,
                "results_sha256": "ab" * 32,
            },
            {
                "id": "run-2",
                "at": "2026-03-31T23:00:00.500000+02:00",
                "actor": "scheduler",
                "ok": False,
                "policy_version": 2,
                "seq": 40,
                "results_sha256": "cd" * 32,
            },
        ],
        backups=backups,
        verifications=verifications,
        drills=drills,
        findings=findings,
        exceptions=exceptions,
        key_rotations=[
            {
                "seq": 7,
                "time": _t(2),
                "actor": "alice",
                "kek": "local:main",
                "old_version": 1,
                "new_version": 2,
            }
        ],
        policy_versions=[
            {
                "version": 2,
                "sha256": "ef" * 32,
                "text": "[levels.confidential]\nrpo_hours = 24\n# <script>\n",
                "proposed_by": "alice",
                "proposed_at": _t(1),
                "proposal_seq": 3,
                "approved_by": "bob",
                "approved_at": _t(1, 4),
                "approval_seq": 4,
            }
        ],
    )


def _result(
    control: str,
    subject: str,
    status: str,
    message: str,
    evidence: list[str],
    *,
    exception: str | None = None,
) -> dict[str, Any]:
    return {
        "control": control,
        "subject": subject,
        "status": status,
        "message": message,
        "severity": BY_ID[control].severity.value,
        "owner": "sre",
        "evidence": evidence,
        "exception": exception,
    }


def _backup(ident: str, status: str, day: int, *, attestation: str | None) -> dict[str, Any]:
    return {
        "id": ident,
        "source": "shop",
        "vault": "local",
        "kind": "full",
        "format": "mongodump",
        "status": status,
        "started_at": _t(day, 2),
        "finished_at": _t(day, 2, 4) if status == "complete" else None,
        "retain_until": "2026-06-30T00:00:00+00:00",
        "datasets": [
            {"name": "orders", "records": 1200, "fingerprint": "aa" * 32, "classification": "c"}
        ],
        "artifacts": [{"path": "orders.bson", "role": "data", "size": 4096, "sha256": "bb" * 32}],
        "manifest_sha256": "cc" * 32,
        "attestation": attestation,
        "seq": day,
    }


def _drill(
    ident: str, backup: str, *, restore: float, rto: float | None, ok: bool
) -> dict[str, Any]:
    return {
        "id": ident,
        "backup_id": backup,
        "target": "secantus://127.0.0.1:27017",
        "started_at": _t(14),
        "finished_at": _t(14, 1),
        "ok": ok,
        "rto_seconds": rto,
        "restore_seconds": restore,
        "fingerprint_match": ok,
        "phases": {"download": restore / 4, "restore": restore / 2, "fingerprint": restore / 4},
        "attestation": f"attestations/drill/{ident}.json",
        "seq": 50,
    }


@pytest.fixture
def make_evidence() -> Callable[..., EvidenceContent]:
    """:func:`make_content`: ``make_evidence(framework="iso-27001")`` builds a fresh copy."""
    return make_content


@pytest.fixture
def hostile() -> str:
    """The hostile string in the fixture's failing result, finding and verification."""
    return HOSTILE


@pytest.fixture(scope="session")
def oscal_example() -> Any:
    """NIST's own assessment-results example; skips without ../shared."""
    shared = Path(__file__).resolve().parents[3].parent / "shared"
    path = shared / "oscal" / "examples" / "ifa_assessment-results-example.json"
    if not path.is_file():
        pytest.skip(f"{path} is not present: NIST's OSCAL examples come with ../shared")
    return json.loads(path.read_text(encoding="utf-8"))


@pytest.fixture
def content() -> EvidenceContent:
    """A realistic month of evidence with hostile strings."""
    return make_content()


@pytest.fixture
def empty_content() -> EvidenceContent:
    """A period in which nothing happened."""
    return EvidenceContent(
        generated_at=datetime(2026, 4, 1, tzinfo=UTC),
        period_start=datetime(2026, 3, 1, tzinfo=UTC),
        period_end=datetime(2026, 4, 1, tzinfo=UTC),
        framework=None,
        origin="empty.example.com",
        checkpoint_size=0,
        checkpoint_root="00" * 32,
        event_count=0,
    )
