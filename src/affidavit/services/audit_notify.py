"""Reminders of evidence requests: ``affidavit audit remind`` (for cron, like ``run-due``;
docs/audit.md, "SLA and reminders").

A request that waits for its owners (open, in progress or returned) in an open engagement is
reminded of twice at most: ``before``, from ``audit_remind_days_before`` days before its due
date, and ``overdue``, once the due day has passed. Each reminder goes to every configured
channel:

- **e-mail** over SMTP (``audit_smtp_*``; STARTTLS unless turned off, a login when a user is
  set) to ``audit_remind_to`` and, when overdue, to the auditor's address;
- a **webhook**: an HTTP POST of JSON to ``audit_webhook_url`` with the header
  ``X-Affidavit-Signature: sha256=<HMAC-SHA-256 of the body under audit_webhook_secret>``.

A reminder delivered to every channel is recorded ``audit.reminder_sent`` (its kind and
channels), and a recorded one is never sent again; one that failed on any channel is not
recorded and is sent again by the next run (at least once, never silently lost).
"""

from __future__ import annotations

import json
import smtplib
import ssl
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from email.message import EmailMessage
from typing import Any, Final

from affidavit.config import Settings
from affidavit.crypto.mac import signature_header
from affidavit.errors import InputError, OperationError
from affidavit.models.audit import (
    REMINDER_SENT,
    REQUEST_PREFIX,
    Engagement,
    EvidenceRequest,
    RequestState,
)
from affidavit.models.identity import Principal
from affidavit.models.permissions import Permission
from affidavit.services.alerts import WEBHOOK_OPENER
from affidavit.services.audit import read_audit
from affidavit.services.context import App
from affidavit.services.principals import authorize

SIGNATURE_HEADER: Final = "X-Affidavit-Signature"
_TIMEOUT: Final = 10.0
_WAITING: Final = frozenset({RequestState.OPEN, RequestState.IN_PROGRESS, RequestState.RETURNED})


@dataclass(frozen=True, slots=True, kw_only=True)
class Due:
    """A reminder that is due."""

    kind: str  # before, overdue
    request: EvidenceRequest
    engagement: Engagement

    def payload(self, now: datetime) -> dict[str, Any]:
        """The webhook's JSON body."""
        return {
            "event": "audit.reminder",
            "kind": self.kind,
            "at": now.isoformat(),
            "engagement": self.engagement.id,
            "request": {
                "id": self.request.id,
                "title": self.request.title,
                "state": self.request.state.value,
                "due": self.request.due.isoformat(),
                "overdue": self.request.overdue(now),
            },
        }


@dataclass
class RemindResult:
    """What a run sent and what failed."""

    sent: list[dict[str, Any]] = field(default_factory=list)
    failed: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """JSON-ready."""
        return {"sent": self.sent, "failed": self.failed}


def due_reminders(
    folded_requests: dict[str, EvidenceRequest],
    engagements: dict[str, Engagement],
    *,
    days_before: int,
    now: datetime,
) -> list[Due]:
    """The reminders due at ``now`` and not recorded yet."""
    out: list[Due] = []
    for request in sorted(folded_requests.values(), key=lambda r: r.seq):
        engagement = engagements[request.engagement]
        if not engagement.active(now) or request.state not in _WAITING:
            continue
        if now >= request.due_by:
            if not request.reminded("overdue"):
                out.append(Due(kind="overdue", request=request, engagement=engagement))
        elif now >= request.due_by - timedelta(days=days_before) and not request.reminded("before"):
            out.append(Due(kind="before", request=request, engagement=engagement))
    return out


def _channels(settings: Settings) -> list[str]:
    found = []
    if settings.audit_smtp_host:
        if not settings.audit_smtp_from:
            raise InputError("e-mail reminders need a From address", hint="set audit_smtp_from")
        found.append("email")
    if settings.audit_webhook_url:
        if settings.audit_webhook_secret is None:
            raise InputError(
                "the reminder webhook needs a signing secret",
                hint="set AFFIDAVIT_AUDIT_WEBHOOK_SECRET",
            )
        found.append("webhook")
    if not found:
        raise InputError(
            "no reminder channel is configured",
            hint="set audit_smtp_host (and audit_smtp_from) or audit_webhook_url",
        )
    return found


