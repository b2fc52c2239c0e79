"""A verification's result signed and recorded, and the recorded ones listed.

The result is signed as an in-toto Statement (``.../attestations/verification/v1``) whose
predicate is built as a :class:`~affidavit.models.predicates.VerificationPredicate`, so that
what is signed is checked to be what an auditor's verifier reads back; its subjects are the
ciphertext digests the verification read (and the vault's manifest copy). The statement, the
verification row and its ``verification.completed`` event are written in one change.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from affidavit import __version__
from affidavit.crypto.digest import sha256_hex
from affidavit.ledger.attestation import VERIFICATION_PREDICATE_TYPE, Statement, Subject
from affidavit.models.backup import Backup
from affidavit.models.checks import Finding, Verification
from affidavit.models.manifest import ToolInfo
from affidavit.models.predicates import (
    VerificationKind,
    VerificationPredicate,
    VerificationSample,
)
from affidavit.services.context import App
from affidavit.services.ledger import attest_and_record
from affidavit.services.verify.sampling import decide
from affidavit.services.verify.state import now
from affidavit.services.verify.vouch import DEEP, FAST


@dataclass(frozen=True, slots=True, kw_only=True)
class Outcome:
    """What one verification found, to be decided, signed and recorded."""

    backup: Backup
    kind: VerificationKind
    started: datetime
    sample_percent: float | None
    seed: str | None
    findings: tuple[Finding, ...]
    checked: int  # artifacts read, the manifest copy included
    observed: Mapping[str, str]  # artifact path -> ciphertext SHA-256 read
    copy_path: str | None  # the vault's manifest copy, when it was read
    copy_sha256: str | None
    coverage: dict[str, Any]
    against: dict[str, Any] | None  # the comparison with the live source
    vouched_by: int | None = None  # fast: the seq of the ledger entry that vouches
    vouched_by_action: str | None = None  # its action: a deep verification or the backup's
    manifest_sha256: str | None = None  # the signed statement's, when it verified
    tables_proven: bool = False  # deep, and every segment table proven self-consistent

    @property
    def mode(self) -> str:
        """``deep`` or ``fast`` (docs/verification.md)."""
        return DEEP if self.vouched_by is None else FAST


def record(app: App, outcome: Outcome) -> Verification:
    """Decide, sign and record ``outcome``; the recorded verification."""
    backup = outcome.backup
    findings = outcome.findings
    ok = decide(findings, checked=outcome.checked)
    finished = now()
    verification_id = _new_id(outcome.started)
    # which mode ran is part of what was checked: signed (the predicate's coverage), in the
    # catalog row (its coverage) and in the ledger event (which vouches later fast runs)
    coverage = {
        **outcome.coverage,
        "mode": outcome.mode,
        "vouched_by": outcome.vouched_by,
        "vouched_by_action": outcome.vouched_by_action,
    }
    predicate = VerificationPredicate(
        verification_id=verification_id,
        backup_id=backup.id,
        manifest_sha256=backup.manifest_sha256,
        kind=outcome.kind,
        ok=ok,
        started_at=outcome.started,
        finished_at=finished,
        sample=None
        if outcome.sample_percent is None or outcome.seed is None
        else VerificationSample(percent=outcome.sample_percent, seed=outcome.seed),
        coverage=coverage,
        against_source=outcome.against,
        findings=findings,
        tool=ToolInfo(name="affidavit", version=__version__),
    )
    statement = Statement(
        subjects=_subjects(outcome),
        predicate_type=VERIFICATION_PREDICATE_TYPE,
        predicate=predicate.to_predicate(),
    )
    with app.change() as change:
        envelope = attest_and_record(change, statement)
        verification = Verification(
            id=verification_id,
            backup_id=backup.id,
            kind=outcome.kind,
            started_at=outcome.started,
            finished_at=finished,
            ok=ok,
            findings=findings,
            sample_percent=outcome.sample_percent,
            sample_seed=outcome.seed,
            coverage=coverage,
            envelope=envelope.to_json(),
        )
        change.uow.checks.add_verification(verification)
        change.record(
            "verification.completed",
            f"backup:{backup.id}",
            {
                "verification_id": verification_id,
                "kind": outcome.kind,
                "ok": ok,
                "findings": sorted({f.code for f in findings}),
                "sample_seed": outcome.seed,
                "artifacts_checked": outcome.coverage.get("artifacts_checked"),
                "payload_sha256": sha256_hex(envelope.payload),
                "mode": outcome.mode,
                "vouched_by": outcome.vouched_by,
                "vouched_by_action": outcome.vouched_by_action,
                "manifest_sha256": outcome.manifest_sha256,
                "tables_proven": outcome.tables_proven and ok,
            },
        )
    return verification


def list_verifications(app: App, backup_id: str | None = None) -> list[Verification]:
    """Recorded verifications (of one backup), newest first."""
    with app.read() as uow:
        if backup_id is not None:
            uow.backups.get(backup_id)
        return uow.checks.verifications(backup_id)


def _subjects(outcome: Outcome) -> tuple[Subject, ...]:
    """The artifacts the verification read, by their ciphertext digests as read; the
    backup's manifest when it could read none."""
    subjects = [Subject(name=path, sha256=sha) for path, sha in sorted(outcome.observed.items())]
    if outcome.copy_path is not None and outcome.copy_sha256 is not None:
        subjects.append(Subject(name=outcome.copy_path, sha256=outcome.copy_sha256))
    if subjects:
        return tuple(subjects)
    backup = outcome.backup
    manifest = Subject(
        name=f"backup:{backup.id}/manifest",
        sha256=backup.manifest_sha256 or sha256_hex(backup.manifest or b""),
    )
    return (manifest,)


def _new_id(moment: datetime) -> str:
    return f"vf-{moment.strftime('%Y%m%dT%H%M%SZ')}-{os.urandom(3).hex()}"
