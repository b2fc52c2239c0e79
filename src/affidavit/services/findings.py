"""Findings and exceptions: the remediation trail (open -> acknowledged -> resolved, each step
with a note and its actor) and time-limited exceptions approved by a second person.

Every step is a ledger event committed with its catalog row. A resolved finding stays on
record; if its control fails again, the next policy check opens a new finding.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta

from affidavit.catalog.governance import GovernanceRepository
from affidavit.errors import AccessDenied, AlreadyExists, InputError
from affidavit.models.approval import GatedOperation
from affidavit.models.governance import (
    ControlFinding,
    ExceptionStatus,
    FindingStatus,
    FindingStep,
    PolicyException,
    same_person,
)
from affidavit.policy.controls import UNEXCEPTABLE
from affidavit.policy.controls import control as known_control
from affidavit.services.context import App
from affidavit.services.policy import resolve_finding_in
from affidavit.services.requests import Authority, gate

MAX_EXCEPTION_DAYS = 366
_MAX_NOTE = 2000


def _now() -> datetime:
    return datetime.now(UTC)


def _note(text: str, what: str = "a note") -> str:
    text = text.strip()
    if not text:
        raise InputError(f"{what} is required", hint='--note "what was done and why"')
    if len(text) > _MAX_NOTE or any(ord(ch) < 0x20 and ch not in "\t" for ch in text):
        raise InputError(f"{what} must be one line of at most {_MAX_NOTE} characters")
    return text


def list_findings(app: App, *, status: list[FindingStatus] | None = None) -> list[ControlFinding]:
    """Findings with their trails (all, or of the given statuses)."""
    with app.read() as uow:
        return uow.governance.findings(status=status)


def get_finding(app: App, finding_id: str) -> ControlFinding:
    """One finding."""
    with app.read() as uow:
        return uow.governance.finding(finding_id)


def acknowledge_finding(app: App, finding_id: str, *, note: str) -> ControlFinding:
    """Move an open finding to acknowledged (``finding.acknowledged``)."""
    note = _note(note)
    with app.change() as change:
        gov = change.uow.governance
        finding = gov.finding(finding_id)
        if finding.status is not FindingStatus.OPEN:
            raise InputError(
                f"finding {finding_id} is {finding.status.value}, not open",
                hint="only an open finding can be acknowledged",
            )
        at = _now()
        event = change.record("finding.acknowledged", f"finding:{finding_id}", {"note": note})
        gov.add_finding_step(
            finding_id,
            FindingStep(
                at=at, actor=change.actor, status=FindingStatus.ACKNOWLEDGED, note=note,
                seq=event.seq,
            ),
        )  # fmt: skip
        return gov.finding(finding_id)


def resolve_finding(app: App, finding_id: str, *, note: str) -> ControlFinding:
    """Resolve a finding with a note on the corrective action (``finding.resolved``). If the
    control still fails, the next policy check opens a new finding."""
    note = _note(note)
    with app.change() as change:
        finding = change.uow.governance.finding(finding_id)
        if finding.status is FindingStatus.RESOLVED:
            raise AlreadyExists(f"finding {finding_id} is already resolved")
        resolve_finding_in(change, finding_id, note=note, at=_now())
        return change.uow.governance.finding(finding_id)


# -- exceptions -------------------------------------------------------------------------------


def request_exception(
    app: App, control: str, subject: str, *, reason: str, expires: datetime
) -> PolicyException:
    """Request an exception for ``subject`` (or ``*``) failing ``control`` until ``expires``."""
    known_control(control)
    if control in UNEXCEPTABLE:
        raise InputError(
            f"{control} cannot be excepted",
            hint="the ledger's integrity and an approved policy are preconditions of every "
            "other control; fix the cause instead",
        )
    subject = subject.strip()
    if not subject or len(subject) > 600:
        raise InputError("a subject is required", hint="e.g. dataset:orders/app.orders or '*'")
    reason = _note(reason, "a reason")
    now = _now()
    if expires.tzinfo is None:
        expires = expires.replace(tzinfo=UTC)
    if expires <= now:
        raise InputError(f"--expires {expires:%Y-%m-%d} is not in the future")
    if expires - now > timedelta(days=MAX_EXCEPTION_DAYS):
        raise InputError(
            f"an exception may last at most {MAX_EXCEPTION_DAYS} days",
            hint="request a new one when it expires, so it is reviewed",
        )
    exc = PolicyException(
        id=f"X-{os.urandom(4).hex()}",
        control=control,
        subject=subject,
        reason=reason,
        requested_by=app.actor,
        requested_at=now,
        expires_at=expires,
        status=ExceptionStatus.REQUESTED,
    )
    with app.change() as change:
        change.record(
            "exception.requested",
            f"exception:{exc.id}",
            {
                "control": control,
                "subject": subject,
                "reason": reason,
                "expires": expires.isoformat(),
            },
        )
        change.uow.governance.add_exception(exc)
    return exc


def approve_exception(
    app: App, exc_id: str, *, authority: Authority | None = None
) -> PolicyException:
    """Approve a requested exception; the approver must not be the requester. A gated
    operation (:mod:`affidavit.services.requests`): through the server a second approver
    confirms it."""
    with app.read() as uow:  # refused before a request is recorded
        _approvable(uow.governance, exc_id, app.actor)
    allowed = gate(
        app,
        GatedOperation.EXCEPTION_APPROVE,
        {"exception_id": exc_id},
        target=f"exception:{exc_id}",
        authority=authority,
    )
    with app.change() as change:
        gov = change.uow.governance
        exc = _approvable(gov, exc_id, change.actor)
        change.record(
            "exception.approved",
            f"exception:{exc_id}",
            {
                "control": exc.control,
                "subject": exc.subject,
                "requested_by": exc.requested_by,
                **allowed.event_details(),
            },
        )
        gov.set_exception_status(exc_id, ExceptionStatus.APPROVED, by=change.actor, at=_now())
        allowed.seal(change)
        return gov.exception(exc_id)


def _approvable(gov: GovernanceRepository, exc_id: str, actor: str) -> PolicyException:
    """The requested exception ``actor`` may approve; raises when it may not."""
    exc = gov.exception(exc_id)
    if exc.status is not ExceptionStatus.REQUESTED:
        raise InputError(f"exception {exc_id} is {exc.status.value}, not requested")
    if same_person(exc.requested_by, actor):
        raise AccessDenied(
            f"{actor} requested exception {exc_id} and cannot also approve it",
            hint="separation of duties: another person approves",
        )
    if exc.expires_at <= _now():
        raise InputError(f"exception {exc_id} expired on {exc.expires_at:%Y-%m-%d}")
    return exc


def revoke_exception(app: App, exc_id: str, *, reason: str) -> PolicyException:
    """Withdraw an exception before it expires."""
    reason = _note(reason, "a reason")
    with app.change() as change:
        gov = change.uow.governance
        exc = gov.exception(exc_id)
        if exc.status is ExceptionStatus.REVOKED:
            raise AlreadyExists(f"exception {exc_id} is already revoked")
        change.record("exception.revoked", f"exception:{exc_id}", {"reason": reason})
        gov.set_exception_status(exc_id, ExceptionStatus.REVOKED, at=_now())
        return gov.exception(exc_id)


def list_exceptions(app: App) -> list[PolicyException]:
    """Every exception."""
    with app.read() as uow:
        return uow.governance.exceptions()
