"""Rendering a page: the Jinja2 environment (autoescape on, strict undefined), the filters
every template shares, and :func:`render`, which gives each page the layout's context: who
is logged in, the navigation they may follow, and the session's anti-CSRF token for forms.

Nothing here decides anything: the routes call the services and hand their results (or the
views of :mod:`affidavit.server.web.dashboard`) to a template.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

import jinja2
from markupsafe import Markup
from starlette.responses import HTMLResponse, Response

from affidavit.models.identity import Principal
from affidavit.models.permissions import Permission
from affidavit.render.chart import duration_label
from affidavit.render.text import message_html, utc_text
from affidavit.server.gates import Caller, Via
from affidavit.services import identity

HTML_TYPE: Final = "text/html; charset=utf-8"


@dataclass(frozen=True, slots=True)
class NavItem:
    """One link of the navigation, shown to those who hold its permission."""

    path: str
    label: str
    permission: Permission


NAV: Final = (
    NavItem("/", "Dashboard", Permission.BACKUP_READ),
    NavItem("/approvals", "Approvals", Permission.REQUEST_READ),
    NavItem("/sources", "Sources", Permission.SOURCE_READ),
    NavItem("/backups", "Backups", Permission.BACKUP_READ),
    NavItem("/verifications", "Verifications", Permission.BACKUP_READ),
    NavItem("/drills", "Drills", Permission.BACKUP_READ),
    NavItem("/findings", "Findings", Permission.POLICY_READ),
    NavItem("/exceptions", "Exceptions", Permission.POLICY_READ),
    NavItem("/ledger", "Ledger", Permission.LEDGER_READ),
    NavItem("/calendar", "Calendar", Permission.CALENDAR_READ),
    NavItem("/audit", "Audit", Permission.AUDIT_READ),
    NavItem("/audit/requests", "Evidence requests", Permission.AUDIT_READ),
)


def _when(value: object) -> str:
    """``2026-12-05 09:00 UTC`` (``—`` for none)."""
    if isinstance(value, datetime):
        return utc_text(value)
    if isinstance(value, str) and value:
        try:
            return utc_text(datetime.fromisoformat(value.replace("Z", "+00:00")))
        except ValueError:
            return value
    return "—"


def _day(value: object) -> str:
    """The date part of :func:`_when` (``2026-12-05``)."""
    return _when(value).split(" ", 1)[0]


def _clock(value: object) -> str:
    """The time part of :func:`_when` (``09:00 UTC``)."""
    parts = _when(value).split(" ", 1)
    return parts[1] if len(parts) > 1 else ""


def _iso(value: object) -> str:
    return value.astimezone(UTC).isoformat() if isinstance(value, datetime) else str(value or "")


def _ago(value: object, now: datetime | None = None) -> str:
    """How long ago (or from now) ``value`` is, as of this rendering."""
    if not isinstance(value, datetime):
        return "—"
    delta = ((now or datetime.now(UTC)) - value).total_seconds()
    text = duration_label(abs(delta))
    return f"{text} ago" if delta >= 0 else f"in {text}"


def _seconds(value: object) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return "—"
    return duration_label(float(value))


def _message(value: object, written_at: object = None) -> Markup:
    at = written_at if isinstance(written_at, datetime) else None
    return Markup(message_html("" if value is None else str(value), at))  # noqa: S704 - escaped


def _percent(value: object) -> str:
    return f"{value:.1%}" if isinstance(value, float) else "—"


@functools.cache
def environment() -> jinja2.Environment:
    """The templates of :mod:`affidavit.server.web` (autoescaped: every value is untrusted)."""
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("affidavit.server.web", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(
        when=_when,
        day=_day,
        clock=_clock,
        iso=_iso,
        ago=_ago,
        seconds=_seconds,
        message=_message,
        percent=_percent,
    )
    return env


def render(
    template: str,
    *,
    caller: Caller | None = None,
    principal: Principal | None = None,
    status: int = 200,
    title: str,
    active: str = "",
    **context: Any,
) -> Response:
    """The page ``template`` with the layout's context (``principal`` defaults to the
    caller's, as after a step-up that renewed it)."""
    who = principal or (caller.principal if caller is not None else None)
    csrf = (
        identity.csrf_token(caller.secret)
        if caller is not None and caller.via is Via.COOKIE
        else None
    )
    nav = [n for n in NAV if who is not None and who.holds(n.permission)]
    body = (
        environment()
        .get_template(template)
        .render(
            title=title,
            principal=who,
            nav=nav,
            active=active,
            csrf_token=csrf,
            now=datetime.now(UTC),
            **context,
        )
    )
    return HTMLResponse(body, status_code=status, media_type=HTML_TYPE)


def landing(principal: Principal, target: str = "/") -> str:
    """Where a login goes: ``target``, except that the dashboard (``/``, the default) of a
    person who may not read it is the first page the navigation offers them (an auditor's
    engagements)."""
    if target != "/" or principal.holds(Permission.BACKUP_READ):
        return target
    return next((n.path for n in NAV if principal.holds(n.permission)), target)
