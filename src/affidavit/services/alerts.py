"""Alerts: a failed check or an overdue one is recorded (catalog row plus ``alert.raised``
ledger event, one transaction) and then POSTed as JSON to every configured webhook.

Delivery never breaks the caller: each webhook gets a short timeout and a few attempts; every
attempt (status or error) is recorded on the alert with an ``alert.delivery`` ledger event. A
webhook URL is recorded without its credentials, path or query (those often hold the token).

The payload (``Content-Type: application/json``)::

    {"kind": "drill.failed", "subject": "backup:bk-...", "summary": "one line",
     "details": {...}, "time": "2026-11-28T08:00:00+00:00", "affidavit_version": "0.1.0"}
"""

from __future__ import annotations

import http.client
import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final
from urllib.parse import urlsplit

from affidavit import __version__
from affidavit.crypto.digest import sha256_hex
from affidavit.errors import InputError
from affidavit.models.checks import Alert
from affidavit.services.context import App

#: seconds to wait for one webhook request
WEBHOOK_TIMEOUT = 5.0
#: requests per webhook and alert (the first one plus retries)
WEBHOOK_ATTEMPTS = 3
#: seconds before the n-th retry: BACKOFF * 2**(n-1)
WEBHOOK_BACKOFF = 0.5


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True, kw_only=True)
class Delivery:
    """One attempt to deliver an alert to one webhook."""

    webhook: str  # redacted: scheme://host[:port]/...
    webhook_id: str  # first 12 hex of SHA-256 of the full URL: tells webhooks apart
    attempt: int
    ok: bool
    status: int | None
    error: str | None
    at: datetime

    def to_json(self) -> dict[str, Any]:
        """JSON-ready (what the catalog keeps)."""
        return {
            "webhook": self.webhook,
            "webhook_id": self.webhook_id,
            "attempt": self.attempt,
            "ok": self.ok,
            "status": self.status,
            "error": self.error,
            "at": self.at.isoformat(),
        }


def redact_webhook(url: str) -> str:
    """``https://hooks.example.com/…``: scheme, host and port only."""
    parts = urlsplit(url)
    host = parts.hostname or "?"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}/…"


def alert_payload(
    *, kind: str, subject: str, summary: str, details: Mapping[str, Any], at: datetime
) -> dict[str, Any]:
    """The JSON body POSTed to webhooks."""
    return {
        "kind": kind,
        "subject": subject,
        "summary": summary,
        "details": dict(details),
        "time": at.isoformat(),
        "affidavit_version": __version__,
    }


Poster = Callable[[str, bytes, float], int]


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Never follow a redirect: urllib would turn the POST into a GET of wherever the answer
    points (the server's own network included) and report that GET's 200 as delivered."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # the 3xx is then raised as an HTTPError: not delivered


WEBHOOK_OPENER: Final = urllib.request.build_opener(_NoRedirect)
"""What every outgoing webhook or OpenLineage POST goes through: redirects are never followed."""


def post_json(url: str, body: bytes, timeout: float) -> int:
    """POST ``body`` to ``url``; return the HTTP status (raises on network errors, and
    :class:`urllib.error.HTTPError` for an answer that is not 2xx, a redirect included:
    a webhook or OpenLineage endpoint is called at its own URL only)."""
    request = urllib.request.Request(  # noqa: S310 - the scheme is checked (http/https only)
        url,
        data=body,
        method="POST",
        headers={
            "Content-Type": "application/json",
            "User-Agent": f"affidavit/{__version__}",
        },
    )
    with WEBHOOK_OPENER.open(request, timeout=timeout) as response:
        status: int = response.status
        return status


def deliver(
    url: str,
    payload: Mapping[str, Any],
    *,
    attempts: int | None = None,
    timeout: float | None = None,
    backoff: float | None = None,
    post: Poster = post_json,
) -> list[Delivery]:
    """POST ``payload`` to one webhook until a 2xx answer or ``attempts`` are used up; never
    raises. A 4xx answer other than 408/429 is not retried (the request itself is wrong).
    Defaults: :data:`WEBHOOK_ATTEMPTS`, :data:`WEBHOOK_TIMEOUT`, :data:`WEBHOOK_BACKOFF`."""
    attempts = WEBHOOK_ATTEMPTS if attempts is None else max(1, attempts)
    timeout = WEBHOOK_TIMEOUT if timeout is None else timeout
    backoff = WEBHOOK_BACKOFF if backoff is None else backoff
    body = json.dumps(payload, sort_keys=True, ensure_ascii=False).encode("utf-8")
    shown, wid = redact_webhook(url), sha256_hex(url.encode("utf-8"))[:12]
    out: list[Delivery] = []
    for attempt in range(1, attempts + 1):
        status: int | None = None
        error: str | None = None
        try:
            status = post(url, body, timeout)
        except urllib.error.HTTPError as exc:
            status, error = exc.code, f"HTTP {exc.code}"
        except (urllib.error.URLError, OSError, ValueError, http.client.HTTPException) as exc:
            reason = getattr(exc, "reason", exc)
            error = f"{type(exc).__name__}: {reason}"[:300]
        ok = status is not None and 200 <= status < 300
        out.append(
            Delivery(
                webhook=shown,
                webhook_id=wid,
                attempt=attempt,
                ok=ok,
                status=status,
                error=error if not ok else None,
                at=_now(),
            )
        )
        if ok or (status is not None and 400 <= status < 500 and status not in (408, 429)):
            break
        if attempt < attempts:
            time.sleep(backoff * 2 ** (attempt - 1))
    return out


def raise_alert(
    app: App,
    *,
    kind: str,
    subject: str,
    summary: str,
    details: Mapping[str, Any] | None = None,
    post: Poster = post_json,
) -> Alert:
    """Record an alert (catalog + ``alert.raised``, one transaction), then deliver it to every
    configured webhook, recording each attempt. Returns the alert with its deliveries."""
    if not kind or not subject:
        raise InputError("an alert needs a kind and a subject")
    at = _now()
    payload = alert_payload(
        kind=kind, subject=subject, summary=summary, details=details or {}, at=at
    )
    with app.change() as change:
        alert_id = change.uow.checks.add_alert(at=at, kind=kind, subject=subject, payload=payload)
        change.record(
            "alert.raised",
            subject,
            {"alert_id": alert_id, "kind": kind, "summary": summary, "details": payload["details"]},
        )
    for url in app.settings.webhooks:
        attempts = deliver(url, payload, post=post)
        with app.change() as change:
            for attempt in attempts:
                change.uow.checks.record_delivery(alert_id, attempt.to_json())
            last = attempts[-1]
            change.record(
                "alert.delivery",
                subject,
                {
                    "alert_id": alert_id,
                    "webhook": last.webhook,
                    "webhook_id": last.webhook_id,
                    "delivered": last.ok,
                    "attempts": len(attempts),
                    "status": last.status,
                    "error": last.error,
                },
            )
    with app.read() as uow:
        return next(a for a in uow.checks.alerts() if a.id == alert_id)


def list_alerts(app: App) -> list[Alert]:
    """Every alert, newest first."""
    with app.read() as uow:
        return uow.checks.alerts()
