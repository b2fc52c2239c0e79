"""The page routes: each declares its gate like every API route (``affidavit.server.gates``),
calls the services inside ``Caller.acting()`` and renders a template. GETs change nothing;
every form POSTs with the session's anti-CSRF token (:mod:`affidavit.server.web.security`)
and answers with a redirect (post/redirect/get) or the page with what went wrong.

- ``GET|POST /login``: public (the login form carries its own token);
- ``POST /logout``: a logged-in person's own session;
- ``GET /`` (the dashboard), ``/backups``, ``/backups/{backup_id}``, ``/verifications``,
  ``/drills``: ``backup.read``; ``POST /backups/{backup_id}/holds`` (the legal hold form):
  ``hold.add``;
- ``GET /approvals``: ``request.read``; ``POST /approvals/{request_id}/approve|veto``:
  ``request.approve``, and the form's TOTP code (a fresh MFA check, which the service
  requires);
- ``GET /sources``: ``source.read``; ``POST /sources/{name}/backups`` (back up now):
  ``backup.run``; ``/findings``, ``/exceptions``, ``/checks/{run_id}``
  (one policy check's results, where the adherence grid's cells lead): ``policy.read``;
  ``/ledger``: ``ledger.read``;
- ``GET /static/{name}``: public (the stylesheet and the icon);
- the audit pages (``/audit...``: :mod:`.audit_pages`, ``audit.read`` scoped to the viewer's
  engagements, the auditor's own steps, ``audit.respond``) and the calendar's month view
  (``GET /calendar``: :mod:`.calendar_page`, ``calendar.read``).
"""

from __future__ import annotations

import contextlib
import json
from datetime import UTC, datetime, timedelta
from importlib import resources
from typing import Annotated, Final
from urllib.parse import quote

from fastapi import APIRouter, Depends, Path, Query, Request
from starlette.responses import RedirectResponse, Response

from affidavit.errors import AuthenticationFailed, Error, InputError, NotFound, StepUpRequired
from affidavit.models.approval import RequestState
from affidavit.models.backup import BackupStatus
from affidavit.models.governance import FindingStatus
from affidavit.models.identity import Principal, SessionGrant, account_name
from affidavit.models.inventory import Dataset
from affidavit.models.permissions import Permission
from affidavit.render.chart import grid_chart, limit_chart
from affidavit.server.access import note_identity
from affidavit.server.gates import (
    PUBLIC,
    SESSION_COOKIE,
    Caller,
    affidavit_app,
    allow,
    allow_session,
    client_of,
)
from affidavit.server.routes.oidc import STATE_KEY
from affidavit.server.web import audit_pages, calendar_page, dashboard
from affidavit.server.web.pages import landing, render
from affidavit.server.web.security import (
    LOGIN_COOKIE,
    field,
    form_of,
    local_path,
    login_token,
    login_token_matches,
    new_login_value,
    set_login_cookie,
)
from affidavit.services import (
    adherence,
    drill,
    findings,
    identity,
    inventory,
    ledger,
    overview,
    policy,
    requests,
    verify,
)
from affidavit.services import backup as backups
from affidavit.services.principals import require_fresh_mfa

router = APIRouter(include_in_schema=False)
Public = Annotated[None, Depends(PUBLIC)]
Form = Annotated[dict[str, str], Depends(form_of)]
BackupReader = Annotated[Caller, Depends(allow(Permission.BACKUP_READ))]
RequestReader = Annotated[Caller, Depends(allow(Permission.REQUEST_READ))]
Approver = Annotated[Caller, Depends(allow(Permission.REQUEST_APPROVE))]
PolicyReader = Annotated[Caller, Depends(allow(Permission.POLICY_READ))]
Text = Annotated[str | None, Query(max_length=200)]

