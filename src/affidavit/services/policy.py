"""Policy as code: propose and approve policy versions (two people), and check every control
against what really happened, turning failures into findings that persist.

A proposed version takes effect only once someone other than its proposer approves it; both
steps are ledger events committed with their catalog rows. ``check`` records its results
(``check_runs``), opens a finding for every new failure, refreshes the ones still failing and
resolves the ones whose control passes again — each step a ledger event in one transaction.
A check that opens findings raises one alert (ledger + configured webhooks).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import rfc8785

from affidavit.catalog.governance import GovernanceRepository
from affidavit.crypto.digest import sha256_hex
from affidavit.errors import AccessDenied, AlreadyExists, InputError, NotFound
from affidavit.models.approval import GatedOperation
from affidavit.models.governance import (
    CheckRun,
    ControlFinding,
    FindingStatus,
    FindingStep,
    PolicyVersion,
    Severity,
    same_person,
)
from affidavit.models.progress import Reporter
from affidavit.policy.controls import CONTROL_IDS, CONTROLS, Control, check_framework
from affidavit.policy.document import MAX_POLICY_BYTES, Policy, parse_policy
from affidavit.policy.rules import ControlResult, Status, evaluate, passed
from affidavit.services.alerts import raise_alert
from affidavit.services.approvals import backed_exceptions, policy_standing
from affidavit.services.context import App, Change
from affidavit.services.leases import reclaim_abandoned
from affidavit.services.policy_facts import gather_facts, policy_in_force
from affidavit.services.requests import Authority, gate

DEFAULT_SLA_DAYS = {Severity.CRITICAL: 1, Severity.HIGH: 7, Severity.MEDIUM: 30, Severity.LOW: 90}


def _now() -> datetime:
    return datetime.now(UTC)


def _new_id(prefix: str) -> str:
    return f"{prefix}-{os.urandom(4).hex()}"


def list_controls(framework: str | None = None) -> list[Control]:
    """The controls catalog (only those mapped to ``framework`` when given)."""
    if framework is None:
        return list(CONTROLS)
    check_framework(framework)
    return [c for c in CONTROLS if c.maps_to(framework)]


def read_policy_file(path: Path) -> str:
    """The text of a policy file (a regular file, UTF-8, at most MAX_POLICY_BYTES; never
    reads more than that); raise :class:`InputError`."""
    hint = "give the path of a policy.toml"
    try:
        # checked before opening: opening a FIFO would block until someone writes to it
        if not stat.S_ISREG(path.stat().st_mode):
            raise InputError(f"{path} is not a regular file", hint=hint)
        with open(path, "rb") as fh:
            raw = fh.read(MAX_POLICY_BYTES + 1)
    except FileNotFoundError:
        raise InputError(f"{path} does not exist", hint=hint) from None
    except IsADirectoryError:
        raise InputError(f"{path} is a folder", hint=hint) from None
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror}") from None
    if len(raw) > MAX_POLICY_BYTES:
        raise InputError(f"{path} is larger than {MAX_POLICY_BYTES // 1024} KiB")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise InputError(f"{path} is not UTF-8 text") from None


def validate_policy(path: Path) -> Policy:
    """Parse and validate a policy file without recording anything."""
    return parse_policy(read_policy_file(path), name=path.name, controls=CONTROL_IDS)


def propose_policy(app: App, path: Path) -> PolicyVersion:
    """Record a new policy version as proposed (``policy.proposed``) from a policy file."""
    return propose_policy_text(app, read_policy_file(path), name=path.name)


def propose_policy_text(app: App, text: str, *, name: str) -> PolicyVersion:
    """Record a new policy version as proposed (``policy.proposed``) from a policy file's
    ``text`` (``name``: the file's, in error messages; through the API the client reads the
    file and sends its text)."""
    if len(text.encode("utf-8")) > MAX_POLICY_BYTES:
        raise InputError(f"{name[:100]} is larger than {MAX_POLICY_BYTES // 1024} KiB")
    parse_policy(text, name=name, controls=CONTROL_IDS)
    digest = sha256_hex(text.encode("utf-8"))
    with app.change() as change:
        gov = change.uow.governance
        for existing in gov.policy_versions():
            if existing.sha256 == digest and not existing.approved:
                raise AlreadyExists(
                    f"this policy is already proposed as version {existing.version}",
                    hint=f"ask another person to run `affidavit policy approve {existing.version}`",
                )
        version = gov.next_policy_version()
        at = _now()
        event = change.record(
            "policy.proposed", f"policy:v{version}", {"version": version, "sha256": digest}
        )
        proposed = PolicyVersion(
            version=version,
            sha256=digest,
            text=text,
            proposed_by=change.actor,
            proposed_at=at,
            proposal_seq=event.seq,
        )
        gov.add_policy_version(proposed)
    return proposed


def approve_policy(app: App, version: int, *, authority: Authority | None = None) -> PolicyVersion:
    """Approve a proposed version; it takes effect now. The approver must not be the proposer
    (separation of duties: :class:`AccessDenied`). A gated operation
    (:mod:`affidavit.services.requests`): through the server a second approver confirms it."""
    with app.read() as uow:  # refused before a request is recorded
        _approvable(uow.governance, version, app.actor)
    allowed = gate(
        app,
        GatedOperation.POLICY_APPROVE,
        {"version": version},
        target=f"policy:v{version}",
        authority=authority,
    )
    with app.change() as change:
        gov = change.uow.governance
        proposed = _approvable(gov, version, change.actor)
        at = _now()
        event = change.record(
            "policy.approved",
            f"policy:v{version}",
            {
                "version": version,
                "sha256": proposed.sha256,
                "proposed_by": proposed.proposed_by,
                **allowed.event_details(),
            },
        )
        gov.approve_policy_version(version, by=change.actor, at=at, seq=event.seq)
        allowed.seal(change)
        return gov.policy_version(version)


def _approvable(gov: GovernanceRepository, version: int, actor: str) -> PolicyVersion:
    """The proposed version ``actor`` may approve; raises when it may not."""
    proposed = gov.policy_version(version)
    if proposed.approved:
        raise AlreadyExists(
            f"policy version {version} was already approved by {proposed.approved_by}"
        )
    if same_person(proposed.proposed_by, actor):
        raise AccessDenied(
            f"{actor} proposed policy version {version} and cannot also approve it",
            hint="separation of duties: another person approves (AFFIDAVIT_ACTOR names who "
            "is acting)",
        )
    effective = gov.effective_policy()
    if effective is not None and effective.version > version:
        raise InputError(
            f"version {effective.version} is already in effect; {version} is older",
            hint="propose the file again to make it the newest version",
        )
    parse_policy(proposed.text, name=f"policy v{version}", controls=CONTROL_IDS)
    return proposed


def policy_versions(app: App) -> list[PolicyVersion]:
    """Every version, oldest first."""
    with app.read() as uow:
        return uow.governance.policy_versions()


def policy_version(app: App, version: int | None = None) -> PolicyVersion:
    """Version ``version`` with its text, or (None) the newest approved one; raise
    :class:`NotFound` when there is no such version."""
    chosen = [
        v
        for v in policy_versions(app)
        if (v.version == version if version is not None else v.approved)
    ]
    if not chosen:
        raise NotFound(
            "no such policy version" if version is not None else "no policy version is in effect",
            hint="`affidavit policy list` shows the versions",
        )
    return chosen[-1]


def effective_policy(app: App) -> tuple[PolicyVersion, Policy] | None:
    """The version in effect and its parsed policy: the newest version the ledger records
    approved by a second person, when the catalog still holds its approved text (else None;
    ``policy check`` says why)."""
    with app.read() as uow:
        in_force = policy_standing(uow).in_force
        if in_force is None or in_force.text is None:
            return None
        version = uow.governance.policy_version(in_force.version)
    return version, parse_policy(
        version.text, name=f"policy v{version.version}", controls=CONTROL_IDS
    )


# -- policy check -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class CheckOutcome:
    """What a policy check found and what it did with the findings."""

    run_id: str
    at: datetime
    policy_version: int | None
    ok: bool
    results: list[ControlResult]
    opened: list[ControlFinding] = field(default_factory=list)
    still_open: list[ControlFinding] = field(default_factory=list)
    resolved: list[str] = field(default_factory=list)  # finding ids
    seq: int | None = None

    def to_json(self) -> dict[str, Any]:
        """``{"ok", "run_id", "policy_version", "summary", "results", "findings", ...}``."""
        counts: dict[str, int] = {}
        for r in self.results:
            counts[r.status.value] = counts.get(r.status.value, 0) + 1
        return {
            "ok": self.ok,
            "run_id": self.run_id,
            "at": self.at.isoformat(),
            "policy_version": self.policy_version,
            "summary": counts,
            "results": [r.to_json() for r in self.results],
            "findings": [f.to_json() for f in [*self.opened, *self.still_open]],
            "opened": [f.id for f in self.opened],
            "resolved": self.resolved,
            "seq": self.seq,
        }


def check_policy(
    app: App, *, live: bool = True, now: datetime | None = None, reporter: Reporter | None = None
) -> CheckOutcome:
    """Evaluate every control and record the results and findings (one transaction). Backup
    runs found dead are recorded abandoned first, so the check sees them as such."""
    reclaim_abandoned(app)
    now = now or _now()
    facts = gather_facts(app, now=now, live=live, reporter=reporter)
    # the version the ledger records approved, with its approved text (services.approvals);
    # the catalog's rows do not choose it
    policy = policy_in_force(facts)
    with app.read() as uow:
        exceptions, _rejected = backed_exceptions(uow, uow.governance.exceptions())
    results = evaluate(facts, policy, exceptions)
    ok = passed(results)
    run_id = _new_id("chk")
    sla = dict(policy.sla_days) if policy is not None else DEFAULT_SLA_DAYS
    with app.change() as change:
        gov = change.uow.governance
        unresolved = gov.findings(status=[FindingStatus.OPEN, FindingStatus.ACKNOWLEDGED])
        by_key = {(f.control, f.subject): f for f in unresolved}
        payload = [r.to_json() for r in results]
        event = change.record(
            "policy.checked",
            f"check:{run_id}",
            {
                "run_id": run_id,
                "policy_version": facts.policy.version if facts.policy else None,
                "ok": ok,
                "results_sha256": sha256_hex(rfc8785.dumps(payload)),
                "failed": sum(r.failed for r in results),
            },
        )
        gov.add_check_run(
            CheckRun(
                id=run_id,
                at=now,
                actor=change.actor,
                policy_version=facts.policy.version if facts.policy else None,
                ok=ok,
                results=tuple(payload),
                seq=event.seq,
            )
        )
        opened, still_open = [], []
        for r in results:
            if not r.failed:
                continue
            existing = by_key.pop((r.control, r.subject), None)
            evidence = [*r.evidence, f"ledger:{event.seq}"]
            if existing is not None:
                gov.touch_finding(
                    existing.id, at=now, message=r.message, owner=r.owner, evidence=evidence
                )
                still_open.append(gov.finding(existing.id))
            else:
                opened.append(_open_finding(change, r, now, sla, evidence))
        resolved = _resolve_passing(change, by_key, results, now, event.seq)
    if opened:
        _alert_new_findings(app, run_id, opened)
    return CheckOutcome(
        run_id=run_id,
        at=now,
        policy_version=facts.policy.version if facts.policy else None,
        ok=ok,
        results=results,
        opened=opened,
        still_open=still_open,
        resolved=resolved,
        seq=event.seq,
    )


def _alert_new_findings(app: App, run_id: str, opened: Sequence[ControlFinding]) -> None:
    """One alert per check that opened findings (not per run that sees them again)."""
    worst = min(opened, key=lambda f: f.severity.rank).severity
    raise_alert(
        app,
        kind="policy.findings",
        subject=f"check:{run_id}",
        summary=f"{len(opened)} new finding(s), worst {worst.value}",
        details={
            "findings": [
                {
                    "id": f.id,
                    "control": f.control,
                    "subject": f.subject,
                    "severity": f.severity.value,
                    "owner": f.owner,
                    "due": f.due_at.isoformat(),
                }
                for f in opened
            ]
        },
    )


def _open_finding(
    change: Change,
    r: ControlResult,
    now: datetime,
    sla: dict[Severity, int],
    evidence: list[str],
) -> ControlFinding:
    finding_id = _new_id("F")
    due = now + timedelta(days=sla.get(r.severity, 30))
    event = change.record(
        "finding.opened",
        f"finding:{finding_id}",
        {
            "control": r.control,
            "subject": r.subject,
            "severity": r.severity.value,
            "owner": r.owner,
            "due": due.isoformat(),
            "message": r.message,
        },
    )
    finding = ControlFinding(
        id=finding_id,
        control=r.control,
        subject=r.subject,
        severity=r.severity,
        owner=r.owner,
        message=r.message,
        status=FindingStatus.OPEN,
        opened_at=now,
        last_seen_at=now,
        due_at=due,
        evidence=tuple(evidence),
        trail=(
            FindingStep(
                at=now, actor=change.actor, status=FindingStatus.OPEN, note=r.message,
                seq=event.seq,
            ),
        ),
    )  # fmt: skip
    change.uow.governance.add_finding(finding)
    return finding


def _resolve_passing(
    change: Change,
    unresolved: dict[tuple[str, str], ControlFinding],
    results: Sequence[ControlResult],
    now: datetime,
    check_seq: int,
) -> list[str]:
    """Resolve the unresolved findings whose control now passes (or whose subject is gone)."""
    outcome = {(r.control, r.subject): r for r in results}
    evaluated = {r.control for r in results if r.status is not Status.NOT_EVALUATED}
    resolved = []
    for (control, subject), finding in unresolved.items():
        r = outcome.get((control, subject))
        if r is not None and r.status is Status.PASS:
            note = f"control passes again (check at ledger seq {check_seq}): {r.message}"
        elif r is not None and r.status is Status.EXCEPTED:
            note = f"excepted by {r.exception} (check at ledger seq {check_seq}): {r.message}"
        elif r is None and control in evaluated:
            note = f"subject no longer evaluated by the control (check at ledger seq {check_seq})"
        else:
            continue
        resolve_finding_in(change, finding.id, note=note, at=now)
        resolved.append(finding.id)
    return resolved


def resolve_finding_in(change: Change, finding_id: str, *, note: str, at: datetime) -> None:
    """Resolve a finding inside ``change`` (ledger event + trail step)."""
    event = change.record("finding.resolved", f"finding:{finding_id}", {"note": note})
    change.uow.governance.add_finding_step(
        finding_id,
        FindingStep(
            at=at, actor=change.actor, status=FindingStatus.RESOLVED, note=note, seq=event.seq
        ),
    )