def send_email(settings: Settings, to: list[str], subject: str, body: str) -> None:
    """Send one message over SMTP (STARTTLS unless turned off; a login when a user is set);
    :class:`OperationError` when it cannot be sent."""
    message = EmailMessage()
    message["From"] = settings.audit_smtp_from
    message["To"] = ", ".join(to)
    message["Subject"] = subject
    message.set_content(body)
    try:
        with smtplib.SMTP(settings.audit_smtp_host, settings.audit_smtp_port,
                          timeout=_TIMEOUT) as smtp:  # fmt: skip
            if settings.audit_smtp_starttls:
                smtp.starttls(context=ssl.create_default_context())
            if settings.audit_smtp_username:
                password = settings.audit_smtp_password
                smtp.login(
                    settings.audit_smtp_username,
                    password.get_secret_value() if password is not None else "",
                )
            smtp.send_message(message)
    except (smtplib.SMTPException, OSError) as exc:
        raise OperationError(
            f"the SMTP server {settings.audit_smtp_host}:{settings.audit_smtp_port} did not "
            f"take the reminder: {exc}",
            hint="check the audit_smtp_* settings",
        ) from exc


def post_webhook(settings: Settings, payload: dict[str, Any]) -> None:
    """POST ``payload`` as JSON, signed; :class:`OperationError` unless a 2xx answers."""
    secret = settings.audit_webhook_secret
    assert secret is not None
    body = json.dumps(payload, sort_keys=True, separators=(",", ":")).encode("utf-8")
    request = urllib.request.Request(  # noqa: S310 - an http(s) URL (checked by the settings)
        settings.audit_webhook_url,
        data=body,
        method="POST",
        headers={
            "Content-Type": "application/json",
            "User-Agent": "affidavit-reminders",
            SIGNATURE_HEADER: signature_header(secret.get_secret_value().encode(), body),
        },
    )
    try:
        with WEBHOOK_OPENER.open(request, timeout=_TIMEOUT) as answer:  # never a redirect
            status = int(answer.status)
    except urllib.error.HTTPError as exc:
        status = exc.code
    except (urllib.error.URLError, OSError) as exc:
        raise OperationError(
            f"the reminder webhook could not be reached: {exc}", hint="check audit_webhook_url"
        ) from exc
    if not 200 <= status < 300:
        raise OperationError(f"the reminder webhook answered {status}")


def _text(due: Due, now: datetime) -> tuple[str, str]:
    request = due.request
    if due.kind == "overdue":
        subject = f"[affidavit] OVERDUE evidence request {request.id}: {request.title}"
        lead = f"The evidence request below was due on {request.due.isoformat()} and is overdue."
    else:
        subject = f"[affidavit] Evidence request {request.id} due {request.due.isoformat()}"
        lead = f"The evidence request below is due on {request.due.isoformat()}."
    body = "\n".join(
        [
            lead,
            "",
            f"Request:    {request.id}",
            f"Title:      {request.title}",
            f"State:      {request.state.value}",
            f"Engagement: {due.engagement.id} ({due.engagement.framework})",
            f"Items:      {'; '.join(request.items) or '-'}",
            "",
            f"Answer it with: affidavit audit request answer {request.id} ...",
            f"(sent {now.isoformat(timespec='seconds')})",
        ]
    )
    return subject, body


def remind(app: App, principal: Principal, *, now: datetime) -> RemindResult:
    """Send every reminder due at ``now`` and record each one delivered (see the module
    docstring). An authenticated caller needs ``schedule.run_due``; the local OS user (cron
    on the host) runs it as ``run-due`` does."""
    if principal.authenticated:
        authorize(principal, Permission.SCHEDULE_RUN)
    settings = app.settings
    channels = _channels(settings)
    with app.read() as uow:
        folded = read_audit(uow)
        addresses = {a.id: a.email for a in uow.identities.accounts() if a.email}
    result = RemindResult()
    for due in due_reminders(folded.requests, folded.engagements,
                             days_before=settings.audit_remind_days_before, now=now):  # fmt: skip
        to = list(settings.audit_remind_to)
        auditor = addresses.get(due.engagement.auditor_id)
        if due.kind == "overdue" and auditor and auditor not in to:
            to.append(auditor)
        try:
            if "email" in channels:
                if not to:
                    raise InputError(
                        "an e-mail reminder has nobody to go to", hint="set audit_remind_to"
                    )
                subject, body = _text(due, now)
                send_email(settings, to, subject, body)
            if "webhook" in channels:
                post_webhook(settings, due.payload(now))
        except (OperationError, InputError) as exc:
            result.failed.append({"request": due.request.id, "kind": due.kind,
                                  "error": exc.message})  # fmt: skip
            continue
        with app.change() as change:
            again = read_audit(change.uow).requests[due.request.id]
            if again.reminded(due.kind):  # a concurrent run recorded it first
                continue
            change.record(
                REMINDER_SENT,
                f"{REQUEST_PREFIX}{due.request.id}",
                {
                    "engagement": due.engagement.id,
                    "kind": due.kind,
                    "channels": channels,
                    "recipients": len(to) if "email" in channels else 0,
                    "due": due.request.due.isoformat(),
                    "at": now.isoformat(),
                },
            )
        result.sent.append({"request": due.request.id, "kind": due.kind, "channels": channels})
    return result