LIST_LIMIT: Final = 500
OTHERS_SHOWN: Final = 50
CHART_WIDTH: Final = 1000.0  # the pages' charts (they shrink with a narrow window)
STATIC: Final = {
    "app.css": "text/css; charset=utf-8",
    "favicon.svg": "image/svg+xml",
}


def _now() -> datetime:
    return datetime.now(UTC)


# -- static files -----------------------------------------------------------------------------


def _static(name: str) -> bytes:
    return resources.files("affidavit.server.web").joinpath("static", name).read_bytes()


@router.get("/static/{name}")
def static(_: Public, name: str) -> Response:
    """The stylesheet and the icon (a fixed list: nothing else is served from disk)."""
    kind = STATIC.get(name)
    if kind is None:
        raise NotFound(f"no static file {name!r}", hint="the pages link their own files")
    return Response(_static(name), media_type=kind)


# -- logging in and out -----------------------------------------------------------------------


def _oidc_enabled(request: Request) -> bool:
    return getattr(request.app.state, STATE_KEY, None) is not None


def _login_form(
    request: Request, *, next_path: str, name: str = "", error: str | None = None, status: int = 200
) -> Response:
    value = new_login_value()
    response = render(
        "login.html.j2",
        status=status,
        title="Log in",
        login_token=login_token(value),
        next_path=next_path,
        name=name,
        error=error,
        oidc=_oidc_enabled(request),
    )
    set_login_cookie(response, value)
    return response


def _current(request: Request) -> Principal | None:
    """Who the browser's valid session is, if it has one."""
    secret = request.cookies.get(SESSION_COOKIE)
    if not secret:
        return None
    try:
        return identity.authenticate_session(affidavit_app(request), secret)
    except Error:
        return None


@router.get("/login")
def login_page(
    request: Request, _: Public, next: Annotated[str | None, Query(max_length=1000)] = None
) -> Response:
    """The login form (a browser with a valid session goes on to ``next``)."""
    target = local_path(next)
    who = _current(request)
    if who is not None:
        return RedirectResponse(landing(who, target), status_code=303)
    return _login_form(request, next_path=target)


def _tried(name: str) -> str:
    try:
        return account_name(name)
    except InputError:
        return name


def _set_session_cookie(response: Response, grant: SessionGrant) -> None:
    session = grant.session
    response.set_cookie(
        SESSION_COOKIE,
        grant.secret,
        max_age=int((session.absolute_expires_at - session.created_at).total_seconds()),
        path="/",
        secure=True,
        httponly=True,
        samesite="strict",
    )


@router.post("/login")
def login_submit(request: Request, _: Public, form: Form) -> Response:
    """Log in with name, password and TOTP code: a new session (never one the browser
    brought: that one is ended), its cookie, and a redirect to ``next``."""
    target = local_path(form.get("next"))
    name = field(form, "name", limit=200)
    if not login_token_matches(request, field(form, "csrf_token", limit=200)):
        return _login_form(
            request,
            next_path=target,
            name=name,
            status=400,
            error="This login form has expired or was not sent by this page: log in again.",
        )
    password = form.get("password", "")[:1024]
    code = field(form, "totp", limit=64) or None
    if not name or not password:
        return _login_form(
            request, next_path=target, name=name, status=400, error="Enter your name and password."
        )
    app = affidavit_app(request)
    note_identity(request.state, _tried(name), "password")  # a failure is logged so
    try:
        grant = identity.login(app, name, password, code, client=client_of(request))
    except AuthenticationFailed as refused:
        return _login_form(request, next_path=target, name=name, status=401, error=refused.message)
    note_identity(request.state, grant.principal.name, grant.principal.method.value)
    presented = request.cookies.get(SESSION_COOKIE)
    if presented:  # session fixation: the session the browser brought ends here
        with contextlib.suppress(Error):  # not a valid session: nothing to end
            identity.logout(app, identity.authenticate_session(app, presented))
    response = RedirectResponse(landing(grant.principal, target), status_code=303)
    _set_session_cookie(response, grant)
    response.delete_cookie(LOGIN_COOKIE, path="/", secure=True, httponly=True, samesite="strict")
    return response


