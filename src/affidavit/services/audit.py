"""Audit engagements and evidence requests: ``affidavit audit open|list|show|close`` and
``affidavit audit request ...`` (docs/audit.md).

An administrator (``audit.manage``) opens an engagement for one account holding the
``auditor`` role: a window of time (``--from``/``--to``), a framework and an expiry. The
engagement is its ledger events (``audit.opened``, ``audit.closed``), folded by
:func:`affidavit.models.audit.fold`; there is no table.

**Scope.** What a principal may see of engagements is derived from the principal
(:func:`scope_of`): whoever runs the audit programme (``audit.manage``) or answers it
(``audit.respond``) sees every engagement; anyone else who may read engagements
(``audit.read``: an auditor) sees only the engagements whose auditor account it is, while
they are open and unexpired. An engagement outside the scope is answered exactly as one that
does not exist (:class:`NotFound`), and so is a record, event or proof outside the
engagement's window: an auditor learns nothing of what lies outside. Access ends by itself
at the expiry, with nothing recorded.

**Evidence requests.** The engagement's auditor raises them (an identity check in the
service, not a permission: the ``auditor`` role changes nothing else), the people who hold
``audit.respond`` answer them, and the auditor accepts, returns or closes them; messages
from either side form a thread. Every step is a ledger event; a step the state machine does
not allow is refused (:class:`AlreadyExists`: 409, exit 2) and records nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, Final

from affidavit.catalog.store import UnitOfWork
from affidavit.crypto import tokens
from affidavit.errors import AccessDenied, AlreadyExists, InputError, NotFound
from affidavit.models.audit import (
    AUDIT_ACTIONS,
    CLOSED,
    ENGAGEMENT_PREFIX,
    MAX_ENGAGEMENT_DAYS,
    MAX_ITEM,
    MAX_ITEMS,
    MAX_TEXT,
    MAX_TITLE,
    OPENED,
    REQUEST_ACCEPTED,
    REQUEST_ANSWERED,
    REQUEST_CLOSED,
    REQUEST_MESSAGE,
    REQUEST_OPENED,
    REQUEST_PREFIX,
    REQUEST_RETURNED,
    TRANSITIONS,
    Artifact,
    ArtifactKind,
    Engagement,
    EvidenceRequest,
    Folded,
    RequestState,
    Step,
    fold,
    one_line,
)
from affidavit.models.identity import Principal, account_name
from affidavit.models.ledger import Event, rfc3339_utc
from affidavit.models.period import Period, parse_moment
from affidavit.models.permissions import Permission, Role
from affidavit.policy.controls import check_framework
from affidavit.services.context import App
from affidavit.services.policy_vouch import parse_entry, read_events
from affidavit.services.principals import authorize, is_service, vouched_roles

_ENGAGEMENT_HINT: Final = "`affidavit audit list` shows the engagements you may see"
_REQUEST_HINT: Final = "`affidavit audit request list` shows the requests you may see"


def _now(now: datetime | None) -> datetime:
    return now if now is not None else datetime.now(UTC)


def read_audit(uow: UnitOfWork) -> Folded:
    """Every engagement and evidence request, as the ledger's events tell them (one query
    per action)."""
    return fold(e for action in AUDIT_ACTIONS for e in read_events(uow.ledger, action))


# -- scope -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Scope:
    """What one principal may see of engagements at one moment: every engagement
    (``unrestricted``), or those listed (its own, open and unexpired)."""

    unrestricted: bool
    engagements: tuple[Engagement, ...]
    now: datetime

    def allows(self, engagement: Engagement) -> bool:
        """Whether the principal may see ``engagement``."""
        return self.unrestricted or any(e.id == engagement.id for e in self.engagements)


def scope_of(folded: Folded, principal: Principal, now: datetime) -> Scope:
    """The scope of ``principal`` (see the module docstring); :class:`AccessDenied` without
    ``audit.read``."""
    authorize(principal, Permission.AUDIT_READ)
    if principal.holds(Permission.AUDIT_MANAGE) or principal.holds(Permission.AUDIT_RESPOND):
        return Scope(True, tuple(folded.engagements.values()), now)
    mine = tuple(
        e
        for e in folded.engagements.values()
        if principal.account_id is not None
        and e.auditor_id == principal.account_id
        and e.active(now)
    )
    return Scope(False, mine, now)


def _no_engagement(engagement_id: str) -> NotFound:
    return NotFound(f"no audit engagement {engagement_id[:40]!r}", hint=_ENGAGEMENT_HINT)


def _no_request(request_id: str) -> NotFound:
    return NotFound(f"no evidence request {request_id[:40]!r}", hint=_REQUEST_HINT)


def _visible(folded: Folded, scope: Scope, engagement_id: str) -> Engagement:
    found = folded.engagements.get(engagement_id)
    if found is None or not scope.allows(found):
        raise _no_engagement(engagement_id)
    return found


# -- engagements -------------------------------------------------------------------------------


def _resolve_auditor(uow: UnitOfWork, who: str) -> tuple[str, str]:
    """The (name, id) of the account ``who`` names (its name, or its e-mail address), which
    must be an enabled person holding the ``auditor`` role as the ledger vouches for it."""
    text = who.strip()
    if "@" in text and not any(a.name == text.lower() for a in uow.identities.accounts()):
        matches = [
            a
            for a in uow.identities.accounts()
            if a.email is not None and a.email.strip().lower() == text.lower()
        ]
        if len(matches) > 1:
            raise InputError(
                f"{len(matches)} accounts have the e-mail address {text!r}",
                hint="name the auditor's account instead",
            )
        account = matches[0] if matches else None
    else:
        account = uow.identities.find_account(account_name(text))
    if account is None:
        raise NotFound(
            f"no account {text[:80]!r} (by name or e-mail address)",
            hint="create the auditor's account first: `affidavit user add NAME --email ...`",
        )
    if account.disabled:
        raise InputError(f"the account {account.name!r} is disabled")
    if is_service(uow, account):
        raise InputError(
            f"{account.name!r} is a service account: an engagement is for a person",
            hint="name the auditor's personal account",
        )
    if Role.AUDITOR not in vouched_roles(uow, account):
        raise InputError(
            f"{account.name!r} does not hold the auditor role",
            hint=f"grant it first: `affidavit role grant {account.name} auditor`",
        )
    return account.name, account.id


def open_engagement(
    app: App,
    principal: Principal,
    *,
    start: str,
    end: str,
    framework: str,
    auditor: str,
    expires: str,
    reason: str = "",
    now: datetime | None = None,
) -> Engagement:
    """Open an engagement (``audit.manage``): the window ``[start, end]`` (dates or RFC 3339;
    a bare ``end`` date includes that day), the framework, the auditor (account name or
    e-mail address) and the expiry (a bare date: the end of that day, UTC). Recorded
    ``audit.opened`` (the auditor's account id and name, never the e-mail address)."""
    authorize(principal, Permission.AUDIT_MANAGE)
    at = _now(now)
    window = Period.parse(start, end)
    check_framework(framework)
    until = parse_moment(expires, flag="--expires", end_of_day=True)
    if until <= at:
        raise InputError(
            f"--expires {expires!r} has passed", hint="an engagement must expire in the future"
        )
    if until > at + timedelta(days=MAX_ENGAGEMENT_DAYS):
        raise InputError(
            f"an engagement expires within {MAX_ENGAGEMENT_DAYS} days",
            hint="open a new engagement for a later audit",
        )
    why = one_line(reason, what="reason", limit=MAX_TEXT, required=False)
    engagement_id = f"ae-{tokens.new_id()}"
    with app.change() as change:
        change.actor = principal.name
        name, account_id = _resolve_auditor(change.uow, auditor)
        if account_id == principal.account_id:
            raise AccessDenied(
                "nobody opens an engagement for themselves", hint="name the external auditor"
            )
        change.record(
            OPENED,
            f"{ENGAGEMENT_PREFIX}{engagement_id}",
            {
                "framework": framework,
                "window": {"from": window.start.isoformat(), "to": window.end.isoformat()},
                "expires_at": until.isoformat(),
                "auditor": name,
                "auditor_id": account_id,
                "reason": why,
                "by_id": principal.account_id,
                "at": at.isoformat(),
            },
        )
        return read_audit(change.uow).engagements[engagement_id]


def close_engagement(
    app: App,
    principal: Principal,
    engagement_id: str,
    *,
    reason: str = "",
    now: datetime | None = None,
) -> Engagement:
    """Close an engagement before its expiry (``audit.manage``): its auditor's access ends
    now. Recorded ``audit.closed``; a second close is refused (409)."""
    authorize(principal, Permission.AUDIT_MANAGE)
    at = _now(now)
    why = one_line(reason, what="reason", limit=MAX_TEXT, required=False)
    with app.change() as change:
        change.actor = principal.name
        folded = read_audit(change.uow)
        found = folded.engagements.get(engagement_id)
        if found is None:
            raise _no_engagement(engagement_id)
        if found.closed_at is not None:
            raise AlreadyExists(
                f"audit engagement {engagement_id} was closed at "
                f"{found.closed_at:%Y-%m-%d %H:%M} UTC by {found.closed_by}",
                hint="nothing to close",
            )
        change.record(
            CLOSED,
            f"{ENGAGEMENT_PREFIX}{engagement_id}",
            {"reason": why, "by_id": principal.account_id, "at": at.isoformat()},
        )
        return read_audit(change.uow).engagements[engagement_id]


def list_engagements(
    app: App, principal: Principal, *, now: datetime | None = None
) -> list[Engagement]:
    """The engagements the principal may see, newest first (``audit.read``, scoped)."""
    at = _now(now)
    with app.read() as uow:
        folded = read_audit(uow)
    scope = scope_of(folded, principal, at)
    return sorted(
        (e for e in folded.engagements.values() if scope.allows(e)),
        key=lambda e: e.seq,
        reverse=True,
    )


def get_engagement(
    app: App, principal: Principal, engagement_id: str, *, now: datetime | None = None
) -> Engagement:
    """One engagement (``audit.read``, scoped: an auditor's own, open and unexpired)."""
    at = _now(now)
    with app.read() as uow:
        folded = read_audit(uow)
    found = _visible(folded, scope_of(folded, principal, at), engagement_id)
    local_read(app, principal, f"engagement:{found.id}", "cli audit show")
    return found


def local_read(app: App, principal: Principal, subject: str, route: str) -> None:
    """Log a read of ``subject`` in the access log when it is made on the host (``--as``):
    through the server, the request itself is the access-log entry."""
    if app.principal is None and principal.authenticated:
        from affidavit.services.access_log import record_read

        record_read(app, principal, subject, route)


@dataclass(frozen=True, slots=True)
class EngagementView:
    """An engagement as its viewer may see it, with the read transaction's folded audit."""

    engagement: Engagement
    folded: Folded
    now: datetime


def _view(
    app: App, principal: Principal, engagement_id: str, now: datetime | None
) -> EngagementView:
    at = _now(now)
    with app.read() as uow:
        folded = read_audit(uow)
    return EngagementView(_visible(folded, scope_of(folded, principal, at), engagement_id),
                          folded, at)  # fmt: skip


def engagement_controls(
    app: App, principal: Principal, engagement_id: str, *, now: datetime | None = None
) -> dict[str, Any]:
    """The framework's controls and every policy check's results in the engagement's window
    (``audit.read``, scoped)."""
    from affidavit.services.policy import list_controls  # the policy service is heavy

    view = _view(app, principal, engagement_id, now)
    engagement = view.engagement
    controls = list_controls(engagement.framework)
    wanted = {c.id for c in controls}
    with app.read() as uow:
        runs = uow.governance.check_runs(since=engagement.window.start,
                                         until=engagement.window.end)  # fmt: skip
    return {
        "engagement": engagement.id,
        "framework": engagement.framework,
        "window": engagement.to_json(view.now)["window"],
        "controls": [c.to_json() for c in controls],
        "check_runs": [
            {
                "id": run.id,
                "at": run.at.isoformat(),
                "actor": run.actor,
                "policy_version": run.policy_version,
                "ok": run.ok,
                "seq": run.seq,
                "results": [r for r in run.results if r.get("control") in wanted],
            }
            for run in runs
        ],
    }


def engagement_records(
    app: App, principal: Principal, engagement_id: str, kind: str, *, now: datetime | None = None
) -> dict[str, Any]:
    """The verification (``kind`` ``verifications``) or drill (``drills``) records that
    finished in the engagement's window (``audit.read``, scoped)."""
    from affidavit.services.views import drill_json, verification_json

    view = _view(app, principal, engagement_id, now)
    window = view.engagement.window
    with app.read() as uow:
        if kind == "verifications":
            records = [verification_json(v) for v in uow.checks.verifications()
                       if v.finished_at in window]  # fmt: skip
        elif kind == "drills":
            records = [drill_json(d) for d in uow.checks.drills() if d.finished_at in window]
        else:
            raise InputError(f"no records of kind {kind!r}", hint="verifications or drills")
    return {"engagement": view.engagement.id, kind: records}


def engagement_attestations(
    app: App, principal: Principal, engagement_id: str, *, now: datetime | None = None
) -> dict[str, Any]:
    """The attestations signed in the engagement's window: each ``attestation.created``
    event's seq (its inclusion proof: :func:`engagement_proof`), time, predicate type,
    subjects and digests (``audit.read``, scoped)."""
    view = _view(app, principal, engagement_id, now)
    with app.read() as uow:
        events = read_events(uow.ledger, "attestation.created")
    found = []
    for event in events:
        try:
            at = datetime.fromisoformat(event.time.replace("Z", "+00:00"))
        except ValueError:
            continue
        if view.engagement.covers(at):
            found.append({"seq": event.seq, "time": at.isoformat(), "subject": event.subject,
                          "actor": event.actor, **dict(event.details)})  # fmt: skip
    return {"engagement": view.engagement.id, "attestations": found}


def _event_in_window(uow: UnitOfWork, engagement: Engagement, seq: int) -> Event | None:
    rows = list(uow.ledger.entries(seq, seq + 1)) if seq >= 0 else []
    if not rows:
        return None
    event = parse_entry(rows[0].entry)
    if event is None:
        return None
    try:
        at = datetime.fromisoformat(event.time.replace("Z", "+00:00"))
    except ValueError:
        return None
    return event if engagement.covers(at) else None


def engagement_proof(
    app: App,
    principal: Principal,
    engagement_id: str,
    seq: int,
    *,
    now: datetime | None = None,
) -> dict[str, Any]:
    """The inclusion proof of ledger event ``seq`` in the newest signed checkpoint, for an
    event recorded in the engagement's window only (``audit.read``, scoped); any other seq is
    answered as one that does not exist."""
    from affidavit.services.ledger import inclusion_proof

    view = _view(app, principal, engagement_id, now)
    with app.read() as uow:
        event = _event_in_window(uow, view.engagement, seq)
    if event is None:
        raise NotFound(
            f"no ledger event {seq} in the window of engagement {engagement_id}",
            hint="ask for an event recorded in the engagement's window",
        )
    return {"engagement": engagement_id, **inclusion_proof(app, seq).to_json()}


def engagement_checkpoints(
    app: App, principal: Principal, engagement_id: str, *, now: datetime | None = None
) -> dict[str, Any]:
    """The ledger's newest signed checkpoint (which the proofs lead to) and the signed
    checkpoint of the ledger as it stood at the end of the window (``audit.read``, scoped)."""
    from affidavit.services.ledger import current_checkpoint

    view = _view(app, principal, engagement_id, now)
    end = view.engagement.window.end
    note = current_checkpoint(app)
    at_end: dict[str, Any] | None = None
    with app.read() as uow:
        last = None
        for stored in uow.ledger.find(since=rfc3339_utc(view.engagement.window.start)):
            event = parse_entry(stored.entry)
            if event is None:
                continue
            if datetime.fromisoformat(event.time.replace("Z", "+00:00")) >= end:
                break
            last = event.seq
        if last is not None:
            sizes = sorted(size for size, _ in uow.ledger.checkpoints() if size > last)
            if sizes:
                size = sizes[0]
                at_end = {"size": size, "checkpoint": uow.ledger.checkpoint_of_size(size)}
    return {"engagement": engagement_id, "current": note, "window_end": at_end}


def engagement_package(
    app: App, principal: Principal, engagement_id: str, *, now: datetime | None = None
) -> tuple[str, Path, str]:
    """Build the signed evidence package of the engagement's window and framework, on
    demand, with the evidence service (``audit.read``, scoped): its id, file and SHA-256.
    The build is recorded ``evidence.built`` under the caller's name."""
    from affidavit.services.evidence import build_evidence_package

    view = _view(app, principal, engagement_id, now)
    package_id, built = build_evidence_package(
        app, period=view.engagement.window, framework=view.engagement.framework
    )
    return package_id, built.path, built.sha256


# -- evidence requests -------------------------------------------------------------------------


def _check_due(due: date | str) -> date:
    if isinstance(due, date):
        return due
    try:
        return date.fromisoformat(due.strip())
    except ValueError:
        raise InputError(f"--due {due[:40]!r} is not a date", hint="use YYYY-MM-DD") from None


def _items(items: Iterable[str]) -> tuple[str, ...]:
    found = tuple(one_line(i, what="item", limit=MAX_ITEM) for i in items if i.strip())
    if len(found) > MAX_ITEMS:
        raise InputError(f"an evidence request lists at most {MAX_ITEMS} items")
    return found


def _auditor_of(engagement: Engagement, principal: Principal, verb: str) -> None:
    if principal.account_id is None or principal.account_id != engagement.auditor_id:
        raise AccessDenied(
            f"only the auditor of engagement {engagement.id} may {verb}",
            hint=f"{engagement.auditor} does it",
        )
    if Role.AUDITOR not in principal.roles:
        raise AccessDenied(
            f"{principal.name!r} no longer holds the auditor role", hint="ask an administrator"
        )


def _require_authenticated(principal: Principal) -> None:
    if not principal.authenticated:
        raise AccessDenied(
            "evidence requests need an authenticated identity; the local OS user is not one",
            hint="act as an account: --as NAME, or through the server",
        )


def open_request(
    app: App,
    principal: Principal,
    engagement_id: str,
    *,
    title: str,
    detail: str = "",
    due: date | str,
    items: Iterable[str] = (),
    now: datetime | None = None,
) -> EvidenceRequest:
    """Raise an evidence request (the engagement's auditor, while it is open): title,
    detail, due date and the items wanted. Recorded ``audit.request_opened``."""
    _require_authenticated(principal)
    at = _now(now)
    heading = one_line(title, what="title", limit=MAX_TITLE)
    text = one_line(detail, what="detail", limit=MAX_TEXT, required=False)
    when = _check_due(due)
    wanted = _items(items)
    if when < at.date():
        raise InputError(f"--due {when.isoformat()} has passed", hint="give a date from today on")
    request_id = f"pbc-{tokens.new_id()}"
    with app.change() as change:
        change.actor = principal.name
        folded = read_audit(change.uow)
        engagement = folded.engagements.get(engagement_id)
        if engagement is None or not (
            engagement.active(at)
            and (engagement.auditor_id == principal.account_id or _sees_all(principal))
        ):
            raise _no_engagement(engagement_id)
        _auditor_of(engagement, principal, "raise evidence requests")
        change.record(
            REQUEST_OPENED,
            f"{REQUEST_PREFIX}{request_id}",
            {
                "engagement": engagement.id,
                "title": heading,
                "detail": text,
                "due": when.isoformat(),
                "items": list(wanted),
                "by_id": principal.account_id,
                "at": at.isoformat(),
            },
        )
        return read_audit(change.uow).requests[request_id]


def _sees_all(principal: Principal) -> bool:
    return principal.holds(Permission.AUDIT_MANAGE) or principal.holds(Permission.AUDIT_RESPOND)


def list_requests(
    app: App,
    principal: Principal,
    *,
    engagement: str | None = None,
    state: RequestState | None = None,
    now: datetime | None = None,
) -> list[EvidenceRequest]:
    """The evidence requests the principal may see (``audit.read``; an auditor: those of its
    open engagements), by due date."""
    at = _now(now)
    with app.read() as uow:
        folded = read_audit(uow)
    scope = scope_of(folded, principal, at)
    if engagement is not None:
        _visible(folded, scope, engagement)
    found = [
        r
        for r in folded.requests.values()
        if scope.allows(folded.engagements[r.engagement])
        and (engagement is None or r.engagement == engagement)
        and (state is None or r.state is state)
    ]
    return sorted(found, key=lambda r: (r.due, r.seq))


def _visible_request(
    folded: Folded, principal: Principal, request_id: str, at: datetime
) -> tuple[EvidenceRequest, Engagement]:
    scope = scope_of(folded, principal, at)
    request = folded.requests.get(request_id)
    if request is None or not scope.allows(folded.engagements[request.engagement]):
        raise _no_request(request_id)
    return request, folded.engagements[request.engagement]


def get_request(
    app: App, principal: Principal, request_id: str, *, now: datetime | None = None
) -> EvidenceRequest:
    """One evidence request with its thread (``audit.read``, scoped)."""
    at = _now(now)
    with app.read() as uow:
        folded = read_audit(uow)
    found = _visible_request(folded, principal, request_id, at)[0]
    local_read(app, principal, f"audit-request:{found.id}", "cli audit request show")
    return found


def _check_step(request: EvidenceRequest, engagement: Engagement, step: Step, at: datetime) -> None:
    if not engagement.active(at):
        raise AlreadyExists(
            f"engagement {engagement.id} is {engagement.state(at).value}: its requests take no "
            "more steps",
            hint="an administrator opens a new engagement",
        )
    allowed, _ = TRANSITIONS[step]
    if request.state not in allowed:
        raise AlreadyExists(
            f"evidence request {request.id} is {request.state.value}: it cannot be "
            f"{_PAST[step]} now",
            hint="allowed from " + ", ".join(sorted(s.value for s in allowed)),
        )


_PAST: Final[Mapping[Step, str]] = {
    Step.ANSWER: "answered",
    Step.SUBMIT: "submitted",
    Step.ACCEPT: "accepted",
    Step.RETURN: "returned",
    Step.CLOSE: "closed",
}
_ACTIONS: Final[Mapping[Step, str]] = {
    Step.ANSWER: REQUEST_ANSWERED,
    Step.SUBMIT: REQUEST_ANSWERED,
    Step.ACCEPT: REQUEST_ACCEPTED,
    Step.RETURN: REQUEST_RETURNED,
    Step.CLOSE: REQUEST_CLOSED,
}


def check_artifact(uow: UnitOfWork, kind: ArtifactKind, ref: str, app: App) -> Artifact:
    """An artifact affidavit holds, checked to exist: an attestation (the seq of its
    ``attestation.created`` event), a verification or drill record, an evidence package
    built through the server. :class:`NotFound` otherwise."""
    text = ref.strip()[:200]
    if kind is ArtifactKind.ATTESTATION:
        found = text.isdigit() and any(
            e.seq == int(text) for e in read_events(uow.ledger, "attestation.created")
        )
    elif kind is ArtifactKind.VERIFICATION:
        found = any(v.id == text for v in uow.checks.verifications())
    elif kind is ArtifactKind.DRILL:
        found = any(d.id == text for d in uow.checks.drills())
    elif kind is ArtifactKind.EVIDENCE_PACKAGE:
        from affidavit.services.evidence import evidence_package

        try:
            evidence_package(app, text)
            found = True
        except NotFound:
            found = False
    else:
        raise InputError("files are uploaded with --file", hint="--file PATH")
    if not found:
        raise NotFound(
            f"no {kind.value} {text!r} to hand over",
            hint="attestations by ledger seq; verification and drill records and evidence "
            "packages by id",
        )
    return Artifact(kind=kind, ref=text)


def answer(
    app: App,
    principal: Principal,
    request_id: str,
    *,
    artifacts: Iterable[tuple[str, str]] = (),
    uploads: Iterable[Artifact] = (),
    text: str = "",
    submit: bool = True,
    now: datetime | None = None,
) -> EvidenceRequest:
    """Answer a request (``audit.respond``) with artifacts affidavit holds (``(kind, ref)``)
    and uploaded files (stored already by :mod:`affidavit.services.audit_files`): submitted
    for review, or with ``submit=False`` marked in progress. Recorded
    ``audit.request_answered``."""
    authorize(principal, Permission.AUDIT_RESPOND)
    at = _now(now)
    note = one_line(text, what="note", limit=MAX_TEXT, required=False)
    step = Step.SUBMIT if submit else Step.ANSWER
    files = list(uploads)
    with app.change() as change:
        change.actor = principal.name
        folded = read_audit(change.uow)
        request, engagement = _visible_request(folded, principal, request_id, at)
        if principal.account_id == engagement.auditor_id:
            raise AccessDenied("the auditor does not answer its own request")
        _check_step(request, engagement, step, at)
        handed: list[Artifact] = []
        for kind, ref in artifacts:
            try:
                which = ArtifactKind(kind)
            except ValueError:
                raise InputError(
                    f"{kind[:40]!r} is not an artifact kind",
                    hint="attestation, verification, drill or evidence-package",
                ) from None
            handed.append(check_artifact(change.uow, which, ref, app))
        handed += files
        if step is Step.SUBMIT and not handed and not note:
            raise InputError(
                "a submission hands over something",
                hint="give artifacts (--attestation, --verification, --drill, --package, "
                "--file) or a note",
            )
        _record(change, request, step, principal=principal, at=at, text=note, artifacts=handed)
        return read_audit(change.uow).requests[request.id]


def _record(
    change: Any,
    request: EvidenceRequest,
    step: Step,
    *,
    principal: Principal,
    at: datetime,
    text: str,
    artifacts: list[Artifact] | None = None,
) -> None:
    details: dict[str, Any] = {
        "engagement": request.engagement,
        "text": text,
        "by_id": principal.account_id,
        "at": at.isoformat(),
        "from_state": request.state.value,
    }
    if step in (Step.ANSWER, Step.SUBMIT):
        details |= {"submit": step is Step.SUBMIT,
                    "artifacts": [a.to_event() for a in artifacts or []]}  # fmt: skip
    change.record(_ACTIONS[step], f"{REQUEST_PREFIX}{request.id}", details)


def _auditor_step(
    app: App,
    principal: Principal,
    request_id: str,
    step: Step,
    *,
    text: str,
    now: datetime | None,
) -> EvidenceRequest:
    _require_authenticated(principal)
    at = _now(now)
    note = one_line(text, what="reason" if step is Step.RETURN else "note", limit=MAX_TEXT,
                    required=step is Step.RETURN)  # fmt: skip
    with app.change() as change:
        change.actor = principal.name
        folded = read_audit(change.uow)
        request = folded.requests.get(request_id)
        engagement = folded.engagements.get(request.engagement) if request else None
        if (
            request is None
            or engagement is None
            or not (
                (engagement.auditor_id == principal.account_id and engagement.active(at))
                or _sees_all(principal)
            )
        ):
            raise _no_request(request_id)
        _auditor_of(engagement, principal, f"{step.value} evidence requests")
        _check_step(request, engagement, step, at)
        _record(change, request, step, principal=principal, at=at, text=note)
        return read_audit(change.uow).requests[request.id]


def accept(
    app: App, principal: Principal, request_id: str, *, note: str = "", now: datetime | None = None
) -> EvidenceRequest:
    """Accept the submitted answer (the engagement's auditor). ``audit.request_accepted``."""
    return _auditor_step(app, principal, request_id, Step.ACCEPT, text=note, now=now)


def return_request(
    app: App, principal: Principal, request_id: str, *, reason: str, now: datetime | None = None
) -> EvidenceRequest:
    """Return the submitted answer with a reason (the engagement's auditor): the owners
    answer again. ``audit.request_returned``."""
    return _auditor_step(app, principal, request_id, Step.RETURN, text=reason, now=now)


def close_request(
    app: App, principal: Principal, request_id: str, *, note: str = "", now: datetime | None = None
) -> EvidenceRequest:
    """Close an accepted or returned request (the engagement's auditor).
    ``audit.request_closed``."""
    return _auditor_step(app, principal, request_id, Step.CLOSE, text=note, now=now)


def message(
    app: App, principal: Principal, request_id: str, *, text: str, now: datetime | None = None
) -> EvidenceRequest:
    """Add a message to a request's thread: the engagement's auditor, or someone who answers
    requests (``audit.respond``), while the request is not closed and the engagement open.
    ``audit.request_message``."""
    _require_authenticated(principal)
    at = _now(now)
    body = one_line(text, what="message", limit=MAX_TEXT)
    with app.change() as change:
        change.actor = principal.name
        folded = read_audit(change.uow)
        request = folded.requests.get(request_id)
        engagement = folded.engagements.get(request.engagement) if request else None
        auditor = engagement is not None and engagement.auditor_id == principal.account_id
        if (
            request is None
            or engagement is None
            or not ((auditor and engagement.active(at)) or _sees_all(principal))
        ):
            raise _no_request(request_id)
        if auditor:
            _auditor_of(engagement, principal, "write to this thread")
        else:
            authorize(principal, Permission.AUDIT_RESPOND)
        if not engagement.active(at):
            raise AlreadyExists(f"engagement {engagement.id} is {engagement.state(at).value}")
        if request.state is RequestState.CLOSED:
            raise AlreadyExists(f"evidence request {request.id} is closed", hint="nothing to add")
        change.record(
            REQUEST_MESSAGE,
            f"{REQUEST_PREFIX}{request.id}",
            {
                "engagement": request.engagement,
                "text": body,
                "by_id": principal.account_id,
                "at": at.isoformat(),
            },
        )
        return read_audit(change.uow).requests[request.id]