@router.post("/logout")
def logout(caller: Annotated[Caller, Depends(allow_session())]) -> Response:
    """End this session, forget its cookie, back to the login form."""
    with caller.acting() as app:
        identity.logout(app, caller.principal)
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/", secure=True, httponly=True, samesite="strict")
    return response


# -- the dashboard ----------------------------------------------------------------------------


@router.get("/")
def dashboard_page(caller: BackupReader) -> Response:
    """Backup success rates, RPO, newest verification and drill per dataset, restore times
    against RTOs, open findings, due checks; each figure links to its records."""
    who = caller.principal
    now = _now()
    with caller.acting() as app:
        seen = overview.backup_overview(
            app, since=now - timedelta(days=max(dashboard.WINDOWS)), drills=dashboard.CHART_DRILLS
        )
        datasets = inventory.list_datasets(app) if who.holds(Permission.SOURCE_READ) else []
        reads_policy = who.holds(Permission.POLICY_READ)
        in_force = policy.effective_policy(app) if reads_policy else None
        open_findings = (
            findings.list_findings(app, status=sorted(dashboard.OPEN)) if reads_policy else None
        )
        due = list(overview.due_checks(app)) if who.holds(Permission.SCHEDULE_READ) else None
        adhered = (
            adherence.control_adherence(app, days=dashboard.ADHERENCE_DAYS, now=now)
            if reads_policy
            else None
        )
    bars = dashboard.restore_bars(seen.newest_drills)
    overdue = [d for d in due or [] if d.overdue]
    return render(
        "dashboard.html.j2",
        caller=caller,
        title="Dashboard",
        active="/",
        windows=dashboard.WINDOWS,
        rates=dashboard.overview_rates(seen, now),
        standings=dashboard.overview_standings(
            datasets, seen, policy=in_force[1] if in_force else None, now=now
        ),
        policy_version=in_force[0].version if in_force else None,
        reads_policy=reads_policy,
        chart=limit_chart(
            bars,
            title="Restore time of the newest drills against their RTO",
            chart_id="restores",
            width=CHART_WIDTH,
        ),
        bars=bars,
        findings=dashboard.finding_summary(open_findings, now)
        if open_findings is not None
        else None,
        due=due,
        overdue=overdue,
        due_shown=(overdue + [d for d in due or [] if not d.overdue])[: dashboard.DUE_SHOWN],
        adherence=adhered,
        adherence_chart=grid_chart(
            dashboard.adherence_rows(adhered),
            [dashboard.day_label(d) for d in adhered.days],
            title=f"Control adherence, the last {len(adhered.days)} days (UTC)",
            chart_id="adherence",
        )
        if adhered is not None
        else "",
    )


# -- approvals --------------------------------------------------------------------------------


def _inbox(
    caller: Caller,
    *,
    state: RequestState | None = None,
    done: str | None = None,
    error: str | None = None,
    focus: str | None = None,
    status: int = 200,
) -> Response:
    now = _now()
    with caller.acting() as app:
        found = requests.list_requests(app, caller.principal, state=state)
    pending = [r for r in found if r.state(now) is RequestState.PENDING]
    others = [r for r in found if r.state(now) is not RequestState.PENDING]
    return render(
        "approvals.html.j2",
        caller=caller,
        status=status,
        title="Approvals",
        active="/approvals",
        pending=pending,
        others=others[:OTHERS_SHOWN],
        others_total=len(others),
        state=state.value if state else "",
        states=[s.value for s in RequestState],
        may_judge=caller.principal.holds(Permission.REQUEST_APPROVE),
        params_text=lambda r: json.dumps(dict(r.params), indent=1, sort_keys=True),
        done=done,
        error=error,
        focus=focus,
    )


@router.get("/approvals")
def approvals_page(
    caller: RequestReader,
    state: RequestState | None = None,
    done: Annotated[str | None, Query(pattern="^(approved|vetoed)$")] = None,
) -> Response:
    """The inbox: pending requests first (who asked, what, why, until when), then the rest."""
    return _inbox(caller, state=state, done=done)


def _judge(caller: Caller, request_id: str, form: dict[str, str], *, veto: bool) -> Response:
    """Step up with the form's code when one is given, then approve or veto through
    ``services.requests`` as the API does. A wrong code (a failed login: counted towards the
    lockout) or a stale MFA check without a code answers the inbox again with the reason
    (403); the services' own refusals are the error page."""
    code = field(form, "code", limit=64)
    text = field(form, "reason" if veto else "note", limit=500)
    principal = caller.principal
    with caller.acting() as app:
        try:
            if code:
                principal = identity.step_up(app, principal, code, client=caller.client)
            require_fresh_mfa(principal)
        except (AuthenticationFailed, StepUpRequired) as refused:
            why = (
                "The TOTP code was not accepted: enter the code your authenticator shows now."
                if isinstance(refused, AuthenticationFailed)
                else "Enter the code your authenticator shows now: your last check is older "
                "than five minutes."
            )
            return _inbox(caller, error=why, focus=request_id, status=403)
        if veto:
            requests.veto(app, principal, request_id, reason=text)
        else:
            requests.approve(app, principal, request_id, note=text)
    verb = "vetoed" if veto else "approved"
    return RedirectResponse(f"/approvals?done={verb}#request-{request_id}", status_code=303)


@router.post("/approvals/{request_id}/approve")
def approve(caller: Approver, request_id: str, form: Form) -> Response:
    """Approve a request (with a TOTP code unless the session's MFA check is fresh)."""
    return _judge(caller, request_id, form, veto=False)


@router.post("/approvals/{request_id}/veto")
def veto(caller: Approver, request_id: str, form: Form) -> Response:
    """Veto a request (a reason; a TOTP code unless the session's MFA check is fresh)."""
    return _judge(caller, request_id, form, veto=True)


# -- lists ------------------------------------------------------------------------------------


@router.get("/sources")
def sources_page(caller: Annotated[Caller, Depends(allow(Permission.SOURCE_READ))]) -> Response:
    """The sources and the datasets the catalog knows of each."""
    with caller.acting() as app:
        found = inventory.list_sources(app)
        datasets = inventory.list_datasets(app)
    by_source: dict[str, list[Dataset]] = {}
    for d in datasets:
        by_source.setdefault(d.source, []).append(d)
    return render(
        "sources.html.j2",
        caller=caller,
        title="Sources",
        active="/sources",
        sources=found,
        datasets=by_source,
        may_back_up=caller.principal.holds(Permission.BACKUP_RUN),
    )


@router.post("/sources/{name}/backups")
def run_backup(
    caller: Annotated[Caller, Depends(allow(Permission.BACKUP_RUN))], name: str, form: Form
) -> Response:
    """Back a source up now from the sources page (its default vault and retention): the
    service the API's ``POST /api/v1/backups`` calls; answers when the backup is recorded,
    with its page. A source that cannot be reached is the error page (503)."""
    del form  # only its anti-CSRF token, checked before this runs
    with caller.acting() as app:
        made = backups.run_backup(app, name)
    return RedirectResponse(f"/backups/{quote(made.id, safe='')}?done=run", status_code=303)


@router.get("/backups")
def backups_page(
    caller: BackupReader,
    source: Text = None,
    status: BackupStatus | None = None,
    days: Annotated[int | None, Query(ge=1, le=3660)] = None,
) -> Response:
    """Backups, newest first, filtered by source, status and age."""
    with caller.acting() as app:
        found = backups.list_backups(app, source or None)
    since = _now() - timedelta(days=days) if days else None
    shown = [
        b
        for b in found
        if (status is None or b.status is status) and (since is None or b.started_at >= since)
    ]
    return render(
        "backups.html.j2",
        caller=caller,
        title="Backups",
        active="/backups",
        backups=shown[:LIST_LIMIT],
        total=len(shown),
        limit=LIST_LIMIT,
        source=source or "",
        current_status=status.value if status else "",
        days=days or "",
        statuses=[s.value for s in BackupStatus],
    )


@router.get("/backups/{backup_id}")
def backup_page(
    caller: BackupReader,
    backup_id: str,
    done: Annotated[str | None, Query(pattern="^(hold|run)$")] = None,
) -> Response:
    """One backup: datasets, artifacts, holds, its signed attestation, its checks, and the
    inclusion proof of its completion event (with ``ledger.read``)."""
    with caller.acting() as app:
        found = backups.get_backup(app, backup_id)
        checks = verify.list_verifications(app, backup_id)
        drills = drill.list_drills(app, backup_id)
        proof = None
        if caller.principal.holds(Permission.LEDGER_READ):
            completed = [
                e
                for e in ledger.show_events(app, action="backup.completed")
                if e.event is not None and e.event.subject == f"backup:{backup_id}"
            ]
            if completed:
                proof = ledger.inclusion_proof(app, completed[-1].seq).to_json()
    envelope = json.dumps(json.loads(found.envelope), indent=2) if found.envelope else None
    return render(
        "backup.html.j2",
        caller=caller,
        title=f"Backup {found.id}",
        active="/backups",
        backup=found,
        verifications=checks,
        drills=drills,
        envelope=envelope,
        proof=proof,
        may_hold=caller.principal.holds(Permission.HOLD_ADD),
        done=done,
    )


@router.post("/backups/{backup_id}/holds")
def add_hold(
    caller: Annotated[Caller, Depends(allow(Permission.HOLD_ADD))],
    backup_id: str,
    form: Form,
) -> Response:
    """Place a legal hold from the backup's page (case and reason): the service the API's
    ``POST /api/v1/backups/{backup_id}/holds`` calls; back to the page."""
    case = field(form, "case", limit=128)
    reason = field(form, "reason", limit=2000)
    with caller.acting() as app:
        backups.add_hold(app, backup_id, case_id=case, reason=reason)
    return RedirectResponse(
        f"/backups/{quote(backup_id, safe='')}?done=hold#holds", status_code=303
    )


@router.get("/verifications")
def verifications_page(
    caller: BackupReader,
    backup: Text = None,
    result: Annotated[str | None, Query(pattern="^(pass|fail)?$")] = None,
) -> Response:
    """Verifications, newest first, of one backup or all, by result."""
    with caller.acting() as app:
        found = verify.list_verifications(app, backup or None)
    shown = [v for v in found if not result or v.ok == (result == "pass")]
    return render(
        "verifications.html.j2",
        caller=caller,
        title="Verifications",
        active="/verifications",
        verifications=shown[:LIST_LIMIT],
        total=len(shown),
        limit=LIST_LIMIT,
        backup=backup or "",
        result=result or "",
    )


@router.get("/drills")
def drills_page(
    caller: BackupReader,
    backup: Text = None,
    result: Annotated[str | None, Query(pattern="^(pass|fail)?$")] = None,
) -> Response:
    """Restore drills, newest first, with their restore times against their RTOs."""
    with caller.acting() as app:
        found = drill.list_drills(app, backup or None)
    shown = [d for d in found if not result or d.ok == (result == "pass")]
    bars = dashboard.restore_bars(shown)
    return render(
        "drills.html.j2",
        caller=caller,
        title="Restore drills",
        active="/drills",
        drills=shown[:LIST_LIMIT],
        total=len(shown),
        limit=LIST_LIMIT,
        chart=limit_chart(
            bars, title="Restore time against the RTO", chart_id="drills", width=CHART_WIDTH
        ),
        backup=backup or "",
        result=result or "",
    )


UNRESOLVED: Final = "unresolved"  # open or acknowledged: what the dashboard counts


@router.get("/findings")
def findings_page(
    caller: PolicyReader,
    status: Annotated[
        str | None, Query(pattern="^(open|acknowledged|resolved|unresolved)?$")
    ] = None,
    severity: Text = None,
    owner: Text = None,
) -> Response:
    """Findings by due date, filtered by status (``unresolved``: open or acknowledged),
    severity and owner."""
    wanted = (
        sorted(dashboard.OPEN)
        if status == UNRESOLVED
        else [FindingStatus(status)]
        if status
        else None
    )
    with caller.acting() as app:
        found = findings.list_findings(app, status=wanted)
    shown = sorted(
        (
            f
            for f in found
            if (not severity or f.severity.value == severity) and (not owner or f.owner == owner)
        ),
        key=lambda f: f.due_at,
    )
    return render(
        "findings.html.j2",
        caller=caller,
        title="Findings",
        active="/findings",
        findings=shown[:LIST_LIMIT],
        total=len(shown),
        limit=LIST_LIMIT,
        current_status=status or "",
        severity=severity or "",
        owner=owner or "",
        statuses=[UNRESOLVED, *(s.value for s in FindingStatus)],
    )


@router.get("/checks/{run_id}")
def check_page(
    caller: PolicyReader,
    run_id: Annotated[str, Path(max_length=64)],
    control: Text = None,
    state: Annotated[str | None, Query(pattern="^[a-z-]{0,20}$")] = None,
) -> Response:
    """One policy check: when, by whom, under which policy version, its ledger event and
    whether the event vouches for the stored results; the results (of one control, in one
    state), worst first."""
    with caller.acting() as app:
        found = adherence.check_results(app, run_id)
    results = [
        r
        for r in found.run.results
        if (not control or r.get("control") == control) and (not state or r.get("status") == state)
    ]
    order = {s: i for i, s in enumerate(adherence.ORDER)}
    results.sort(key=lambda r: (order.get(str(r.get("status")), 99), str(r.get("subject"))))
    return render(
        "check.html.j2",
        caller=caller,
        title=f"Policy check {found.run.id}",
        active="/",
        check=found,
        results=results[:LIST_LIMIT],
        total=len(results),
        limit=LIST_LIMIT,
        control=control or "",
        state=state or "",
        states=list(adherence.ORDER),
        controls=sorted({str(r.get("control")) for r in found.run.results}),
    )


@router.get("/exceptions")
def exceptions_page(caller: PolicyReader) -> Response:
    """Policy exceptions: who asked, who approved, until when."""
    with caller.acting() as app:
        found = findings.list_exceptions(app)
    return render(
        "exceptions.html.j2",
        caller=caller,
        title="Exceptions",
        active="/exceptions",
        exceptions=found,
    )


@router.get("/ledger")
def ledger_page(
    caller: Annotated[Caller, Depends(allow(Permission.LEDGER_READ))],
    action: Annotated[str | None, Query(max_length=100)] = None,
    since: Annotated[str | None, Query(max_length=40)] = None,
) -> Response:
    """Ledger events in sequence order, by action and time (the first ``LIST_LIMIT``)."""
    with caller.acting() as app:
        shown = ledger.show_events(
            app, action=action or None, since=since or None, limit=LIST_LIMIT + 1
        )
    return render(
        "ledger.html.j2",
        caller=caller,
        title="Ledger",
        active="/ledger",
        events=shown[:LIST_LIMIT],
        more=len(shown) > LIST_LIMIT,
        limit=LIST_LIMIT,
        action=action or "",
        since=since or "",
    )


# the audit pages and the calendar's month view: routers of their own, served with these
router.include_router(audit_pages.router)
router.include_router(calendar_page.router)
